"""Motion from a driving video: LivePortrait keypoint motion (needs M's weights) or a weights-free mouth signal.

* :func:`extract_motion` tracks the face, crops every frame the way the source is cropped (``face.py``) and runs
  the motion extractor M on the crops in batches; the result is a :class:`~.motion_template.MotionTemplate` (scale, R,
  exp, t with t_z = 0 as in the official templates, canonical kp, transformed keypoints x_s, and eye/lip open
  ratios), i.e. what LivePortrait's ``make_motion_template`` stores and JAM-Flow trains on.
* :func:`extract_mouth_opening` needs no network weights: per frame, the inner-lip gap divided by the distance of
  the outer eye corners (a face-size measure that, unlike the mouth width, does not change when the lips stretch).
  It is a lip-sync signal for tests and metrics and a sanity check of rendered videos.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoints import LivePortraitWeights
from .face import (
    INNER_LIP_BOTTOM,
    INNER_LIP_TOP,
    LEFT_EYE_CORNERS,
    LIVEPORTRAIT_CROP,
    OUTER_MOUTH_CORNERS,
    RIGHT_EYE_CORNERS,
    CropConfig,
    FaceTracker,
    LandmarkDetector,
    crop_from_landmarks,
    load_image,
)
from .keypoints import KeypointInfo
from .motion_template import MotionTemplate
from .networks import MotionExtractor
from .render import move
from .video import VideoData, read_video

logger = logging.getLogger(__name__)

VideoInput = str | os.PathLike | VideoData | np.ndarray | Sequence[np.ndarray]

# 68-point eyelid pairs (upper, lower) for the eye-open ratio.
LEFT_EYELIDS = ((37, 41), (38, 40))
RIGHT_EYELIDS = ((43, 47), (44, 46))


def _frames_and_fps(video: VideoInput, fps: float | None) -> tuple[list[np.ndarray], float, str]:
    """Any video input → RGB uint8 frames, fps and a name for messages."""
    if isinstance(video, str | os.PathLike):
        data = read_video(video, fps=fps, read_audio=False)
        return list(data.frames), data.fps, str(video)
    if isinstance(video, VideoData):
        return list(video.frames), video.fps, "the video"
    frames = list(video)
    if not frames:
        raise ValueError("the driving video has no frames.")
    frames = [load_image(frame, f"frame {i}") for i, frame in enumerate(frames)]
    return frames, 25.0 if fps is None else float(fps), "the frames"


def track_landmarks(
    frames: Sequence[np.ndarray], detector: LandmarkDetector | None = None, name: str = "the video"
) -> np.ndarray:
    """68 landmarks per frame, ``T×68×2``, detecting once and tracking (see :class:`~.face.FaceTracker`)."""
    tracker = FaceTracker(detector)
    return np.stack([tracker(frame, f"{name} frame {i}") for i, frame in enumerate(frames)])


def _distance(landmarks: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(landmarks[..., a, :] - landmarks[..., b, :], axis=-1)


def mouth_opening_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks ``...×68×2`` → inner-lip gap / outer-eye-corner distance, shape ``...``."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    face_size = _distance(landmarks, LEFT_EYE_CORNERS[0], RIGHT_EYE_CORNERS[1])
    return (_distance(landmarks, INNER_LIP_TOP, INNER_LIP_BOTTOM) / np.maximum(face_size, 1e-6)).astype(np.float32)


def lip_open_ratio(landmarks: np.ndarray) -> np.ndarray:
    """``...×68×2`` → ``...×1``: inner-lip gap / mouth width, the 68-point analogue of LivePortrait's ``c_lip``."""
    gap = _distance(landmarks, INNER_LIP_TOP, INNER_LIP_BOTTOM)
    return (gap / np.maximum(_distance(landmarks, *OUTER_MOUTH_CORNERS), 1e-6))[..., None].astype(np.float32)


def eye_open_ratios(landmarks: np.ndarray) -> np.ndarray:
    """``...×68×2`` → ``...×2``: eyelid gap / eye width per eye, the 68-point analogue of ``c_eyes``."""
    ratios = []
    for lids, corners in ((LEFT_EYELIDS, LEFT_EYE_CORNERS), (RIGHT_EYELIDS, RIGHT_EYE_CORNERS)):
        gap = np.mean([_distance(landmarks, top, bottom) for top, bottom in lids], axis=0)
        ratios.append(gap / np.maximum(_distance(landmarks, *corners), 1e-6))
    return np.stack(ratios, axis=-1).astype(np.float32)


def extract_mouth_opening(
    video: VideoInput, *, detector: LandmarkDetector | None = None, fps: float | None = None
) -> np.ndarray:
    """Weights-free mouth-opening signal ``T`` (float32) of a driving video (path, :class:`VideoData` or frames).

    fps: resample a file to this constant rate first (see :func:`~.video.read_video`).
    """
    frames, _, name = _frames_and_fps(video, fps)
    return mouth_opening_from_landmarks(track_landmarks(frames, detector, name))


def _motion_extractor(model) -> MotionExtractor:
    if isinstance(model, MotionExtractor):
        return model
    if isinstance(model, LivePortraitWeights):
        return model.motion_extractor()
    if isinstance(model, str | os.PathLike):
        return LivePortraitWeights(model).motion_extractor()
    raise TypeError(
        f"expected a MotionExtractor, LivePortraitWeights or the official weights folder; got {type(model).__name__}."
    )


@torch.no_grad()
def extract_motion(
    video: VideoInput,
    motion_extractor: MotionExtractor | LivePortraitWeights | str | os.PathLike,
    *,
    fps: float | None = None,
    detector: LandmarkDetector | None = None,
    crop_config: CropConfig = LIVEPORTRAIT_CROP,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> MotionTemplate:
    """LivePortrait motion of every frame of a driving video → :class:`MotionTemplate` at the video's fps.

    video: a file path, a :class:`VideoData` (keeps its own fps) or frames (``T×H×W×3`` or a list of ``H×W×3``).
    fps: resample a file to this constant rate; for bare frames, their rate (default 25).
    """
    frames, rate, name = _frames_and_fps(video, fps)
    model = move(_motion_extractor(motion_extractor), device, dtype)
    landmarks = track_landmarks(frames, detector, name)  # T×68×2
    infos = []
    with tqdm(total=len(frames), desc="motion extraction", unit="frame", disable=not progress) as bar:
        for start in range(0, len(frames), batch_size):
            crops = [
                crop_from_landmarks(frame, points, crop_config).tensor()
                for frame, points in zip(frames[start : start + batch_size], landmarks[start : start + batch_size],
                                         strict=True)
            ]
            raw = model(torch.cat(crops).to(device=device, dtype=dtype))  # B×3×256×256 → heads
            infos.append(KeypointInfo.from_motion_output({k: v.float().cpu() for k, v in raw.items()}))
            bar.update(len(crops))
    info = KeypointInfo(*(torch.cat([getattr(i, f) for i in infos]) for f in ("pitch", "yaw", "roll", "t", "exp",
                                                                             "scale", "kp")))
    t = info.t.clone()
    t[:, 2] = 0  # LivePortrait drops t_z; the official templates store it as 0
    return MotionTemplate(
        scale=info.scale.numpy(),
        R=info.rotation.numpy(),
        exp=info.exp.numpy(),
        t=t.numpy(),
        kp=info.kp.numpy(),
        x_s=info.transformed().numpy(),
        c_eyes=eye_open_ratios(landmarks),
        c_lip=lip_open_ratio(landmarks),
        fps=rate,
    )
