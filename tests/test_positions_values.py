"""mmflow.positions pinned where the mutation study (benchmarks/mutation.py) found it unguarded: partial
rotation (fewer channels or heads than x has), bf16 inputs, and positions' precision and device."""

from __future__ import annotations

from fractions import Fraction

import torch

from mmflow.positions import RotaryEmbedding, apply_rotary, rotary_table, stream_positions
from mmflow.streams import StreamSpec


def _table(n, width):
    return rotary_table(RotaryEmbedding(width)(torch.arange(float(n))[None]))


def test_a_narrow_table_rotates_the_first_channels_and_passes_the_rest():
    # heads 4 = rotated channels 4 = frames 4: shapes that coincide must not confuse the fast path
    x = torch.randn(1, 4, 4, 8)
    y = apply_rotary(x, _table(4, 4))
    assert y.shape == x.shape and torch.equal(y[..., 4:], x[..., 4:])
    torch.testing.assert_close(y[..., :4], apply_rotary(x[..., :4].contiguous(), _table(4, 4)))


def test_first_head_only_with_a_single_frame():
    x = torch.randn(1, 3, 1, 8)
    y = apply_rotary(x, _table(1, 8), rope_heads=1)
    assert y.shape == x.shape and torch.equal(y[:, 1:], x[:, 1:])


def test_bf16_is_rotated_in_float32_and_returned_in_bf16():
    x = torch.randn(2, 2, 64, 16).to(torch.bfloat16)
    table = _table(64, 16)
    y = apply_rotary(x, table)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, apply_rotary(x.float(), table).to(torch.bfloat16))


def test_seconds_positions_are_computed_in_float64():
    specs = {"fast": StreamSpec(name="fast", frame_rate=Fraction(50), channels=1, position="seconds"),
             "slow": StreamSpec(name="slow", frame_rate=Fraction(15), channels=1, position="seconds")}
    n = 2000
    pos = stream_positions(specs, {"fast": torch.tensor([n]), "slow": torch.tensor([n])}, {"fast": n, "slow": n})
    by_hand = (torch.arange(n, dtype=torch.float64) * (50 / 15)).float()
    assert torch.equal(pos["slow"][0], by_hand)
    assert pos["slow"].dtype == torch.float32


def test_positions_live_on_the_lengths_device():
    specs = {"a": StreamSpec(name="a", frame_rate=Fraction(50), channels=1, position="index")}
    pos = stream_positions(specs, {"a": torch.tensor([3, 2], device="meta")}, {"a": 3})
    assert pos["a"].device.type == "meta" and pos["a"].shape == (2, 3)
