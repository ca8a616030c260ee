"""JAM-Flow's evaluation: the shipped ``synthetic`` benchmark and the offline lip-sync proxies.

**Benchmarks** ``synthetic`` / ``synthetic-no-joint``: the 20 ``HELD_OUT_SENTENCES`` of the synthetic corpus
(never seen in training), task ``talking_head`` on the bundled demo portrait, so a model writes speech, motion
and video. References: the sentence's text (WER) and, when espeak-ng is available, the espeak-ng speech the
corpus makes of it (``audio``, e.g. for speaker similarity). ``synthetic-no-joint`` generates the same list with
``joint_attention=False``: the ablation of JAM-Flow's coupling.

**Metrics** (weights-free, so they run in CI):

* ``mouth_sync``: the mouth opening dlib's 68 landmarks measure on the rendered video frames, against the RMS
  envelope of the generated speech (40 ms windows centred on the video frames), Pearson r at lags of ±5 frames.
* ``motion_sync``: the same with the mouth opening of the generated motion (kp 19 of the expressions), for a model
  that writes no video.

Both report the peak of the per-lag mean curve over samples (``r``) and its lag (positive: the mouth moves after
the sound). An envelope is only a proxy for a mouth, so even ground truth is well below 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mmflow_motion_liveportrait.plugin import MOTION

from mmflow.codecs import InputError
from mmflow.evaluation import BenchmarkItem, Sample
from mmflow.evaluation.options import check_options, float_option, int_option

logger = logging.getLogger(__name__)

MOTION_FPS = float(MOTION.frame_rate)
ENVELOPE_SECONDS = 0.04
MAX_LAG = 5
SYNTHETIC_TASK = "talking_head"


# ------------------------------------------------------------------------------------------------ sync maths


def rms_envelope(wave: np.ndarray, sample_rate: int, num_frames: int, fps: float,
                 window_seconds: float = ENVELOPE_SECONDS) -> np.ndarray:
    """RMS of ``wave`` in windows centred on the frames' instants ``f / fps`` → ``(num_frames,)``.

    Centred because a motion or video frame is the face at an instant (``visemes.articulation_from_phones``
    samples at ``f / fps``); samples outside the waveform count as silence.
    """
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    half = max(1, round(window_seconds * sample_rate / 2))
    centres = np.round(np.arange(num_frames) * sample_rate / fps).astype(np.int64)
    last = int(centres[-1]) + half if num_frames else 0
    padded = np.pad(wave, (half, max(0, last - len(wave)) + half))  # index i of wave is i + half here
    power = np.concatenate([[0.0], np.cumsum(padded**2)])
    return np.sqrt((power[centres + 2 * half] - power[centres]) / (2 * half)).astype(np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (e.g. a mouth that never opens)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or len(a) != len(b):
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 1e-12 else math.nan


def lagged_correlation(mouth: np.ndarray, audio: np.ndarray, max_lag: int = MAX_LAG) -> dict[int, float]:
    """Correlation of ``mouth[t + lag]`` with ``audio[t]`` over the overlap, for ``lag`` in ``[-max_lag, max_lag]``.

    A positive lag means the mouth moves ``lag`` frames after the sound it goes with.
    """
    mouth, audio = np.asarray(mouth), np.asarray(audio)
    n = min(len(mouth), len(audio))
    mouth, audio = mouth[:n], audio[:n]
    curve = {}
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            curve[lag] = pearson(mouth[lag:], audio[: n - lag])
        else:
            curve[lag] = pearson(mouth[: n + lag], audio[-lag:])
    return curve


def best_lag(curve: Mapping[int, float]) -> tuple[int | None, float]:
    """The lag of the highest correlation (ties: the smallest |lag|); ``(None, nan)`` if all are NaN."""
    finite = [(r, -abs(lag), lag) for lag, r in curve.items() if r is not None and not math.isnan(r)]
    if not finite:
        return None, math.nan
    r, _, lag = max(finite)
    return lag, r


def mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Per-lag mean over samples, ignoring NaN / None (a constant signal carries no sync information)."""
    lags = sorted({lag for curve in curves for lag in curve})
    out = {}
    for lag in lags:
        values = [c[lag] for c in curves if c.get(lag) is not None and not math.isnan(c[lag])]
        out[lag] = float(np.mean(values)) if values else math.nan
    return out


def _finite(value: float | None) -> float | None:
    """NaN → None, for JSON."""
    return None if value is None or math.isnan(value) else float(value)


def sync_curve(mouth: np.ndarray, wave: np.ndarray, sample_rate: int, fps: float = MOTION_FPS,
               max_lag: int = MAX_LAG, window_seconds: float = ENVELOPE_SECONDS) -> dict[int, float]:
    """Per lag, the correlation of a per-frame mouth opening at ``fps`` with the envelope of ``wave``."""
    return lagged_correlation(mouth, rms_envelope(wave, sample_rate, len(mouth), fps, window_seconds), max_lag)


def sync_row(mouth: np.ndarray, wave: np.ndarray, sample_rate: int, fps: float, max_lag: int = MAX_LAG,
             window_seconds: float = ENVELOPE_SECONDS) -> dict[str, Any]:
    """One sample's row: best lag and r, r at lag 0, and the whole curve (keys as strings, for JSON)."""
    curve = sync_curve(mouth, wave, sample_rate, fps, max_lag, window_seconds)
    lag, r = best_lag(curve)
    return {"r": _finite(r), "lag": lag, "r_at_0": _finite(curve[0]),
            "curve": {str(k): _finite(v) for k, v in curve.items()}}


def summarise_sync(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Peak of the per-lag mean curve (``r``, ``lag``), r at 0, the median per-sample lag, undefined samples."""
    curves = [{int(k): (math.nan if v is None else v) for k, v in row["curve"].items()} for row in rows]
    curve = mean_curve(curves)
    lag, r = best_lag(curve)
    lags = [row["lag"] for row in rows if row.get("lag") is not None]
    return {"r": _finite(r), "lag": lag, "r_at_0": _finite(curve.get(0, math.nan)),
            "median_sample_lag": float(np.median(lags)) if lags else None,
            "undefined": len(rows) - len(lags)}


# ------------------------------------------------------------------------------------------------ metrics


def _speech(path: Path) -> tuple[np.ndarray, int]:
    from mmflow_audio_f5tts.audio_io import read_audio, to_mono

    wave, rate = read_audio(path)
    return to_mono(wave), rate


class SyncMetric:
    """Lip-sync proxy: a per-frame mouth opening (from ``mouth_kind`` files) against the speech envelope."""

    higher_is_better = True
    directions = {"r": True, "r_at_0": True}
    reference_needs = frozenset()

    def __init__(self, name: str, mouth_kind: str, max_lag: int, window_seconds: float, batch_size: int = 4):
        self.name = name
        self.mouth_kind = mouth_kind
        self.needs = frozenset({mouth_kind, "audio"})
        self.max_lag = max_lag
        self.window_seconds = window_seconds
        self.batch_size = batch_size

    def mouth(self, path: Path) -> tuple[np.ndarray, float]:
        """The mouth opening per frame and the frame rate of one file."""
        if self.mouth_kind == "video":
            from mmflow_motion_liveportrait.extract import extract_mouth_opening
            from mmflow_motion_liveportrait.video import read_video

            video = read_video(path, read_audio=False)
            return extract_mouth_opening(video), float(video.fps)
        from mmflow_motion_liveportrait.motion_template import load_motion_template
        from mmflow_motion_liveportrait.render import mouth_opening_from_expression

        template = load_motion_template(path)
        return mouth_opening_from_expression(template.exp), float(template.fps)

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        from mmflow_motion_liveportrait.face import FaceError

        rows = []
        for sample in samples:
            wave, rate = _speech(sample.files["audio"])
            try:
                mouth, fps = self.mouth(sample.files[self.mouth_kind])
            except FaceError as error:  # no face found: this sample has no sync, the others still count
                logger.warning("%s: %s: %s", self.name, sample.id, error)
                rows.append({"r": None, "lag": None, "r_at_0": None, "curve": {}, "error": str(error)})
                continue
            rows.append(sync_row(mouth, wave, rate, fps, self.max_lag, self.window_seconds))
        return rows

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        return summarise_sync(rows)


SYNC_OPTIONS = {"max_lag": f"frames searched each way, at most 50 (default {MAX_LAG})",
                "window": f"envelope window in seconds, at most 1 (default {ENVELOPE_SECONDS})"}


def _sync_options(name: str, options: Mapping[str, str]) -> tuple[int, float]:
    options = check_options("metric", name, options, SYNC_OPTIONS)
    return (int_option(options, "max_lag", MAX_LAG, minimum=0, maximum=50),
            float_option(options, "window", ENVELOPE_SECONDS, above=0, maximum=1))


def make_mouth_sync(options: Mapping[str, str], workdir: Path) -> SyncMetric:
    """``mouth_sync``: dlib mouth opening of the rendered video vs the speech envelope."""
    import importlib.util

    from mmflow_motion_liveportrait.face import INSTALL_HINT, DetectorUnavailableError, shape_predictor_path

    try:
        if importlib.util.find_spec("dlib") is None:
            raise DetectorUnavailableError(f"dlib is not installed: {INSTALL_HINT}")
        shape_predictor_path()
    except DetectorUnavailableError as error:
        raise InputError(f"metric mouth_sync needs dlib's 68-point landmarks: {error}") from None
    return SyncMetric("mouth_sync", "video", *_sync_options("mouth_sync", options))


def make_motion_sync(options: Mapping[str, str], workdir: Path) -> SyncMetric:
    """``motion_sync``: the generated motion's mouth opening (kp 19) vs the speech envelope."""
    return SyncMetric("motion_sync", "motion", *_sync_options("motion_sync", options))


# ------------------------------------------------------------------------------------------------ benchmarks


def _espeak_references(sentences: Sequence[str], folder: Path) -> list[Path] | None:
    """The espeak-ng speech of each sentence (the corpus's default voice) as wav files in ``folder``, written once;
    None when espeak-ng is not available."""
    from mmflow_audio_f5tts.audio_io import write_wav
    from mmflow_audio_f5tts.espeak import EspeakEngine, Voice

    paths = [folder / f"{i:02d}.wav" for i in range(len(sentences))]
    if all(path.is_file() for path in paths):
        return paths
    try:
        engine = EspeakEngine()
    except (OSError, RuntimeError, ImportError) as error:
        logger.info("synthetic benchmark: no espeak-ng (%s); references are the texts only", error)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for text, path in zip(sentences, paths, strict=True):
        if not path.is_file():
            spoken = engine.synthesize(text, Voice())
            write_wav(path, spoken.waveform, spoken.sample_rate)
    return paths


def synthetic_items(root: Path | None, joint_attention: bool = True) -> list[BenchmarkItem]:
    """The 20 held-out sentences as ``talking_head`` items on the demo portrait (``root``: where the espeak
    references are cached; default ``$XDG_CACHE_HOME/mmflow/benchmarks/synthetic``)."""
    from mmflow_audio_f5tts.sentences import HELD_OUT_SENTENCES
    from mmflow_motion_liveportrait.face import demo_portrait_path

    portrait = str(demo_portrait_path())
    from mmflow_motion_liveportrait.metrics.benchmarks import cache_root

    references = _espeak_references(HELD_OUT_SENTENCES, Path(root) if root is not None else cache_root("synthetic"))
    items = []
    for i, text in enumerate(HELD_OUT_SENTENCES):
        inputs: dict[str, Any] = {"text": text, "portrait": portrait}
        if not joint_attention:
            inputs["joint_attention"] = False
        reference = {"audio": references[i]} if references else {}
        items.append(BenchmarkItem(id=f"{i:02d}", task=SYNTHETIC_TASK, inputs=inputs, reference=reference,
                                   text=text, meta={"source": "HELD_OUT_SENTENCES", "index": i}))
    return items


def load_synthetic(root: Path | None) -> list[BenchmarkItem]:
    return synthetic_items(root)


def load_synthetic_no_joint(root: Path | None) -> list[BenchmarkItem]:
    return synthetic_items(root, joint_attention=False)


METRICS = {"mouth_sync": make_mouth_sync, "motion_sync": make_motion_sync}
BENCHMARKS = {"synthetic": load_synthetic, "synthetic-no-joint": load_synthetic_no_joint}
