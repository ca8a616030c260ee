"""First-call cost of joint attention over a run of clip lengths, with and without length bucketing.

A sampler pays, at the first step of every new length, for the mask (dense mask, split plan or BlockMask) and,
for compiled FlexAttention, a compile per new shape. With length bucketing (``mmflow.buckets``) whatever was
built for a bucket serves every length in it. The workload is JAM-Flow's joint attention (audio at 93.75
frames/s + motion at 25 frames/s, the JAM mask, a guidance batch of 2 whose second sample has the joint view
off) under time-aligned buckets (``LengthBuckets.time_aligned``); the lengths are met in order, each once, on
a cold mask cache per backend and mode. Per backend, the reference (no bucketing) and the bucketed run are
measured in the same run, one after the other.

Per backend and mode the JSON holds: builds per kind (``MASK_CACHE.builds``), FlexAttention compiles
(dynamo's unique graphs), the first call per length (mask build + compile + attention), a second call on the
same mask (the attention alone: what every later step pays, padding included) and their sums; plus the
largest difference between the two modes' outputs on the real frames.

    python benchmarks/mask_build.py                               # CPU: sdpa_masked, split, eager flex
    python benchmarks/mask_build.py --backends flex --compile-flex --heads 4 --out \
        benchmarks/results/mask-build-cpu-compiled-flex.json      # compiled flex on CPU (slow: ~10 s a shape)
    python benchmarks/mask_build.py --device cuda --dtype bf16    # GPU session (flex compiled)

Writes benchmarks/results/mask-build-<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import tempfile
import time
from fractions import Fraction

import torch

from mmflow.attention import attend
from mmflow.buckets import LengthBuckets, bucketed
from mmflow.io import write_text_atomic
from mmflow.masks import MASK_CACHE, StreamSegment, build_attention_mask, local_global_policy

logger = logging.getLogger("benchmarks.mask_build")

AUDIO_RATE, MOTION_RATE = Fraction(375, 4), Fraction(25)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CLIPS = (3.1, 3.4, 4.0, 4.6, 5.2, 5.9, 6.3, 7.0, 7.7, 8.4, 9.2, 10.0)


def clock(fn, device: torch.device) -> tuple[float, object]:
    """(milliseconds, result) of one call of ``fn``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000, result


def compiles() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def jam_mask(seconds: float, policy, device) -> torch.Tensor:
    n_audio, n_motion = int(AUDIO_RATE * Fraction(str(seconds))), int(MOTION_RATE * Fraction(str(seconds)))
    segments = [StreamSegment("audio", AUDIO_RATE, 0, n_audio), StreamSegment("motion", MOTION_RATE, n_audio, n_motion)]
    views = torch.tensor([[True, True], [False, False]], device=device)  # guidance: sample 2 without joint view
    return build_attention_mask(policy, segments, joint_view=views)


def run_mode(backend: str, buckets: LengthBuckets | None, args, device, dtype) -> tuple[dict, list]:
    """``_run_mode`` with compiles cold too: inductor's caches on disk would serve a shape met in an earlier run."""
    with tempfile.TemporaryDirectory(prefix="mask-build-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        return _run_mode(backend, buckets, args, device, dtype)


def _run_mode(backend: str, buckets: LengthBuckets | None, args, device, dtype) -> tuple[dict, list]:
    """The clips in order on a cold cache: per clip the first and second call; totals and builds."""
    MASK_CACHE.clear()
    torch._dynamo.reset()
    policy = local_global_policy("audio", "motion", args.window)
    rows, outputs, start_compiles = [], [], compiles()
    for seconds in args.clips:
        mask = jam_mask(seconds, policy, device)
        generator = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, args.heads, mask.size, args.dim_head, generator=generator).to(device, dtype)
                   for _ in range(3))
        call = functools.partial(attend, q, k, v, mask, backend, buckets)
        with torch.no_grad():
            first_ms, out = clock(call, device)
            second_ms, _ = clock(call, device)
        layout = [s.length for s in (bucketed(mask, buckets).mask if buckets else mask).segments]
        rows.append({"seconds": seconds, "tokens": mask.size, "layout": layout,
                     "first_call_ms": round(first_ms, 2), "second_call_ms": round(second_ms, 2)})
        outputs.append(out.float().cpu())
    summary = {
        "layouts": len({tuple(r["layout"]) for r in rows}),
        "builds": dict(MASK_CACHE.builds),
        "flex_compiles": compiles() - start_compiles,
        "first_calls_total_ms": round(sum(r["first_call_ms"] for r in rows), 1),
        "second_calls_total_ms": round(sum(r["second_call_ms"] for r in rows), 1),
        "rows": rows,
    }
    return summary, outputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--clips", type=float, nargs="+", default=list(CLIPS), help="clip lengths in seconds, in order")
    parser.add_argument("--backends", nargs="+", default=["sdpa_masked", "split", "flex"])
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dim-head", type=int, default=64)
    parser.add_argument("--window", default="0.25", help="motion window half-width in seconds")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time-aligned buckets: the first rung")
    parser.add_argument("--growth", type=float, default=1.25, help="time-aligned buckets: ratio between rungs")
    parser.add_argument("--multiple-seconds", type=float, default=0.16, help="rungs are rounded up to this")
    parser.add_argument("--compile-flex", action="store_true", help="compile FlexAttention on CPU too")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/mask-build-<device>.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile_flex:
        os.environ["MMFLOW_COMPILE_FLEX"] = "1"
    torch._inductor.config.fx_graph_cache = False
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    buckets = LengthBuckets.time_aligned({"audio": AUDIO_RATE, "motion": MOTION_RATE}, args.min_seconds,
                                         args.growth, args.multiple_seconds)

    results = {}
    for backend in args.backends:
        with torch.no_grad():  # once per process (imports, compiler start-up), so that neither mode pays it
            warm = jam_mask(0.5, local_global_policy("audio", "motion", args.window), device)
            attend(*(torch.zeros(2, args.heads, warm.size, args.dim_head, device=device, dtype=dtype),) * 3, warm,
                   backend)
        reference, ref_out = run_mode(backend, None, args, device, dtype)
        bucket, bucket_out = run_mode(backend, buckets, args, device, dtype)
        difference = max((a - b).abs().max().item() for a, b in zip(ref_out, bucket_out, strict=True))
        results[backend] = {"reference": reference, "bucketed": bucket, "max_abs_difference": difference}
        logger.info(
            "%-11s layouts %2d -> %2d  builds %s -> %s  compiles %d -> %d  first calls %.0f -> %.0f ms  "
            "second calls %.0f -> %.0f ms  max |diff| %.1e",
            backend, reference["layouts"], bucket["layouts"], reference["builds"], bucket["builds"],
            reference["flex_compiles"], bucket["flex_compiles"], reference["first_calls_total_ms"],
            bucket["first_calls_total_ms"], reference["second_calls_total_ms"], bucket["second_calls_total_ms"],
            difference,
        )
    report = {
        "benchmark": "mask_build",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        "flex_compiled": device.type == "cuda" or args.compile_flex,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "buckets": {name: [ladder.min_length, ladder.growth, ladder.multiple] for name, ladder in buckets.streams},
        "reference": "per backend, 'reference' (no bucketing) and 'bucketed' measured in the same run, each on a "
                     "cold mask cache and a reset compiler; max_abs_difference compares their outputs",
        "results": results,
    }
    out = args.out or f"benchmarks/results/mask-build-{device.type}.json"
    write_text_atomic(out, json.dumps(report, indent=2))
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
