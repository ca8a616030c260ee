"""Length bucketing: padded attention gives the unpadded outputs on the real frames, for every backend that
runs on CPU, and what is built for a bucket (mask structure, BlockMask tables) serves every length in it."""

from fractions import Fraction

import pytest
import torch

from mmflow.attention import attend
from mmflow.buckets import LengthBuckets, bucketed
from mmflow.masks import MASK_CACHE, StreamSegment, build_attention_mask, local_global_policy

AUDIO_RATE, MOTION_RATE = Fraction(375, 4), Fraction(25)
BUCKETS = LengthBuckets(min_length=32, growth=1.25, multiple=8, streams={"motion": LengthBuckets(8, 1.25, 4)})
VIEWS = torch.tensor([[True, True], [True, False], [False, True]])  # per sample: audio's, motion's joint view


def jam_mask(n_audio, n_motion, key_valid=None, joint_view=None, window="0.08"):
    segments = [StreamSegment("audio", AUDIO_RATE, 0, n_audio), StreamSegment("motion", MOTION_RATE, n_audio, n_motion)]
    return build_attention_mask(local_global_policy("audio", "motion", window), segments, key_valid, joint_view)


def qkv(batch, n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 2, n, 16, generator=generator) for _ in range(3)]


def test_the_ladder_holds_every_length_and_grows_geometrically():
    ladder = LengthBuckets(min_length=64, growth=1.25, multiple=16)
    previous = 0
    for n in range(0, 3000):
        bucket, smallest = ladder.bucket(n), ladder.smallest(n)
        assert smallest <= n <= bucket and bucket % 16 == 0
        assert ladder.bucket(smallest) == bucket and (smallest == 0 or ladder.bucket(smallest - 1) < bucket)
        assert bucket >= previous
        previous = bucket
        if n > 64:
            assert bucket < 1.25 * n + 16  # at most `growth` longer, up to the rounding
    assert len({ladder.bucket(n) for n in range(1, 3000)}) <= 20
    assert BUCKETS.bucket(9, "motion") == 12 and BUCKETS.bucket(9, "audio") == 32  # a stream's own ladder


def test_time_aligned_ladders_change_bucket_at_the_same_times():
    rates = {"audio": AUDIO_RATE, "motion": MOTION_RATE}
    buckets = LengthBuckets.time_aligned(rates, min_seconds=1.0, growth=1.25, multiple_seconds=0.16)
    assert buckets.ladder("audio").multiple == 15 and buckets.ladder("motion").multiple == 4
    layouts = set()
    for tenth in range(10, 121):  # clips of 1.0 .. 12.0 s
        seconds = Fraction(tenth, 10)
        lengths = {name: int(rate * seconds) for name, rate in rates.items()}
        layout = buckets.layout(lengths)
        layouts.add(tuple(layout.values()))
        for name, (length, smallest) in layout.items():
            assert smallest <= lengths[name] <= length < 1.25 * float(rates[name] * seconds) + 2 * buckets.ladder(name).multiple
    rungs = {buckets.rung(int(AUDIO_RATE * Fraction(tenth, 10)), "audio") for tenth in range(10, 121)}
    assert len(layouts) == len(rungs)  # the streams switch bucket together


@pytest.mark.parametrize("kwargs, fix", [({"growth": 1.0}, "growth > 1"), ({"min_length": 0}, "min_length > 0")])
def test_a_bad_ladder_is_refused_with_the_fix(kwargs, fix):
    with pytest.raises(ValueError, match=fix):
        LengthBuckets(**kwargs)


def _padded_views(batch, n_audio, n_motion):
    valid = torch.ones(batch, n_audio + n_motion, dtype=torch.bool)
    valid[1, n_audio - 6 : n_audio] = False  # sample 1: shorter audio and motion
    valid[1, n_audio + n_motion - 2 :] = False
    return valid, VIEWS[:batch]


@pytest.mark.parametrize("backend", ["sdpa_masked", "split", "flex", "auto"])
@pytest.mark.parametrize("case", ["plain", "padding", "views", "padding+views"])
def test_bucketed_attention_equals_the_unpadded_run_on_the_real_frames(backend, case):
    n_audio, n_motion = 45, 13  # buckets 56 and 16: both streams are padded
    valid, views = _padded_views(3, n_audio, n_motion)
    mask = jam_mask(n_audio, n_motion, valid if "padding" in case else None, views if "views" in case else None)
    assert bucketed(mask, BUCKETS).mask.size == 56 + 16
    q, k, v = qkv(3, n_audio + n_motion)
    want = attend(q, k, v, mask, backend)
    got = attend(q, k, v, mask, backend, buckets=BUCKETS)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    reference = attend(q, k, v, mask, "sdpa_masked")  # and both are the masked attention itself
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-5)


def test_bucketed_attention_has_the_same_gradients():
    mask = jam_mask(45, 13, *_padded_views(3, 45, 13))
    grads = []
    for buckets in (None, BUCKETS):
        q, k, v = (t.requires_grad_() for t in qkv(3, 58))
        out = attend(q, k, v, mask, "split", buckets=buckets)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    for want, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_lengths_already_on_the_ladder_are_not_moved():
    moved = bucketed(jam_mask(56, 16), BUCKETS)
    assert moved.spans == () and moved.mask.size == 72
    q = qkv(1, 72)[0]
    assert moved.pad(q) is q and moved.unpad(q) is q


def test_a_bucket_builds_its_mask_structure_and_block_tables_once_for_all_its_lengths():
    MASK_CACHE.clear()
    lengths = [(47, 15), (50, 15), (53, 16), (56, 16)]  # one bucket (audio 41..56, motion 13..16), padding included
    batch, outputs = 2, []
    for n_audio, n_motion in lengths:
        mask = jam_mask(n_audio, n_motion, *_padded_views(batch, n_audio, n_motion))
        q, k, v = qkv(batch, n_audio + n_motion)
        outputs.append([attend(q, k, v, mask, backend, buckets=BUCKETS) for backend in ("sdpa_masked", "flex")])
    built = dict(MASK_CACHE.builds)
    assert built["structure"] == 1 and built["block_tables"] == 1 and "block" not in built, built
    assert built["dense"] == len(lengths)  # the padding itself differs per length: applied on the structure
    for (n_audio, n_motion), got in zip(lengths, outputs, strict=True):
        mask = jam_mask(n_audio, n_motion, *_padded_views(batch, n_audio, n_motion))
        want = attend(*qkv(batch, n_audio + n_motion), mask, "sdpa_masked")
        for out in got:
            torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("views", [None, VIEWS[:2]], ids=["shared", "per-sample views"])
def test_a_bucket_builds_one_split_plan_for_all_its_lengths(views):
    """The split plan's layout is built per bucket (keyed by the padded lengths and padding_from); each length
    lays only its own padding onto it, and the outputs stay the masked attention's, forward and backward."""
    MASK_CACHE.clear()
    lengths = [(47, 15), (50, 15), (53, 16), (56, 16), (48, 16)]  # one bucket (audio 41..56, motion 13..16), padding in it
    masks = [jam_mask(n_audio, n_motion, _padded_views(2, n_audio, n_motion)[0], views) for n_audio, n_motion in lengths]
    for mask in masks:
        q, k, v = (t.requires_grad_() for t in qkv(2, mask.size))
        got = attend(q, k, v, mask, "split", buckets=BUCKETS)
        got_grads = torch.autograd.grad(got.square().sum(), (q, k, v))
        with torch.no_grad():
            torch.testing.assert_close(attend(q, k, v, mask, "split", buckets=BUCKETS), got, rtol=0, atol=1e-5)
        want = attend(q, k, v, mask, "sdpa_masked")
        want_grads = torch.autograd.grad(want.square().sum(), (q, k, v))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        for ours, theirs in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert MASK_CACHE.builds["split"] == 1, dict(MASK_CACHE.builds)
    MASK_CACHE.clear()  # without bucketing: one plan per length
    for mask in masks:
        attend(*qkv(2, mask.size), mask, "split")
    assert MASK_CACHE.builds["split"] == len(lengths)


def test_padding_before_the_bucket_start_falls_back_to_an_exact_blockmask():
    MASK_CACHE.clear()
    valid = torch.ones(2, 58, dtype=torch.bool)
    valid[1, 20:45] = False  # sample 1 holds 20 audio frames: far below the bucket's smallest length (41)
    mask = jam_mask(45, 13, valid, VIEWS[:2])
    assert bucketed(mask, BUCKETS).mask.padding_from == (41, 13)
    q, k, v = qkv(2, 58)
    got = attend(q, k, v, mask, "flex", buckets=BUCKETS)
    torch.testing.assert_close(got, attend(q, k, v, mask, "sdpa_masked"), rtol=0, atol=1e-5)
    assert MASK_CACHE.builds["block"] == 1 and "block_tables" not in MASK_CACHE.builds


def test_block_tables_agree_with_torchs_blockmask_where_no_padding_is_possible():
    """Without padding the tables are create_block_mask's own (full blocks included), so nothing is lost."""
    from torch.nn.attention.flex_attention import create_block_mask

    mask = jam_mask(300, 80, window="0.25")
    mask.padding_from = (300, 80)
    ours = mask.block_mask("cpu", block_size=32)
    theirs = create_block_mask(mask.mask_mod(), None, None, 380, 380, device="cpu", BLOCK_SIZE=32)
    assert torch.equal(ours.to_dense(), theirs.to_dense())
    assert torch.equal(ours.full_kv_num_blocks, theirs.full_kv_num_blocks)


def test_a_model_with_length_buckets_gives_the_same_velocities():
    from mmflow.testing import tiny_batches, tiny_model

    batches = tiny_batches(batch=3, seconds=(1.0, 0.6, 0.9))
    generator = torch.Generator().manual_seed(3)
    x = {n: torch.randn(b.latent.shape, generator=generator) for n, b in batches.items()}
    t = torch.tensor([0.3, 0.7, 0.5])
    views = {"fast": torch.tensor([True, False, True]), "slow": torch.tensor([True, True, False])}
    for backend in ("sdpa_masked", "split", "flex"):
        model = tiny_model(backend=backend)
        with torch.no_grad():  # flex has no backward on CPU
            want = model(x, t, batches, joint_view=views)
            model.length_buckets = LengthBuckets(min_length=8, growth=1.5, multiple=8)
            got = model(x, t, batches, joint_view=views)
        for name in want:
            valid = batches[name].valid
            torch.testing.assert_close(got[name][valid], want[name][valid], rtol=0, atol=1e-5)


def test_flex_keeps_working_as_lengths_and_rates_change():
    """FlexAttention traces the mask_mod even in eager mode and turns ints that change between calls into
    symbols; rational rule arithmetic inside it then failed (after a few lengths, at the next rates)."""
    for n_audio, n_motion in [(45, 13), (50, 15), (56, 16)]:
        mask = jam_mask(n_audio, n_motion, *_padded_views(2, n_audio, n_motion))
        q, k, v = qkv(2, mask.size)
        torch.testing.assert_close(attend(q, k, v, mask, "flex"), attend(q, k, v, mask, "sdpa_masked"), rtol=0, atol=1e-5)
    segments = [StreamSegment("fast", Fraction(50), 0, 20), StreamSegment("slow", Fraction(15), 20, 6)]
    mask = build_attention_mask(local_global_policy("fast", "slow", "0.2"), segments, joint_view=VIEWS[:2])
    q, k, v = qkv(2, 26)
    torch.testing.assert_close(attend(q, k, v, mask, "flex"), attend(q, k, v, mask, "sdpa_masked"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_time_aligned_buckets_reuse_one_blockmask_and_one_flex_graph_for_a_bucket(device):
    """Clips of 2.6 .. 3.2 s share one time-aligned bucket: one set of block tables, one traced (on CUDA:
    compiled) FlexAttention, and the outputs of the unpadded masked attention."""
    from torch._dynamo.utils import counters

    buckets = LengthBuckets.time_aligned({"audio": AUDIO_RATE, "motion": MOTION_RATE})
    dtype, tolerance = (torch.bfloat16, 2e-2) if device == "cuda" else (torch.float32, 1e-5)
    MASK_CACHE.clear()
    torch._dynamo.reset()
    graphs, layouts = [], set()
    for seconds in ("2.6", "2.8", "3.0", "3.2"):
        n_audio, n_motion = int(AUDIO_RATE * Fraction(seconds)), int(MOTION_RATE * Fraction(seconds))
        mask = jam_mask(n_audio, n_motion, joint_view=VIEWS[:2].to(device), window="0.25")
        layouts.add(tuple(s.length for s in bucketed(mask, buckets).mask.segments))
        q, k, v = (t.to(device, dtype) for t in qkv(2, mask.size))
        with torch.no_grad():
            got, want = attend(q, k, v, mask, "flex", buckets), attend(q, k, v, mask, "sdpa_masked")
        assert ((got.float() - want.float()).norm() / want.float().norm()).item() <= tolerance
        graphs.append(int(counters["stats"]["unique_graphs"]))
    assert len(layouts) == 1 and MASK_CACHE.builds["block_tables"] == 1 and "block" not in MASK_CACHE.builds
    assert graphs[0] == graphs[-1] >= 1, graphs  # no new graph after the first length of the bucket


def test_block_tables_are_kept_on_disk_per_bucket_and_a_bad_file_is_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MMFLOW_BLOCK_TABLE_DIR", str(tmp_path))
    mask = jam_mask(47, 15, *_padded_views(2, 47, 15))  # padding from 41 audio / 13 motion frames: in the bucket
    q, k, v = qkv(2, 62)
    want = attend(q, k, v, mask, "sdpa_masked")

    def run(n_audio=47, n_motion=15):
        MASK_CACHE.clear()  # a new process: only the disk remembers
        other = jam_mask(n_audio, n_motion, *_padded_views(2, n_audio, n_motion))
        return attend(*qkv(2, n_audio + n_motion), other, "flex", buckets=BUCKETS)

    torch.testing.assert_close(run(), want, rtol=0, atol=1e-5)
    files = list(tmp_path.glob("block-tables-*.safetensors"))
    assert len(files) == 1 and MASK_CACHE.builds["structure"] == 1
    run(53, 16)  # another length of the same bucket: read from the file, the structure is not built
    assert list(tmp_path.glob("block-tables-*.safetensors")) == files and "structure" not in MASK_CACHE.builds
    stored = files[0].read_bytes()
    files[0].write_bytes(stored[:-8])  # truncated: refused, rebuilt, written again
    with caplog.at_level("WARNING", logger="mmflow.masks"):
        torch.testing.assert_close(run(), want, rtol=0, atol=1e-5)
    assert "unusable" in caplog.text and MASK_CACHE.builds["structure"] == 1
    assert files[0].read_bytes() == stored


def _blocks(count: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """FlexAttention's (count, indices) block table as ``(B, Q blocks, KV blocks)`` bool."""
    out = torch.zeros(indices.shape[0], indices.shape[2], indices.shape[3], dtype=torch.bool)
    for b in range(out.shape[0]):
        for row in range(out.shape[1]):
            out[b, row, indices[b, 0, row, : count[b, 0, row]].long()] = True
    return out


@pytest.mark.parametrize("audio, motion", [(300, 80), (270, 75), (241, 64), (255, 80)])
def test_bucket_block_tables_hold_for_every_padding_past_padding_from(audio, motion):
    """A full block (mask_mod skipped by compiled kernels) must be fully allowed whatever the padding, and
    every block some query may use must be listed. Eager Flex on CPU applies mask_mod everywhere, so only the
    tables themselves show this."""
    structure = jam_mask(300, 80, joint_view=VIEWS[:2], window="0.25")
    structure.padding_from = (240, 64)
    tables = structure._build_block_tables("cpu", 32)
    partial, full = _blocks(*tables[:2]), _blocks(*tables[2:])
    assert int(full.sum()) > 0 and int(partial.sum()) > 0
    valid = torch.ones(2, 380, dtype=torch.bool)
    valid[1, audio:300] = False
    valid[1, 300 + motion :] = False
    exact = jam_mask(300, 80, valid, VIEWS[:2], window="0.25").dense()[:, 0]
    exact = torch.nn.functional.pad(exact, (0, 4, 0, 4)).view(2, 12, 32, 12, 32)  # 380 -> 12 blocks of 32
    assert not (exact.any(4).any(2) & ~(partial | full)).any()  # every block with an allowed pair is listed
    assert not (full & ~exact.all(4).all(2)).any()  # a full block allows every pair in it (none past the end)
