"""The ``split`` backend: exact against SDPA with the dense mask, forward and backward, for every mask shape
it may meet (padding, per-sample joint views, several streams, rows that see nothing but their own block)."""

from fractions import Fraction

import pytest
import torch

from mmflow import split_attention as split_module
from mmflow.attention import AttentionBackendError, attend, auto_backend, naive_attention
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
from mmflow.split_attention import split_plan, whole_share

AUDIO_RATE, MOTION_RATE = Fraction(375, 4), Fraction(25)


def jam_mask(n_audio=40, n_motion=11, window="0.08", key_valid=None, joint_view=None):
    segments = [StreamSegment("audio", AUDIO_RATE, 0, n_audio), StreamSegment("motion", MOTION_RATE, n_audio, n_motion)]
    return build_attention_mask(local_global_policy("audio", "motion", window), segments, key_valid, joint_view)


def padded(batch=3, n_audio=40, n_motion=11):
    """Sample 1: audio padded after 25 frames and motion after 7; sample 2: motion padded after 9."""
    valid = torch.ones(batch, n_audio + n_motion, dtype=torch.bool)
    valid[1, 25:n_audio] = False
    valid[1, n_audio + 7 :] = False
    if batch > 2:
        valid[2, n_audio + 9 :] = False
    return valid


VIEWS = torch.tensor([[True, True], [True, False], [False, True]])  # per sample: audio's, motion's joint view


def qkv(batch, n, dtype=torch.float64, heads=2, dim=16, seed=0, std=1.0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, heads, n, dim)
    return [(torch.randn(shape, generator=generator, dtype=torch.float64) * std).to(dtype).requires_grad_() for _ in range(3)]


def forward_backward(q, k, v, mask, backend):
    out = attend(q, k, v, mask, backend)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
    return (out, *torch.autograd.grad(out, (q, k, v), upstream))


def assert_exact(mask, q, k, v, tolerance):
    reference = forward_backward(q, k, v, mask, "sdpa_masked")
    split = forward_backward(q, k, v, mask, "split")
    for name, want, got in zip(("out", "dq", "dk", "dv"), reference, split, strict=True):
        error = (got.double() - want.double()).abs().max().item()
        assert error <= tolerance, (name, error)
    with torch.no_grad():  # inference takes the fused kernels' log-sum-exp instead of the sink: same result
        error = (attend(q, k, v, mask, "split").double() - reference[0].double()).abs().max().item()
    assert error <= tolerance, ("no_grad out", error)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("views", [False, True])
def test_split_equals_the_dense_masked_path_forward_and_backward(dtype, tolerance, padding, views):
    mask = jam_mask(key_valid=padded() if padding else None, joint_view=VIEWS if views else None)
    assert_exact(mask, *qkv(3, mask.size, dtype), tolerance)


def test_split_matches_naive_softmax_on_every_row_padding_rows_included():
    mask = jam_mask(key_valid=padded(), joint_view=VIEWS)
    q, k, v = qkv(3, mask.size)
    reference = naive_attention(q, k, v, mask.dense())  # softmax written out, in float32
    torch.testing.assert_close(attend(q, k, v, mask, "split"), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("gather_max_keys, row_chunk", [(0, 3), (16, 3), (0, 64)])
@pytest.mark.parametrize("window", ["0.08", "1"])
def test_the_masked_rest_path_and_row_chunks_are_exact_too(monkeypatch, gather_max_keys, row_chunk, window):
    """Rows whose rest keys are too many to gather go through masked kernels (sink with grad, fused without);
    rows that see no stream whole go in chunks, each over the key spans its rows see."""
    monkeypatch.setattr(split_module, "GATHER_MAX_KEYS", gather_max_keys)
    monkeypatch.setattr(split_module, "ROW_CHUNK", row_chunk)
    mask = jam_mask(window=window, key_valid=padded(), joint_view=VIEWS)
    assert_exact(mask, *qkv(3, mask.size), 1e-12)


@pytest.mark.parametrize(
    "rules, default",
    [
        ({}, Full()),  # no rule: whole joint attention, restricted only by padding and joint views
        ({("a", "b"): Blocked(), ("c", "a"): SameTime()}, Full()),
        ({("b", "b"): LocalWindow("0.2"), ("b", "c"): Full(), ("a", "c"): Blocked()}, SameTime()),
        ({("a", "a"): Full(), ("c", "c"): Full()}, LocalWindow("0.15")),
    ],
)
def test_split_is_exact_for_other_policies_and_three_streams(monkeypatch, rules, default):
    monkeypatch.setattr(split_module, "ROW_CHUNK", 4)
    segments = [StreamSegment("a", Fraction(50), 0, 23), StreamSegment("b", Fraction(15), 23, 7),
                StreamSegment("c", Fraction(20), 30, 9)]
    valid = torch.ones(2, 39, dtype=torch.bool)
    valid[1, 18:23] = valid[1, 28:30] = valid[1, 36:] = False
    views = torch.tensor([[True, True, True], [False, True, False]])
    mask = build_attention_mask(MaskPolicy(rules=rules, default=default), segments, valid, views)
    assert_exact(mask, *qkv(2, 39), 1e-12)


def test_large_logits_stay_exact():
    """The sink's normaliser covers row log-sum-exps of tens (module docstring: the range is about ±80)."""
    mask = jam_mask(key_valid=padded(), joint_view=VIEWS)
    q, k, v = qkv(3, mask.size, std=2.5)  # logits up to about ±40
    logits = (q @ k.transpose(-1, -2)) / 4
    assert logits.abs().max() > 25
    assert_exact(mask, q, k, v, 1e-9)


def test_bfloat16_error_is_that_of_the_dense_path():
    mask = jam_mask(n_audio=160, n_motion=43, window="0.25", key_valid=padded(2, 160, 43), joint_view=VIEWS[:2])
    exact = [t.detach() for t in qkv(2, mask.size, heads=4, dim=64)]
    reference = naive_attention(*exact, mask.dense())
    low = [t.to(torch.bfloat16) for t in exact]
    dense_error = (attend(*low, mask, "sdpa_masked").double() - reference).abs().max().item()
    split_error = (attend(*low, mask, "split").double() - reference).abs().max().item()
    assert split_error <= 2 * dense_error, (split_error, dense_error)


def test_the_plan_attends_the_whole_block_unmasked():
    mask = jam_mask(n_audio=375, n_motion=100, window="0.25")
    audio, *motion = split_plan(mask, "cpu")
    assert audio.whole == (0, 375) and audio.whole_valid is None
    assert audio.gather is not None and audio.gather.shape[-1] == 1  # one motion frame per audio frame
    (motion,) = motion
    assert (motion.start, motion.stop, motion.chunk) == (375, 475, 64)  # motion rows in chunks of 64
    # motion 0-63 (0-2.56 s) sees audio 0-259 (up to 2.77 s) and motion 0-69; motion 64-99 audio 217-374, motion 58-99
    first, second = motion.index.tolist()
    assert first == [*range(260), *range(375, 445)]
    assert second[:200] == [*range(217, 375), *range(375 + 58, 475)] and len(set(second[200:])) == 1
    assert not motion.mask[0, 1, :, 200:].any()  # padding keys: seen by nobody
    assert not motion.mask[0, 1, 36:, 1:].any()  # padding rows (past motion 99): only their first key
    assert whole_share(mask) == pytest.approx(375**2 / 475**2)
    assert split_plan(mask, "cpu") is split_plan(jam_mask(n_audio=375, n_motion=100, window="0.25"), "cpu")


def test_float16_is_refused_not_approximated():
    mask = jam_mask()
    q, k, v = (t.detach().half() for t in qkv(1, mask.size))
    with pytest.raises(AttentionBackendError, match="does not support torch.float16"):
        attend(q, k, v, mask, "split")


def test_auto_picks_split_on_cuda_only_and_keeps_cpu_bit_for_bit():
    mask = jam_mask()
    assert auto_backend(mask, "cpu", torch.float32) == "sdpa_masked"  # released CPU outputs are pinned bit for bit
    assert auto_backend(mask, "cuda", torch.bfloat16) == "split"
    assert auto_backend(mask, "cuda", torch.float16) == "sdpa_masked"
    assert auto_backend(None, "cuda", torch.bfloat16) == "sdpa"
    motion_only = jam_mask(n_audio=4, n_motion=40, window="0.1")
    assert auto_backend(motion_only, "cuda", torch.bfloat16) == "sdpa_masked"  # little to gain: most pairs masked
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, 20:] = False
    alone = build_attention_mask(MaskPolicy(), [StreamSegment("audio", AUDIO_RATE, 0, 30)], key_valid=valid)
    assert auto_backend(alone, "cuda", torch.bfloat16) == "sdpa_masked"  # one stream: a broadcast key mask


def test_a_model_gives_the_same_velocities_with_split():
    from mmflow.testing import tiny_batches, tiny_model

    batches = tiny_batches(seconds=(1.0, 0.6))
    generator = torch.Generator().manual_seed(3)
    x = {n: torch.randn(b.latent.shape, generator=generator) for n, b in batches.items()}
    t = torch.tensor([0.3, 0.7])
    dense = tiny_model(backend="sdpa_masked")(x, t, batches)
    split = tiny_model(backend="split")(x, t, batches)
    for name in dense:
        torch.testing.assert_close(split[name], dense[name], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_matches_dense_on_cuda(dtype, padding):
    """Backward takes the sink path; inference without padding in bf16 the flash kernel's log-sum-exp."""
    valid, views = (padded(2, 937, 250).cuda(), VIEWS[:2].cuda()) if padding else (None, None)
    mask = jam_mask(n_audio=937, n_motion=250, window="0.25", key_valid=valid, joint_view=views)
    q, k, v = (t.detach().cuda().to(dtype).requires_grad_() for t in qkv(2, mask.size, heads=4, dim=64))
    reference = forward_backward(q, k, v, mask, "sdpa_masked")
    split = forward_backward(q, k, v, mask, "split")
    with torch.no_grad():
        split = (attend(q, k, v, mask, "split"), *split)
    reference = (reference[0], *reference)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # relative norm; bf16: the dense path's own rounding
    for name, want, got in zip(("no_grad out", "out", "dq", "dk", "dv"), reference, split, strict=True):
        error = ((got.float() - want.float()).norm() / want.float().norm()).item()
        assert error <= tolerance, (name, error)
    assert split_module._cuda_flash_ok[0], "the CUDA flash kernel with log-sum-exp failed; see the warning"
