"""Joint-attention cost under the JAM-Flow mask: the `split` backend vs unmasked SDPA vs SDPA with the dense mask
(and FlexAttention with a BlockMask where it is usable).

Workload (issue 2, issue 19): audio at 93.75 frames/s + motion at 25 frames/s in one joint sequence, 16 heads
× 64, clips of 10/20/30 s, the JAM-Flow mask (audio → all audio + its own motion frame; motion → motion and
audio within ±window). Unmasked SDPA is the reference every masked variant is compared with, in the same run:
the variants are timed in turns (round robin), so a load change on the machine hits all of them alike.

Per clip the JSON row holds, for each variant, the median time, its ratio to unmasked SDPA, the first call's
cost on a cold mask cache (mask build + plan + attention), the builds alone (dense mask, split plan, BlockMask;
the dense mask again on a warm cache), and the variant's error against the dense masked path measured in the
same run (max |Δ| and relative norm; with --backward also the gradients').

    python benchmarks/attention.py                      # CPU, fp32 -> benchmarks/results/attention-cpu.json
    python benchmarks/attention.py --backward           # also forward + backward
    python benchmarks/attention.py --device cuda        # bf16, Flex compiled -> attention-cuda-bf16.json

Prints a table and writes JSON (default benchmarks/results/attention-<device>[-<dtype>].json; fp32 on CPU keeps
the plain name).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from fractions import Fraction

import torch

from mmflow.attention import attend, auto_backend
from mmflow.io import write_text_atomic
from mmflow.masks import MASK_CACHE, StreamSegment, build_attention_mask, local_global_policy
from mmflow.split_attention import split_plan, whole_block_kernel, whole_share

logger = logging.getLogger("benchmarks.attention")

AUDIO_RATE, MOTION_RATE = Fraction(375, 4), Fraction(25)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REFERENCE = "sdpa"
MASKED = ("sdpa_masked", "split", "flex")


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(fn, device) -> float:
    """Wall time of one call of ``fn`` in milliseconds."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1000


def round_robin(calls: dict, device, repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of each call, timed in turns so that all see the same machine load."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            times[name].append(clock(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


def errors(out: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    out, reference = out.double(), reference.double()
    return {"max_abs": (out - reference).abs().max().item(),
            "rel_norm": ((out - reference).norm() / reference.norm()).item()}


def bench_clip(seconds: float, args, device, dtype, variants) -> dict:
    n_audio = int(AUDIO_RATE * Fraction(str(seconds)))
    n_motion = int(MOTION_RATE * Fraction(str(seconds)))
    segments = [StreamSegment("audio", AUDIO_RATE, 0, n_audio), StreamSegment("motion", MOTION_RATE, n_audio, n_motion)]
    policy = local_global_policy("audio", "motion", args.window)
    n = n_audio + n_motion
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(args.batch, args.heads, n, args.dim_head, generator=generator).to(device, dtype)
               for _ in range(3))

    def fresh_mask():
        return build_attention_mask(policy, segments)

    row = {"seconds": seconds, "tokens": n}
    # first call of each masked variant on a cold cache: everything a sampler's first step pays
    MASK_CACHE.clear()
    start = time.perf_counter()
    fresh_mask().dense(device)
    sync(device)
    row["dense_mask_build_ms"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    fresh_mask().dense(device)
    row["dense_mask_build_cached_ms"] = (time.perf_counter() - start) * 1000
    MASK_CACHE.clear()
    start = time.perf_counter()
    split_plan(fresh_mask(), device)  # includes the dense mask it is cut from
    sync(device)
    row["split_plan_build_ms"] = (time.perf_counter() - start) * 1000
    for name in variants:
        if name == REFERENCE:
            continue
        MASK_CACHE.clear()
        with torch.no_grad():
            row[f"{name}_first_call_ms"] = clock(lambda name=name: attend(q, k, v, fresh_mask(), name), device)
    if "flex" in variants:
        MASK_CACHE.clear()
        start = time.perf_counter()
        fresh_mask().block_mask(device)
        sync(device)
        row["block_mask_build_ms"] = (time.perf_counter() - start) * 1000

    mask = fresh_mask()
    row["mask_density"] = round(mask.dense(device).float().mean().item(), 4)
    row["whole_block_share"] = round(whole_share(mask), 4)
    row["auto_picks"] = auto_backend(mask, device, dtype)
    with torch.no_grad():
        calls = {name: (lambda name=name: attend(q, k, v, None if name == REFERENCE else mask, name))
                 for name in variants}
        row.update({f"{name}_ms": ms for name, ms in round_robin(calls, device, args.repeats, args.warmup).items()})
        dense_out = attend(q, k, v, mask, "sdpa_masked")
        for name in variants:
            if name in MASKED and name != "sdpa_masked":
                row[f"{name}_vs_dense_error"] = errors(attend(q, k, v, mask, name), dense_out)
    for name in variants:
        row[f"{name}_ratio"] = row[f"{name}_ms"] / row[f"{REFERENCE}_ms"]

    if args.backward:
        trainable = [t.detach().requires_grad_() for t in (q, k, v)]
        upstream = torch.randn(q.shape, generator=generator).to(device, dtype)

        def step(name):
            out = attend(*trainable, None if name == REFERENCE else mask, name)
            return torch.autograd.grad(out, trainable, upstream)

        backward = [name for name in variants if name != "flex" or device.type == "cuda"]
        calls = {name: (lambda name=name: step(name)) for name in backward}
        for name, ms in round_robin(calls, device, args.repeats, args.warmup).items():
            row[f"{name}_fwd_bwd_ms"] = ms
            row[f"{name}_fwd_bwd_ratio"] = ms / row[f"{REFERENCE}_fwd_bwd_ms"]  # the reference is timed first
        dense_grads = step("sdpa_masked")
        if "split" in backward:
            split_grads = step("split")
            row["split_vs_dense_grad_error"] = {
                name: errors(got, want) for name, got, want in zip(("dq", "dk", "dv"), split_grads, dense_grads, strict=True)
            }
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--clips", type=float, nargs="+", default=[10.0, 20.0, 30.0], help="clip lengths in seconds")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dim-head", type=int, default=64)
    parser.add_argument("--window", default="0.25", help="motion window half-width in seconds")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backward", action="store_true", help="also time forward + backward (no Flex on CPU)")
    parser.add_argument("--flex", action=argparse.BooleanOptionalAction, default=None,
                        help="include FlexAttention (default: on CUDA only; eager Flex on CPU is slow)")
    parser.add_argument("--compile-flex-cpu", action="store_true", help="compile FlexAttention on CPU too")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/attention-<device>[-<dtype>].json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile_flex_cpu:
        os.environ["MMFLOW_COMPILE_FLEX"] = "1"
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    use_flex = args.flex if args.flex is not None else device.type == "cuda"
    variants = [REFERENCE, "sdpa_masked", "split", *(["flex"] if use_flex else [])]

    rows = [bench_clip(seconds, args, device, dtype, variants) for seconds in args.clips]
    logger.info("joint attention, %d×%d heads×%d, %s, %s, %d threads", args.batch, args.heads, args.dim_head, dtype,
                device, torch.get_num_threads())
    logger.info("%5s %7s %8s " + " ".join(f"{name:>18}" for name in variants), "clip", "tokens", "density")
    for r in rows:
        cells = " ".join(f"{r[f'{name}_ms']:>10.2f} ({r[f'{name}_ratio']:.2f}×)" for name in variants)
        logger.info("%4.0fs %7d %8.3f %s", r["seconds"], r["tokens"], r["mask_density"], cells)
        if args.backward:
            cells = " ".join(f"{r[f'{name}_fwd_bwd_ms']:>10.2f} ({r[f'{name}_fwd_bwd_ratio']:.2f}×)"
                             for name in variants if f"{name}_fwd_bwd_ms" in r)
            logger.info("%21s %s", "fwd+bwd", cells)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report = {
        "benchmark": "joint_attention",
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "reference": f"{REFERENCE}_ms: unmasked SDPA in the same run; *_ratio = variant / reference (medians, "
                     "timed round robin)",
        "split_whole_block_kernel": {
            "forward": whole_block_kernel(device, dtype, grad=False),
            "backward": whole_block_kernel(device, dtype, grad=True),
        },
        "rows": rows,
    }
    suffix = "" if device.type == "cpu" and dtype == torch.float32 else f"-{dtype_name}"
    out = args.out or f"benchmarks/results/attention-{device.type}{suffix}.json"
    write_text_atomic(out, json.dumps(report, indent=2))
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
