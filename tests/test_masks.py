from fractions import Fraction

import pytest
import torch

from mmflow.attention import AttentionBackendError, attend, naive_attention
from mmflow.masks import (
    Blocked,
    Full,
    LocalWindow,
    MaskPolicy,
    SameTime,
    StreamSegment,
    build_attention_mask,
    local_global_policy,
)

AUDIO_RATE, MOTION_RATE = Fraction(375, 4), Fraction(25)


def jamflow_mask(n_audio=30, n_motion=8, window="0.08", **kwargs):
    policy = local_global_policy("audio", "motion", window)
    segments = [StreamSegment("audio", AUDIO_RATE, 0, n_audio), StreamSegment("motion", MOTION_RATE, n_audio, n_motion)]
    return build_attention_mask(policy, segments, **kwargs), n_audio, n_motion


def test_audio_queries_see_all_audio_and_only_their_motion_frame():
    mask, na, nm = jamflow_mask()
    dense = mask.dense()[0, 0]
    assert dense[:na, :na].all()
    audio_to_motion = dense[:na, na:]
    assert (audio_to_motion.sum(1) == 1).all()
    for i in range(na):  # audio frame i starts at i/93.75 s, inside motion frame floor(i·25/93.75)
        assert audio_to_motion[i].nonzero().item() == (i * 4) // 15
    assert audio_to_motion[14].nonzero().item() == 3 and audio_to_motion[15].nonzero().item() == 4  # boundary


def test_motion_queries_see_only_a_local_window_of_both_streams():
    mask, na, nm = jamflow_mask(window="0.08")  # ±0.08 s = ±2 motion frames
    dense = mask.dense()[0, 0]
    motion_to_motion = dense[na:, na:]
    for i in range(nm):
        for j in range(nm):
            assert motion_to_motion[i, j] == (abs(i - j) <= 2)
    motion_to_audio = dense[na:, :na]
    for i in range(nm):
        for j in range(na):
            assert motion_to_audio[i, j] == (abs(i / 25 - j / 93.75) <= 0.08 + 1e-9)
    assert not motion_to_audio[0, 20]  # far audio is hidden from motion


def test_rules_compose_and_default_applies():
    policy = MaskPolicy(rules={("a", "b"): Blocked()}, default=Full())
    segs = [StreamSegment("a", Fraction(10), 0, 3), StreamSegment("b", Fraction(5), 3, 2)]
    dense = build_attention_mask(policy, segs).dense()[0, 0]
    assert not dense[:3, 3:].any() and dense[3:, :].all() and dense[:3, :3].all()
    same = SameTime()
    slow, fast = Fraction(5), Fraction(10)  # slow frame 3 spans 0.6-0.8 s: fast frames 6 and 7 start inside it
    assert [bool(same.allowed(torch.tensor(3), torch.tensor(j), slow, fast)) for j in range(5, 9)] == [0, 1, 1, 0]
    assert [bool(same.allowed(torch.tensor(7), torch.tensor(j), fast, slow)) for j in range(2, 5)] == [0, 1, 0]


def test_policy_config_round_trip_and_errors():
    policy = local_global_policy("audio", "motion", 0.25)
    again = MaskPolicy.from_config(policy.to_config())
    assert again.rules == policy.rules and again.rule("motion", "audio") == LocalWindow("1/4")
    with pytest.raises(ValueError, match="names stream 'motion'"):
        policy.validate(["audio", "gesture"])
    with pytest.raises(ValueError, match="unknown mask rule"):
        MaskPolicy.from_config({"rules": [{"query": "a", "key": "b", "rule": "diagonal"}]})


def test_key_padding_and_joint_view_switch():
    valid = torch.ones(2, 38, dtype=torch.bool)
    valid[1, 20:30] = False  # sample 1: audio padded after 20 frames
    valid[1, 36:] = False
    view = torch.tensor([[True, True], [True, False]])  # sample 1: motion ignores audio
    mask, na, nm = jamflow_mask(key_valid=valid, joint_view=view)
    dense = mask.dense()[:, 0]
    assert dense.shape == (2, 38, 38)
    assert not dense[1, :, 20:30][valid[1]].any()  # no real query sees a padding key
    assert not dense[1, na:36, :na].any()  # motion's joint view is off for sample 1
    assert dense[0, na:, :na].any() and dense[1, :20, na:].any()  # others unaffected
    assert dense[1, 25, :].sum() == valid[1].sum()  # a padding query sees every real key, never an empty row


def _qkv(b, n, h=2, d=16):
    return (torch.randn(b, h, n, d) for _ in range(3))


@pytest.mark.parametrize("padded", [False, True])
def test_dense_and_block_masks_agree_with_naive_attention(padded):
    valid = None
    if padded:
        valid = torch.ones(2, 38, dtype=torch.bool)
        valid[1, 22:30] = False
    mask, na, nm = jamflow_mask(key_valid=valid)
    q, k, v = _qkv(2, na + nm)
    reference = naive_attention(q, k, v, mask.dense())
    for backend in ("sdpa_masked", "flex", "auto"):
        out = attend(q, k, v, mask, backend)
        rel = (out - reference).norm() / reference.norm()
        assert rel < 1e-5, (backend, rel)


def test_backend_that_cannot_honour_a_mask_raises():
    mask, na, nm = jamflow_mask()
    q, k, v = _qkv(1, na + nm)
    with pytest.raises(AttentionBackendError, match="cannot apply an attention mask"):
        attend(q, k, v, mask, "sdpa")
    full = build_attention_mask(MaskPolicy(), [StreamSegment("a", Fraction(10), 0, na + nm)])
    torch.testing.assert_close(attend(q, k, v, full, "sdpa"), naive_attention(q, k, v))  # no mask needed: fine
    with pytest.raises(ValueError, match="unknown attention backend"):
        attend(q, k, v, mask, "flash3")


def test_flex_backward_on_cpu_is_refused_not_wrong():
    mask, na, nm = jamflow_mask()
    q, k, v = (t.requires_grad_() for t in _qkv(1, na + nm))
    with pytest.raises(AttentionBackendError, match="no backward pass on CPU"):
        attend(q, k, v, mask, "flex")


@pytest.mark.gpu
def test_compiled_flex_matches_dense_on_cuda():
    mask, na, nm = jamflow_mask(n_audio=300, n_motion=80)
    q, k, v = (t.cuda() for t in _qkv(2, na + nm, h=4, d=64))
    dense = attend(q, k, v, mask, "sdpa_masked")
    flex = attend(q, k, v, mask, "flex")
    assert ((flex - dense).norm() / dense.norm()) < 1e-5


def test_built_masks_are_cached_per_policy_lengths_padding_and_device():
    from mmflow.masks import MASK_CACHE

    MASK_CACHE.clear()
    first, na, nm = jamflow_mask()
    again, _, _ = jamflow_mask()
    assert again.dense() is first.dense() and MASK_CACHE.hits == 1  # a second forward pass builds nothing
    longer, _, _ = jamflow_mask(n_audio=31)
    other_window, _, _ = jamflow_mask(window="0.12")
    valid = torch.ones(2, na + nm, dtype=torch.bool)
    valid[1, 25:na] = False
    padded_mask, _, _ = jamflow_mask(key_valid=valid)
    for other in (longer, other_window, padded_mask):
        assert other.dense() is not first.dense()
    assert not torch.equal(other_window.dense(), first.dense())
    all_real, _, _ = jamflow_mask(key_valid=torch.ones(2, na + nm, dtype=torch.bool))
    assert all_real.dense() is first.dense()  # no padding at all: the same mask as no key_valid
    same_padding, _, _ = jamflow_mask(key_valid=valid.clone())
    assert same_padding.dense() is padded_mask.dense()
    assert first.block_mask("cpu") is again.block_mask("cpu")


def test_the_mask_cache_is_bounded_by_entries_and_bytes():
    from mmflow.masks import MaskCache

    cache = MaskCache(max_entries=2, max_bytes=1000)
    for i in range(3):
        cache.get(("t", i), lambda: torch.zeros(100, dtype=torch.bool))
    assert len(cache) == 2 and cache.get(("t", 0), lambda: "rebuilt") == "rebuilt"  # the oldest went first
    cache.get(("big",), lambda: torch.zeros(2000, dtype=torch.bool))
    assert ("big",) not in cache._entries  # larger than the whole budget: returned, never kept
    for i in range(3, 13):
        cache.get(("t", i), lambda: torch.zeros(400, dtype=torch.bool))
    assert cache.nbytes <= 1000
