"""Joint-attention cost: unmasked SDPA vs SDPA with the dense JAM-Flow mask vs FlexAttention with a BlockMask.

Workload (issue 2): audio at 93.75 frames/s + motion at 25 frames/s in one joint sequence, 16 heads × 64,
clips of 10/20/30 s, the JAM-Flow mask (audio → all audio + its own motion frame; motion → motion and audio
within ±window). The unmasked SDPA is the reference each masked variant is compared with, in the same run.

    python benchmarks/attention.py                      # CPU, fp32
    python benchmarks/attention.py --device cuda --dtype bf16 --batch 2

Prints a table and writes JSON (default benchmarks/results/attention-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from fractions import Fraction

import torch

from mmflow.attention import attend
from mmflow.io import write_text_atomic
from mmflow.masks import StreamSegment, build_attention_mask, local_global_policy

AUDIO_RATE, MOTION_RATE = Fraction(375, 4), Fraction(25)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_clip(seconds: float, args, device, dtype) -> dict:
    n_audio = int(AUDIO_RATE * Fraction(str(seconds)))
    n_motion = int(MOTION_RATE * Fraction(str(seconds)))
    segments = [StreamSegment("audio", AUDIO_RATE, 0, n_audio), StreamSegment("motion", MOTION_RATE, n_audio, n_motion)]
    policy = local_global_policy("audio", "motion", args.window)
    n = n_audio + n_motion
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(args.batch, args.heads, n, args.dim_head, generator=generator).to(device, dtype)
               for _ in range(3))

    start = time.perf_counter()
    mask = build_attention_mask(policy, segments)
    dense = mask.dense(device)
    sync(device)
    dense_build_ms = (time.perf_counter() - start) * 1000
    density = dense.float().mean().item()

    row = {"seconds": seconds, "tokens": n, "mask_density": round(density, 3), "dense_mask_build_ms": dense_build_ms}
    row["sdpa_unmasked_ms"] = timed(lambda: attend(q, k, v, None, "sdpa"), device, args.repeats)
    row["sdpa_dense_mask_ms"] = timed(lambda: attend(q, k, v, mask, "sdpa_masked"), device, args.repeats)
    if not args.skip_flex:
        start = time.perf_counter()
        mask.block_mask(device)
        sync(device)
        row["block_mask_build_ms"] = (time.perf_counter() - start) * 1000
        row["flex_block_mask_ms"] = timed(lambda: attend(q, k, v, mask, "flex"), device, args.repeats, warmup=2)
        out_flex = attend(q, k, v, mask, "flex").float()
        out_dense = attend(q, k, v, mask, "sdpa_masked").float()
        row["flex_vs_dense_rel_err"] = ((out_flex - out_dense).norm() / out_dense.norm()).item()
    for key in ("sdpa_dense_mask_ms", "flex_block_mask_ms"):
        if key in row:
            row[key.replace("_ms", "_ratio")] = row[key] / row["sdpa_unmasked_ms"]
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-flex", action="store_true", help="leave FlexAttention out (slow unfused on CPU)")
    parser.add_argument("--compile-flex-cpu", action="store_true", help="compile FlexAttention on CPU too")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/attention-<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.compile_flex_cpu:
        os.environ["MMFLOW_COMPILE_FLEX"] = "1"
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]

    rows = [bench_clip(seconds, args, device, dtype) for seconds in args.clips]
    header = f"{'clip':>5} {'tokens':>7} {'density':>8} {'sdpa':>10} {'sdpa+mask':>10} {'ratio':>6} {'flex':>10} {'ratio':>6}"
    print(f"joint attention, {args.batch}×{args.heads} heads×{args.dim_head}, {dtype}, {device}")
    print(header)
    for r in rows:
        flex = f"{r['flex_block_mask_ms']:>10.2f} {r['flex_block_mask_ratio']:>6.2f}" if "flex_block_mask_ms" in r else ""
        print(f"{r['seconds']:>4.0f}s {r['tokens']:>7} {r['mask_density']:>8.3f} {r['sdpa_unmasked_ms']:>10.2f} "
              f"{r['sdpa_dense_mask_ms']:>10.2f} {r['sdpa_dense_mask_ratio']:>6.2f} {flex}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report = {
        "benchmark": "joint_attention",
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "dtype": str(dtype),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "reference": "sdpa_unmasked_ms (same run)",
        "rows": rows,
    }
    out = args.out or f"benchmarks/results/attention-{device.type}.json"
    write_text_atomic(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
