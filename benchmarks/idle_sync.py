"""Does the idle face cost lip sync? The eval's lip-sync figure with the natural idle track and without it.

``talking_head`` on the held-out sentences with the embedded default model (or ``--model``), once with
``idle="natural"`` (the default since issue 17: blinks, brows, gaze and drift condition the motion stream) and
once with ``idle="off"`` (the frozen mean face of earlier releases), same seeds. Lip sync is computed exactly as
``mmflow evaluate``'s ``motion_sync`` does (``mmflow_jamflow.evaluation``): Pearson r between the generated mouth opening
and the RMS envelope of the generated speech at lags of ±5 frames, averaged over sentences; the peak is reported.
No ASR here (the audio changes only through joint attention; run `mmflow evaluate` for WER).

    python benchmarks/idle_sync.py                       # 20 sentences
    python benchmarks/idle_sync.py --sentences 5 --steps 8

Prints both curves' peaks and writes JSON (default benchmarks/results/idle-sync.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from mmflow_jamflow.evaluation import best_lag, mean_curve, sync_curve  # noqa: E402

from mmflow.io import write_text_atomic  # noqa: E402

IDLES = ("natural", "off")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="saved JAMFlowPipeline folder (default: the embedded model)")
    parser.add_argument("--sentences", type=int, default=20, help="first N held-out sentences (max 20)")
    parser.add_argument("--steps", type=int, help="solver steps (default: the scheduler's)")
    parser.add_argument("--seed", type=int, default=0, help="sentence i uses seed + i")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "idle-sync.json")
    args = parser.parse_args(argv)
    if not 1 <= args.sentences <= 20:
        parser.error("--sentences must be in [1, 20]")

    from mmflow_audio_f5tts.mel import SAMPLE_RATE
    from mmflow_audio_f5tts.sentences import HELD_OUT_SENTENCES
    from mmflow_jamflow.default_model import default_model_path
    from mmflow_jamflow.pipeline import JAMFlowPipeline
    from mmflow_motion_liveportrait.render import mouth_opening_from_expression

    model = args.model or default_model_path()
    pipe = JAMFlowPipeline.from_pretrained(model)
    curves: dict[str, list] = {idle: [] for idle in IDLES}
    started = time.perf_counter()
    for index, text in enumerate(HELD_OUT_SENTENCES[: args.sentences]):
        for idle in IDLES:
            out = pipe("talking_head", text, idle=idle, seed=args.seed + index, num_inference_steps=args.steps,
                       portrait=None, progress=False)
            opening = mouth_opening_from_expression(out.motions[0])
            curves[idle].append(sync_curve(opening, np.asarray(out.audios[0], np.float32), SAMPLE_RATE))
        print(f"{index + 1}/{args.sentences} sentences", flush=True)
    summary = {}
    for idle in IDLES:
        curve = mean_curve(curves[idle])
        lag, r = best_lag(curve)
        summary[idle] = {"best_lag": lag, "best_r": r, "r_at_0": curve.get(0), "curve": curve}
        print(f"idle={idle:8s} sync r {r:.3f} at lag {lag:+d} (r at 0: {curve.get(0):.3f})")
    result = {"benchmark": "lip sync (jamflow_eval's metric) with the natural idle face vs the frozen mean face",
              "model": str(model), "sentences": args.sentences, "steps": args.steps, "seed": args.seed,
              "seconds": round(time.perf_counter() - started, 1), "sync": summary}
    write_text_atomic(args.out, json.dumps(result, indent=2, default=float) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
