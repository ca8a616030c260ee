"""Refit the expression → eye/lip open-ratio maps of ``motion_template.open_ratios`` on official LivePortrait
templates (those that carry ``c_eyes_lst``/``c_lip_lst``, e.g. ``assets/examples/driving/d*.pkl``).

Usage: ``python scripts/fit_open_ratios.py LivePortrait/assets/examples/driving/d*.pkl``. Prints the least-squares
weights (intercept first) and the R² of each clip predicted by a fit on the other clips.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from mmflow_motion_liveportrait.motion_template import (
    EYE_RATIO_KEYPOINTS,
    LIP_RATIO_KEYPOINTS,
    load_motion_template,
)

logger = logging.getLogger("fit_open_ratios")


def _features(exp: np.ndarray, keypoints) -> np.ndarray:
    return np.concatenate([np.ones((len(exp), 1)), exp[:, list(keypoints), 1]], axis=1)


def fit(clips: dict[str, tuple[np.ndarray, np.ndarray]], keypoints) -> tuple[np.ndarray, np.ndarray]:
    """Weights on all clips, and the held-out-clip R² per output column."""
    def solve(names):
        x = np.concatenate([_features(clips[n][0], keypoints) for n in names])
        y = np.concatenate([clips[n][1] for n in names])
        return np.linalg.lstsq(x, y, rcond=None)[0]

    error = total = 0.0
    everything = np.concatenate([y for _, y in clips.values()])
    for held in clips:
        weights = solve([n for n in clips if n != held])
        exp, y = clips[held]
        error = error + ((_features(exp, keypoints) @ weights - y) ** 2).sum(0)
        total = total + ((y - everything.mean(0)) ** 2).sum(0)
    return solve(list(clips)), 1 - error / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("templates", nargs="+", help="official LivePortrait .pkl templates with c_eyes_lst/c_lip_lst")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    templates = {path: load_motion_template(path) for path in args.templates}
    usable = {p: t for p, t in templates.items() if t.c_eyes is not None and t.c_lip is not None}
    if len(usable) < 2:
        parser.error("give at least two templates that carry c_eyes_lst and c_lip_lst")
    frames = sum(t.num_frames for t in usable.values())
    for name, keypoints, field in (("lip", LIP_RATIO_KEYPOINTS, "c_lip"), ("eyes", EYE_RATIO_KEYPOINTS, "c_eyes")):
        weights, r2 = fit({p: (t.exp, getattr(t, field)) for p, t in usable.items()}, keypoints)
        logger.info("%s over %d frames of %d clips: weights (intercept, kps %s) %s; held-out R² %s", name, frames,
                    len(usable), keypoints, np.round(weights, 4).tolist(), np.round(r2, 2).tolist())


if __name__ == "__main__":
    main()
