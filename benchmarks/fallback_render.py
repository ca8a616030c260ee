"""Cost of the weights-free renderer per 512² frame on one CPU core, against a reference measured in the same run.

The fallback (``mmflow_motion_liveportrait.fallback.LandmarkFallbackRenderer``) renders the bundled 512² demo
portrait with everything moving at once: speech-like mouth opening, the idle face (blinks, brows, gaze, drift)
and a head pose (roll, scale, translation, yaw, pitch). The reference is the least any warp renderer pays per
frame: one bilinear remap of the whole 512² RGB frame (``grid_sample``) and the conversion to uint8. Both run on
one thread (``torch.set_num_threads(1)``), taking turns within each repeat so machine load hits them alike.
Target: under 20 ms per frame (issue 17).

    python benchmarks/fallback_render.py                  # 50 frames × 5 repeats
    python benchmarks/fallback_render.py --frames 100 --repeats 9

Prints the medians and writes JSON (default benchmarks/results/fallback-render-cpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mmflow_motion_liveportrait.face import demo_portrait_path, load_image, to_tensor, to_uint8
from mmflow_motion_liveportrait.idle import idle_motion
from mmflow_motion_liveportrait.plugin import MOTION
from mmflow_motion_liveportrait.render import DrivingMotion, LandmarkFallbackRenderer, expression_for_opening

from mmflow.io import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 20.0


def full_motion(frames: int) -> DrivingMotion:
    """Speech, the idle face and a moving head: every input the fallback reads."""
    steps = np.arange(frames)
    opening = np.clip(0.45 + 0.4 * np.sin(steps / 2.1), 0, 1)
    exp = expression_for_opening(opening) + idle_motion(frames, seed=0, frame_rate=MOTION.frame_rate)
    wave = np.sin(steps / 9.0)
    t = np.zeros((frames, 3))
    t[:, 0] = 0.02 * wave
    return DrivingMotion(exp=exp, pitch=4 * wave, yaw=6 * np.cos(steps / 11.0), roll=5 * wave,
                         scale=(1.4 + 0.03 * wave)[:, None], t=t)


def reference(frame: np.ndarray, frames: int, batch: int = 8):
    """One bilinear remap of the whole frame per frame (a small rotation), then uint8: the floor of a warp."""
    image = to_tensor(frame)
    angle = torch.tensor(0.02)
    theta = torch.tensor([[torch.cos(angle), -torch.sin(angle), 0.0], [torch.sin(angle), torch.cos(angle), 0.0]])
    grid = F.affine_grid(theta[None], [1, 3, *frame.shape[:2]], align_corners=False)

    def run() -> None:
        for start in range(0, frames, batch):
            count = min(batch, frames - start)
            out = F.grid_sample(image.expand(count, -1, -1, -1), grid.expand(count, -1, -1, -1),
                                mode="bilinear", align_corners=False)
            to_uint8(out)

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fallback-render-cpu.json")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.repeats < 1:
        parser.error("--frames and --repeats must be positive")
    torch.set_num_threads(1)

    frame = load_image(demo_portrait_path())
    renderer = LandmarkFallbackRenderer(frame)
    motion = full_motion(args.frames)
    calls = {"fallback": lambda: renderer.render(motion, progress=False), "reference": reference(frame, args.frames)}
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000 / args.frames)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "benchmark": "fallback renderer, ms per 512² frame, one CPU thread",
        "frame_size": list(frame.shape[:2]),
        "frames": args.frames,
        "repeats": args.repeats,
        "ms_per_frame": {name: round(value, 3) for name, value in medians.items()},
        "all_ms_per_frame": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "ratio_to_reference": round(medians["fallback"] / medians["reference"], 2),
        "target_ms": TARGET_MS,
        "meets_target": medians["fallback"] < TARGET_MS,
        "reference": "one bilinear grid_sample of the whole 512² RGB frame + uint8 conversion",
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    for name, value in medians.items():
        print(f"{name:10s} {value:7.2f} ms/frame")
    print(f"ratio {result['ratio_to_reference']}×; target < {TARGET_MS} ms: {'pass' if result['meets_target'] else 'FAIL'}")
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
