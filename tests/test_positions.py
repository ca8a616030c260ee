from fractions import Fraction

import pytest
import torch

from mmflow.positions import RotaryEmbedding, apply_rotary, rotary_table, stream_positions
from mmflow.streams import StreamSpec


def test_rotary_is_interleaved_pairs_base_10000():
    rope = RotaryEmbedding(8)
    torch.testing.assert_close(rope.inv_freq, 1 / 10000 ** (torch.arange(0, 8, 2).float() / 8))
    angles = rope(torch.tensor([[3.0]]))  # (1, 1, 8)
    x = torch.randn(1, 2, 1, 8)
    y = apply_rotary(x, rotary_table(angles))
    for j in range(4):
        theta = 3.0 * rope.inv_freq[j]
        a, b = x[..., 2 * j], x[..., 2 * j + 1]
        torch.testing.assert_close(y[..., 2 * j], a * theta.cos() - b * theta.sin())
        torch.testing.assert_close(y[..., 2 * j + 1], b * theta.cos() + a * theta.sin())


def test_rotary_on_first_head_only():
    angles = RotaryEmbedding(8)(torch.arange(5.0)[None])
    x = torch.randn(1, 3, 5, 8)
    y = apply_rotary(x, rotary_table(angles), rope_heads=1)
    assert torch.equal(y[:, 1:], x[:, 1:])
    torch.testing.assert_close(y[:, :1], apply_rotary(x[:, :1], rotary_table(angles)))


def test_rotary_matches_x_transformers_when_installed():
    xt = pytest.importorskip("x_transformers.x_transformers")
    ref = xt.RotaryEmbedding(64)
    freqs, scale = ref.forward_from_seq_len(37)
    x = torch.randn(2, 4, 37, 64)
    ours = apply_rotary(x, rotary_table(RotaryEmbedding(64)(torch.arange(37.0)[None].expand(2, -1))))
    torch.testing.assert_close(ours, xt.apply_rotary_pos_emb(x, freqs, scale))


def _specs(policy):
    return {
        "audio": StreamSpec("audio", Fraction(375, 4), 1, position=policy),
        "motion": StreamSpec("motion", 25, 1, position=policy),
    }


def test_equal_time_gets_equal_phase_scaled_and_seconds():
    for policy in ("scaled", "seconds"):
        specs = _specs(policy)
        lengths = {"audio": torch.tensor([375]), "motion": torch.tensor([100])}  # 4 s each
        pos = stream_positions(specs, lengths, {"audio": 375, "motion": 100})
        rope = RotaryEmbedding(64)
        audio_angles, motion_angles = rope(pos["audio"]), rope(pos["motion"])
        # motion frame 4i starts at 0.16·i s, exactly when audio frame 15i starts
        for i in range(0, 25):
            torch.testing.assert_close(motion_angles[0, 4 * i], audio_angles[0, 15 * i])
        assert torch.equal(pos["audio"][0], torch.arange(375.0))  # the longest stream keeps plain indices


def test_index_policy_does_not_align():
    pos = stream_positions(_specs("index"), {"audio": torch.tensor([375]), "motion": torch.tensor([100])},
                           {"audio": 375, "motion": 100})
    assert pos["motion"][0, 4] == 4 and pos["audio"][0, 15] == 15


def test_scaled_uses_each_samples_own_length():
    specs = _specs("scaled")
    lengths = {"audio": torch.tensor([375, 188]), "motion": torch.tensor([100, 50])}
    pos = stream_positions(specs, lengths, {"audio": 375, "motion": 100})
    assert pos["motion"][1, 10].item() == pytest.approx(10 * 188 / 50)
    assert pos["motion"][0, 10].item() == pytest.approx(10 * 375 / 100)
