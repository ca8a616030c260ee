"""mmflow.masks pinned where the mutation study (benchmarks/mutation.py) found it unguarded: rule equality and
configs, the slow-query side of SameTime, a zero window, per-sample joint views in the dense mask and in
FlexAttention's mask_mod, and what the masks are built on (dtype, device, batch)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from mmflow import masks as masks_module
from mmflow.masks import (
    Blocked,
    Full,
    LocalWindow,
    MaskPolicy,
    SameTime,
    StreamSegment,
    build_attention_mask,
    rule_from_config,
)


@pytest.fixture(autouse=True)
def _fresh_mask_cache():
    """Build every mask in the test itself: a mask cached by an earlier test (or by the process a mutation run
    forks from) would hide the code that builds it."""
    cache = getattr(masks_module, "MASK_CACHE", None)
    if cache is not None:
        cache.clear()
    yield


def _mask(key_valid=None, joint_view=None, policy=None):
    policy = policy or MaskPolicy(rules={("a", "a"): LocalWindow("0.04"), ("a", "b"): LocalWindow("0.1"),
                                         ("b", "a"): SameTime()})
    segments = [StreamSegment("a", Fraction(50), 0, 10), StreamSegment("b", Fraction(15), 10, 4)]
    return build_attention_mask(policy, segments, key_valid=key_valid, joint_view=joint_view)


def test_rules_compare_hash_and_print_by_their_config():
    assert LocalWindow("1/5") == LocalWindow(0.2) and LocalWindow(0.2) != LocalWindow(0.4)
    assert LocalWindow(0) != Full() and SameTime() == SameTime()
    assert len({LocalWindow("1/5"), LocalWindow(0.2), Full(), Full()}) == 2
    assert hash(LocalWindow("1/5")) == hash((("rule", "window"), ("seconds", "1/5")))
    assert repr(LocalWindow("1/5")) == "LocalWindow(seconds=1/5)" and repr(Blocked()) == "Blocked()"


def test_rules_and_policies_from_config():
    assert rule_from_config("same_time") == SameTime() and rule_from_config("none") == Blocked()
    assert rule_from_config({"rule": "window", "seconds": "1/5"}) == LocalWindow("1/5")
    with pytest.raises(ValueError, match="unknown mask rule"):
        rule_from_config({"seconds": "1/5"})
    assert MaskPolicy.from_config({}) == MaskPolicy()
    assert MaskPolicy.from_config({}).default == Full()
    policy = MaskPolicy.from_config({"default": "none"})
    assert policy.default == Blocked() and policy.rules == {}
    with pytest.raises(ValueError, match="unknown mask policy keys"):
        MaskPolicy.from_config({"defaults": "none"})


def test_blocked_and_full_are_bool():
    q, k = torch.arange(3)[:, None], torch.arange(4)[None, :]
    for rule, value in ((Blocked(), False), (Full(), True)):
        out = rule.allowed(q, k, Fraction(50), Fraction(15))
        assert out.dtype == torch.bool and out.shape == (3, 4) and (out == value).all()


def test_a_zero_window_keeps_only_the_same_start_time():
    rule = LocalWindow(0)
    out = rule.allowed(torch.arange(6)[:, None], torch.arange(6)[None, :], Fraction(50), Fraction(25))
    # 50 Hz frame q starts at q/50 s, 25 Hz frame k at k/25 s: equal only for q = 2k
    assert out.nonzero().tolist() == [[0, 0], [2, 1], [4, 2]]


def test_same_time_slow_query_sees_the_fast_frames_starting_inside_it():
    q, k = torch.arange(3)[:, None], torch.arange(12)[None, :]
    out = SameTime().allowed(q, k, Fraction(15), Fraction(50))  # slow frame q covers [q/15, (q+1)/15) s
    by_hand = [[int(kk * 15 // 50 == qq) for kk in range(12)] for qq in range(3)]  # fast frame k starts at k/50
    assert out.int().tolist() == by_hand
    assert out[0].nonzero().flatten().tolist() == [0, 1, 2, 3] and out[1].nonzero().flatten().tolist() == [4, 5, 6]
    same = SameTime().allowed(torch.arange(4)[:, None], torch.arange(4)[None, :], Fraction(25), Fraction(25))
    assert torch.equal(same, torch.eye(4, dtype=torch.bool))


def test_dense_mask_with_a_stream_switched_off_per_sample():
    joint_view = torch.tensor([[True, True], [False, True], [True, False]])
    dense = _mask(joint_view=joint_view).dense()[:, 0]
    full = _mask().dense()[0, 0]
    a, b = slice(0, 10), slice(10, 14)
    assert torch.equal(dense[0], full)
    assert not full[a, a].all()  # a local window: switching the other stream off must not widen it
    assert not dense[1, a, b].any() and torch.equal(dense[1, a, a], full[a, a])  # a sees only a
    assert torch.equal(dense[1, b, :], full[b, :])  # b unchanged
    assert not dense[2, b, a].any() and torch.equal(dense[2, b, b], full[b, b])
    assert torch.equal(dense[2, a, :], full[a, :])


def _mask_mod_grid(mask, b):
    n = mask.size
    return mask.mask_mod()(torch.tensor(b), torch.tensor(0), torch.arange(n)[:, None], torch.arange(n)[None, :])


@pytest.mark.parametrize("per_sample", ["joint_view", "padding", "both", "none"])
def test_mask_mod_equals_the_dense_mask(per_sample):
    key_valid = torch.ones(3, 14, dtype=torch.bool)
    key_valid[1, 8:10] = False
    key_valid[2, 12:] = False
    joint_view = torch.tensor([[True, True], [False, True], [True, False]])
    kwargs = {"joint_view": {"joint_view": joint_view}, "padding": {"key_valid": key_valid},
              "both": {"joint_view": joint_view, "key_valid": key_valid}, "none": {}}[per_sample]
    mask = _mask(**kwargs)
    dense = mask.dense()[:, 0]
    for b in range(3):
        assert torch.equal(_mask_mod_grid(mask, b), dense[min(b, dense.shape[0] - 1)]), b


def test_dense_and_block_masks_are_built_where_asked():
    mask = _mask()
    on_meta = mask.dense(device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == (1, 1, 14, 14)
    padded = torch.ones(2, 14, dtype=torch.bool)
    padded[1, 12:] = False
    block = _mask(key_valid=padded).block_mask("cpu")
    assert block.shape[0] == 2 and block.BLOCK_SIZE == (128, 128)
    small = _mask().block_mask("cpu", block_size=64)
    assert small.shape[0] == 1 and small.BLOCK_SIZE == (64, 64)


def test_joint_view_needs_one_column_per_stream_for_any_batch():
    mask = _mask(joint_view=torch.ones(3, 2, dtype=torch.bool))  # batch 3, two streams
    assert mask.dense().shape == (3, 1, 14, 14) or mask.dense().shape == (1, 1, 14, 14)
    with pytest.raises(ValueError, match="one column per stream"):
        _mask(joint_view=torch.ones(2, 3, dtype=torch.bool))


def test_same_time_fast_query_sees_the_slow_frame_holding_its_start():
    out = SameTime().allowed(torch.arange(12)[:, None], torch.arange(4)[None, :], Fraction(50), Fraction(15))
    assert out.int().tolist() == [[int(kk == qq * 15 // 50) for kk in range(4)] for qq in range(12)]


def test_mask_cache_counts_evicts_least_recent_and_bounds_bytes():
    cache = masks_module.MaskCache(max_entries=2, max_bytes=400)
    fresh = masks_module.MaskCache()
    assert fresh.max_entries == 32 and fresh.hits == 0 and fresh.misses == 0
    built = []

    def build(n):
        return lambda: built.append(n) or torch.zeros(n)  # float32: 4 bytes a value

    cache.get(("a",), build(10))
    cache.get(("a",), build(10))
    assert (cache.hits, cache.misses, built) == (1, 1, [10])
    cache.get(("b",), build(20))
    cache.get(("a",), build(10))  # a is now the most recent
    cache.get(("c",), build(30))  # over two entries: b, the least recent, goes
    assert list(cache._entries) == [("a",), ("c",)] and cache.nbytes == 160
    cache.get(("big",), build(101))  # 404 bytes: returned but not kept
    assert ("big",) not in cache._entries
    cache.get(("exact",), build(100))  # exactly 400 bytes: kept, the rest evicted to fit
    assert list(cache._entries) == [("exact",)]
    assert (cache.hits, cache.misses) == (2, 5)


def test_mask_cache_sizes_nested_values():
    from types import SimpleNamespace

    t = torch.zeros(3)  # 12 bytes
    assert masks_module._nbytes(t) == 12
    assert masks_module._nbytes((t, [t], {"k": t}, SimpleNamespace(a=t, b=(t,)), 7)) == 12 * 5
    assert masks_module._nbytes(SimpleNamespace()) == 0 and masks_module._nbytes(None) == 0


def test_local_window_across_rates_by_hand():
    q, k = torch.arange(40)[:, None], torch.arange(14)[None, :]
    for seconds in ("0.1", "1/7", "0.26"):
        w = Fraction(seconds)
        out = LocalWindow(seconds).allowed(q, k, Fraction(50), Fraction(15))
        by_hand = [[int(abs(Fraction(qq, 50) - Fraction(kk, 15)) <= w) for kk in range(14)] for qq in range(40)]
        assert out.int().tolist() == by_hand, seconds


def test_cached_masks_are_told_apart_by_what_they_depend_on():
    """Two masks that differ only in a per-sample joint view, the device or the kind never share a cache entry."""
    view_a = torch.tensor([[True, True], [False, True]])
    view_b = torch.tensor([[True, False], [True, True]])
    dense_a = _mask(joint_view=view_a).dense()
    dense_b = _mask(joint_view=view_b).dense()
    assert not torch.equal(dense_a, dense_b)
    assert _mask().dense(device="meta").device.type == "meta" and _mask().dense().device.type == "cpu"
    block = _mask().block_mask("cpu", block_size=64)
    assert not isinstance(block, torch.Tensor) and _mask().block_mask("cpu").BLOCK_SIZE == (128, 128)


def test_cache_key_names_the_device_or_none():
    mask = _mask()
    assert mask.cache_key("dense")[:2] == ("dense", None)  # no device: a key of its own, not an error
    assert mask.cache_key("dense", "cpu")[:2] == ("dense", "cpu")
    assert mask.cache_key("dense", torch.device("cpu")) == mask.cache_key("dense", "cpu")
    assert mask.cache_key("dense")[2:] == mask.cache_key("dense", "cpu")[2:]
