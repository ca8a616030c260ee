"""Portrait faces kept on disk, so that each process does not detect the same portrait again.

Preparing a renderer on CPU was mostly dlib: loading its two models takes ~0.7 s and detection ~0.1 s per portrait,
a fifth of ``mmflow generate``'s work on a 6 s clip (issue 19). A detection depends only on the portrait's pixels
and the detector's settings, so it is kept under a key made of exactly those: ``$XDG_CACHE_HOME/mmflow/faces/
<key>.json`` (box, score, landmarks and how many faces were found, as JSON numbers: reading an entry runs no code).
A portrait whose pixels differ in one bit, another dlib or other settings gives another key, so a stale entry is
never used. ``assets/faces/`` ships the entry of the embedded default's portrait (``demo_portrait_path``), made by
this same code; a test recomputes it.

Only the default detector's results are kept (``detect_portrait(image)`` without a detector); pass your own
:class:`~.face.LandmarkDetector` to bypass the cache, or set ``MMFLOW_FACE_CACHE=off``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from mmflow.io import user_cache_folder, write_text_atomic

from .face import (
    ASSETS,
    DETECTION_MAX_SIDE,
    NUM_LANDMARKS,
    Detection,
    LandmarkDetector,
    default_detector,
    warn_several_faces,
)

logger = logging.getLogger(__name__)

SHIPPED = ASSETS / "faces"
"""Entries shipped with the package (read-only; looked up before the user cache)."""
FORMAT = 1
"""Version of the entry layout and of the detection rules; raise it when either changes."""


def enabled() -> bool:
    """False when ``MMFLOW_FACE_CACHE`` is ``off`` / ``0`` / ``false`` / ``no``."""
    return os.environ.get("MMFLOW_FACE_CACHE", "on").strip().lower() not in {"off", "0", "false", "no"}


def _dlib_version() -> str:
    try:
        return metadata.version("dlib-bin")
    except metadata.PackageNotFoundError:
        try:
            return metadata.version("dlib")
        except metadata.PackageNotFoundError:
            return "unknown"


def detection_key(image: np.ndarray) -> str:
    """The cache key of the default detector's result on ``image``: its pixels, shape and the detector's settings."""
    defaults = LandmarkDetector.__init__.__defaults__  # the default detector's settings, known without loading dlib
    digest = hashlib.sha256()
    settings = {"format": FORMAT, "dlib": _dlib_version(), "defaults": defaults, "max_side": DETECTION_MAX_SIDE}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(repr((image.shape, str(image.dtype))).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _entry(detection: Detection, faces: int) -> dict:
    return {
        "format": FORMAT,
        "box": [float(v) for v in detection.box],
        "score": float(detection.score),
        "landmarks": np.asarray(detection.landmarks, dtype=np.float32).tolist(),
        "faces": int(faces),
    }


def _read(path: Path) -> tuple[Detection, int] | None:
    """The detection stored at ``path``; None (and a debug line) for a missing, foreign or damaged entry."""
    try:
        entry = json.loads(path.read_text())
        landmarks = np.asarray(entry["landmarks"], dtype=np.float32)
        box = tuple(float(v) for v in entry["box"])
        if entry.get("format") != FORMAT or landmarks.shape != (NUM_LANDMARKS, 2) or len(box) != 4:
            raise ValueError("unexpected layout")
        if not np.all(np.isfinite(landmarks)):
            raise ValueError("non-finite landmarks")
        return Detection(box, float(entry["score"]), landmarks), int(entry.get("faces", 1))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.debug("ignoring face cache entry %s: %s", path, error)
        return None


def _write(path: Path, detection: Detection, faces: int) -> None:
    """Store an entry atomically; a cache that cannot be written is skipped (the detection is still returned)."""
    try:
        write_text_atomic(path, json.dumps(_entry(detection, faces)))
    except OSError as error:
        logger.debug("face cache not written (%s): %s", path, error)


def detect_portrait(image: np.ndarray, name: str | None = None) -> Detection:
    """The default detector's face in ``image`` (``LandmarkDetector.detect``), read from the cache when this
    portrait was seen before. Errors (no face, too small) are raised every time and never cached."""
    if not enabled():
        return default_detector().detect(image, name)
    key, cache = detection_key(image), user_cache_folder("faces")
    for folder in (SHIPPED, cache):
        found = _read(folder / f"{key}.json")
        if found is not None:
            detection, faces = found
            if faces > 1:
                warn_several_faces(name, faces, detection)
            return detection
    detector = default_detector()
    detections = detector.detect_all(image)
    detection = detector.choose(detections, name)
    _write(cache / f"{key}.json", detection, len(detections))
    return detection
