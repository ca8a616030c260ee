"""``mmflow demo toy``: train a two-stream MMDiT on toy clips, then show what joint attention learned.

The coherence figure is the correlation between a generated stream and what the given stream implies
(the gesture should follow the signal's envelope, and the generated signal's envelope the given gesture),
for the trained model and for the same model with its joint view switched off.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
from tqdm.auto import tqdm

from mmflow import FlowMatchingObjective, MMDiT, StreamBatch, generate
from mmflow.io import atomic_path, write_text_atomic

from .data import make_clips, signal_envelope, training_batch
from .plugin import GESTURE, SIGNAL

logger = logging.getLogger(__name__)


def toy_model_config(width: int = 64, depth: int = 4, schedule: str = "half") -> dict:
    backbone = {"dim": width, "depth": depth, "heads": 2, "dim_head": width // 2, "ff_mult": 2, "conv_pos_kernel": 7,
                "conv_pos_groups": 8}
    return {
        "streams": {
            "signal": {**SIGNAL.to_config(), "backbone": "dit", "backbone_config": backbone},
            "gesture": {**GESTURE.to_config(), "backbone": "dit", "backbone_config": backbone},
        },
        "joint_schedule": schedule,
        "mask_policy": {"preset": "local_global", "global_stream": "signal", "local_stream": "gesture",
                        "window_seconds": "0.2"},
    }


def train(model: MMDiT, steps: int, batch_size: int, seconds: float, seed: int, lr: float = 2e-3) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    objective = FlowMatchingObjective()
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="training toy model"):
        loss = objective(model, training_batch(batch_size, seconds, generator), generator).total
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row of ``(b, n)`` tensors."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-8)


def coherence(model: MMDiT, clips: dict, joint: bool, steps: int, seed: int) -> dict[str, float]:
    """Correlation of generated streams with what the given stream implies, averaged over clips."""
    b = clips["signal"].shape[0]
    every = {n: torch.ones(x.shape[:2], dtype=torch.bool) for n, x in clips.items()}
    none = {n: torch.zeros(x.shape[:2], dtype=torch.bool) for n, x in clips.items()}

    def run(given_stream: str):
        batches = {
            n: StreamBatch.from_lengths(x, given=every[n] if n == given_stream else none[n]) for n, x in clips.items()
        }
        return generate(model, batches, steps=steps, sway=-1.0, generator=torch.Generator().manual_seed(seed),
                        joint_view=joint)

    gesture = run("signal")["gesture"][..., 0]
    signal = run("gesture")["signal"][..., 0]
    # the generated signal's envelope, sampled at the gesture's frame times
    env = signal_envelope(signal)
    index = (GESTURE.frame_times(clips["gesture"].shape[1]) * float(SIGNAL.frame_rate)).round().long()
    env_at_gesture = env[:, index.clamp(max=env.shape[1] - 1)]
    true_gesture = clips["gesture"][..., 0]
    return {
        "gesture_from_signal": correlation(gesture, true_gesture).mean().item(),
        "signal_from_gesture": correlation(env_at_gesture, true_gesture).mean().item(),
        "clips": b,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mmflow demo toy",
        description="Train a tiny two-stream MMDiT (signal 50 Hz + gesture 15 Hz) on CPU and measure how well "
        "joint attention couples the streams.",
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length in seconds")
    parser.add_argument("--eval-clips", type=int, default=64)
    parser.add_argument("--nfe", type=int, default=16, help="Euler steps when sampling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/toy", help="folder for the trained model and coherence.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    model = MMDiT(**toy_model_config())
    start = time.perf_counter()
    losses = train(model, args.steps, args.batch_size, args.seconds, args.seed)
    train_seconds = time.perf_counter() - start
    clips = make_clips(args.eval_clips, args.seconds, torch.Generator().manual_seed(args.seed + 1))
    joint = coherence(model, clips, joint=True, steps=args.nfe, seed=args.seed)
    alone = coherence(model, clips, joint=False, steps=args.nfe, seed=args.seed)

    report = {
        "steps": args.steps,
        "train_seconds": round(train_seconds, 1),
        "final_loss": sum(losses[-20:]) / min(20, len(losses)),
        "joint": joint,
        "joint_off": alone,
    }
    with atomic_path(f"{args.out}/model") as tmp:
        model.save_pretrained(tmp)
    write_text_atomic(f"{args.out}/coherence.json", json.dumps(report, indent=2))
    print(f"toy demo: {args.steps} steps in {train_seconds:.0f}s, final loss {report['final_loss']:.3f}")
    print(f"{'coherence (correlation)':<28}{'joint':>8}{'joint off':>11}")
    for key in ("gesture_from_signal", "signal_from_gesture"):
        print(f"{key:<28}{joint[key]:>8.3f}{alone[key]:>11.3f}")
    print(f"wrote {args.out}/coherence.json and {args.out}/model/")
    return 0
