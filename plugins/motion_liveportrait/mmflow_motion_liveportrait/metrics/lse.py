"""LSE-C / LSE-D: Wav2Lip's lip-sync scores, SyncNet's offset search over a face crop and the speech's MFCCs.

Protocol (Rudrabha/Wav2Lip ``evaluation/scores_LSE`` at 5c90fa9b, running joonson/syncnet_python at 6efbb1c3):

* the video at 25 frames/s and its audio as 16 kHz mono int16 (the reference converts with ffmpeg);
* the face track: one box per frame, their size ``s = max(w, h) / 2`` and centre median-filtered over 13 frames;
  the crop spans ``[y - s, y + s (1 + 2c)]`` × ``[x - s (1 + c), x + s (1 + c)]`` with ``c = 0.4`` (the frame
  padded with grey 110), resized to 224×224, BGR, values 0-255 (``run_pipeline.py: crop_video``);
* video features of every 5-frame window, audio features of the matching 20 MFCC frames (4 per video frame)
  (``SyncNetInstance.evaluate``);
* for each window the distances to the audio features shifted by ``-vshift..vshift`` frames (zero features past
  the ends), their mean over windows per shift; min distance, offset ``vshift - argmin``, confidence
  ``median - min`` (``calc_pdist``, vshift 15 in ``calculate_scores_real_videos.py``);
* LSE-D = the mean of the min distances, LSE-C = the mean of the confidences over the scored videos.

Differences (docs/evaluation.md): the face box comes from dlib's HOG detector (S3FD's weights are not available
offline), the largest face per frame, one track from its first to its last detection (gaps interpolated, as the
reference interpolates its tracks) instead of scene cuts and IoU tracking with a 100-frame minimum; the crop is
resized in memory (the reference writes it as XVID and reads it back through JPEG).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmflow.codecs import InputError
from mmflow.evaluation.metric import Sample
from mmflow.evaluation.options import DEVICE_HELP, check_options, choice_option, device_option, int_option

from .evaluator_weights import weights_path
from .mfcc import mfcc
from .syncnet import WEIGHTS_FILE, WEIGHTS_URL, SyncNetV2, load_syncnet

logger = logging.getLogger(__name__)

FPS = 25
SAMPLE_RATE = 16000
WINDOW = 5  # video frames per SyncNet window
MFCC_PER_FRAME = 4  # 100 Hz MFCCs / 25 Hz video
VSHIFT = 15
CROP_SCALE = 0.4
CROP_SIZE = 224
PAD_VALUE = 110
SMOOTH_KERNEL = 13
MIN_TRACK = SMOOTH_KERNEL // 2 + 1
NET_BATCH = 20
MODES = ("generated", "reference")


# ------------------------------------------------------------------------------------------------ the offset search


@dataclass(frozen=True)
class SyncResult:
    """One video's scores: ``offset`` in frames (audio relative to video), ``min_dist`` (LSE-D), ``conf`` (LSE-C)
    and ``mean_dists``, the mean distance per shift ``-vshift..vshift`` (index ``vshift - offset`` is the min)."""

    offset: int
    min_dist: float
    conf: float
    mean_dists: np.ndarray


def shifted_distances(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """``T × (2 vshift + 1)``: distance of video window t to audio window ``t + k - vshift`` (zeros outside).

    ``torch.nn.functional.pairwise_distance`` as ``calc_pdist`` uses it (``‖a - b + 1e-6‖₂``)."""
    count = len(video_feats)
    padded = F.pad(audio_feats, (0, 0, vshift, vshift))
    windows = padded.unfold(0, 2 * vshift + 1, 1)[:count].transpose(1, 2)  # T × (2v+1) × D
    return F.pairwise_distance(video_feats[:, None, :].expand_as(windows), windows)


def sync_scores(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int = VSHIFT) -> SyncResult:
    """The offset, min distance and confidence of ``SyncNetInstance.evaluate`` from the two feature sequences."""
    if len(video_feats) == 0 or video_feats.shape != audio_feats.shape:
        raise ValueError(f"sync_scores needs two non-empty feature sequences of one shape; got "
                         f"{tuple(video_feats.shape)} and {tuple(audio_feats.shape)}.")
    mean = shifted_distances(video_feats.float(), audio_feats.float(), vshift).mean(0)
    minval, minidx = torch.min(mean, 0)
    conf = torch.median(mean) - minval
    return SyncResult(vshift - int(minidx), float(minval), float(conf), mean.numpy())


# ------------------------------------------------------------------------------------------------ inputs


def _require_av():
    from ..video import _require_av as require

    return require()


def decode_audio(path: str | Path, rate: int | None = None, sample_format: str = "flt") -> tuple[np.ndarray, int]:
    """The first audio stream of a file (wav, mp4, ...) as mono samples and their rate, through FFmpeg's
    resampler (``rate``: resample to it; ``sample_format``: ``flt`` for [-1, 1] floats, ``s16`` for int16);
    empty when the file has no audio."""
    av = _require_av()
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, dtype=np.float32 if sample_format == "flt" else np.int16), rate or 0
        stream = container.streams.audio[0]
        rate = rate or int(stream.rate)
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        expected = None
        if stream.duration is not None and stream.time_base is not None:  # AAC pads its last frame: trim it
            expected = round(float(stream.duration * stream.time_base) * rate)
    dtype = np.float32 if sample_format == "flt" else np.int16
    samples = np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype=dtype)
    return (samples[:expected] if expected else samples), rate


def read_audio_16k(path: str | Path) -> np.ndarray:
    """16 kHz mono int16 samples, as the reference's ``ffmpeg -ac 1 -acodec pcm_s16le -ar 16000`` makes them."""
    return decode_audio(path, SAMPLE_RATE, "s16")[0]


def iter_frames(path: str | Path, fps: float = FPS) -> Iterator[np.ndarray]:
    """RGB frames on the constant grid ``k / fps`` (sample-and-hold, as ``video.read_video``), one at a time, so
    that long or large videos are never held in memory whole."""
    av = _require_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream; LSE scores a video with a face.")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        start = held = last = None
        k = 0
        for index, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else index / rate
            start = time if start is None else start
            last = time - start
            while held is not None and k / fps < last - 1e-6:
                yield held
                k += 1
            held = frame.to_ndarray(format="rgb24")
        while held is not None and k / fps <= last + 1e-6:
            yield held
            k += 1


# ------------------------------------------------------------------------------------------------ the face crop


def face_boxes(path: str | Path, detector=None) -> list[tuple[float, float, float, float] | None]:
    """The largest dlib face box ``(left, top, right, bottom)`` in every frame (None where none is found)."""
    from ..face import default_detector

    detector = detector or default_detector()
    boxes = []
    for frame in iter_frames(path):
        faces = detector.detect_all(frame)
        boxes.append(tuple(faces[0].box) if faces else None)
    return boxes


def track(boxes: Sequence[tuple[float, float, float, float] | None]) -> tuple[int, np.ndarray] | None:
    """The face track: its first frame and ``n × 3`` smoothed ``(size, centre y, centre x)`` per frame, from the
    first to the last detection, gaps interpolated (``track_shot``) and median-filtered (``crop_video``)."""
    from scipy.signal import medfilt

    found = [i for i, box in enumerate(boxes) if box is not None]
    if not found:
        return None
    first, last = found[0], found[-1]
    frames = np.arange(first, last + 1)
    known = np.array([boxes[i] for i in found], dtype=np.float64)
    box = np.stack([np.interp(frames, found, known[:, j]) for j in range(4)], axis=1)
    size = np.maximum(box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]) / 2
    dets = [size, (box[:, 1] + box[:, 3]) / 2, (box[:, 0] + box[:, 2]) / 2]
    with warnings.catch_warnings():  # tracks shorter than the kernel: zero-padded, as in the reference
        warnings.simplefilter("ignore", UserWarning)
        return first, np.stack([medfilt(values, kernel_size=SMOOTH_KERNEL) for values in dets], axis=1)


def crop_face(frame: np.ndarray, size: float, y: float, x: float, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """``crop_video``'s crop of one RGB frame → ``224×224×3`` uint8 RGB: the frame padded by ``int(s (1 + 2c))``
    with grey 110, the window ``[y - s, y + s(1+2c)) × [x - s(1+c), x + s(1+c))``, bilinear resize."""
    pad = int(size * (1 + 2 * crop_scale))
    my, mx = y + pad, x + pad
    top, bottom = int(my - size), int(my + size * (1 + 2 * crop_scale))
    left, right = int(mx - size * (1 + crop_scale)), int(mx + size * (1 + crop_scale))
    height, width = frame.shape[:2]
    canvas = np.full((bottom - top, right - left, 3), PAD_VALUE, dtype=np.uint8)
    # the window in unpadded frame coordinates, clipped to the frame (the rest stays grey, as np.pad makes it)
    src_top, src_left = max(top - pad, 0), max(left - pad, 0)
    src_bottom, src_right = min(bottom - pad, height), min(right - pad, width)
    if src_bottom > src_top and src_right > src_left:
        canvas[src_top - (top - pad):src_bottom - (top - pad), src_left - (left - pad):src_right - (left - pad)] = (
            frame[src_top:src_bottom, src_left:src_right])
    tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", align_corners=False)
    return resized[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def face_crops(path: str | Path, detector=None) -> tuple[int, np.ndarray] | str:
    """The first tracked frame and the ``n×224×224×3`` uint8 RGB crops of the face track, or why there are none.

    A track needs ``MIN_TRACK`` frames: the 13-frame median filter pads with zeros, so a shorter track's sizes
    are zeros at its ends (the reference keeps only tracks over 100 frames)."""
    tracked = track(face_boxes(path, detector))
    if tracked is None:
        return "no face found"
    first, dets = tracked
    if len(dets) < MIN_TRACK:
        return f"face track of {len(dets)} frames, under {MIN_TRACK}"
    crops = []
    for k, frame in enumerate(iter_frames(path)):
        if first <= k < first + len(dets):
            crops.append(crop_face(frame, *dets[k - first]))
    return first, np.stack(crops)


# ------------------------------------------------------------------------------------------------ features


@torch.no_grad()
def syncnet_features(model: SyncNetV2, crops: np.ndarray, audio: np.ndarray,
                     device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Video and audio embeddings of every 5-frame window, as ``SyncNetInstance.evaluate`` batches them.

    crops: ``T×224×224×3`` uint8 RGB (given to the net as BGR 0-255); audio: 16 kHz int16 from the same instant.
    """
    cepstra = torch.from_numpy(mfcc(audio.astype(np.float64), SAMPLE_RATE).T.copy()).float()  # 13 × N
    length = min(len(crops), math.floor(len(audio) / (SAMPLE_RATE // FPS)))
    last = length - WINDOW
    if last <= 0:
        raise InputError(f"LSE needs at least {WINDOW + 1} frames of face and audio (0.24 s); got {len(crops)} "
                         f"frames and {len(audio) / SAMPLE_RATE:.2f} s of audio.")
    video = torch.from_numpy(crops[..., ::-1].copy()).permute(3, 0, 1, 2).float()  # 3 × T × H × W, BGR
    video_feats, audio_feats = [], []
    for i in range(0, last, NET_BATCH):
        starts = range(i, min(last, i + NET_BATCH))
        lips = torch.stack([video[:, s:s + WINDOW] for s in starts]).to(device)
        mels = torch.stack([cepstra[None, :, s * MFCC_PER_FRAME:s * MFCC_PER_FRAME + 20] for s in starts]).to(device)
        video_feats.append(model.forward_lip(lips).cpu())
        audio_feats.append(model.forward_aud(mels).cpu())
    return torch.cat(video_feats), torch.cat(audio_feats)


# ------------------------------------------------------------------------------------------------ the metric


class LSEMetric:
    """``lse``: per video offset, LSE-D (min distance) and LSE-C (confidence); summary: their means."""

    name = "lse"
    higher_is_better = True
    directions = {"lse_c": True, "lse_d": False}
    batch_size = 4

    def __init__(self, model: SyncNetV2, audio: str = "generated", vshift: int = VSHIFT,
                 device: str | torch.device = "cpu",
                 detector=None, video: str = "generated") -> None:
        self.model = model.to(device).eval()
        self.audio = audio
        self.video = video
        self.vshift = vshift
        self.device = device
        self.detector = detector
        self.needs = frozenset({"audio"}) if video == "reference" else frozenset({"video"})
        self.reference_needs = frozenset(kind for kind, mode in (("audio", audio), ("video", video))
                                         if mode == "reference")

    def _video_of(self, sample: Sample) -> Path:
        return Path(sample.reference["video"] if self.video == "reference" else sample.files["video"])

    def _audio_of(self, sample: Sample) -> tuple[Path, np.ndarray]:
        if self.audio == "reference":
            path = Path(sample.reference["audio"])
            return path, read_audio_16k(path)
        if self.video == "reference":  # dubbing: the generated speech over the original clip
            path = Path(sample.files["audio"])
            audio = read_audio_16k(path)
        else:
            path = Path(sample.files["video"])
            audio = read_audio_16k(path)
            if audio.size == 0 and "audio" in sample.files:  # a silent video next to its wav
                path = Path(sample.files["audio"])
                audio = read_audio_16k(path)
        if audio.size == 0:
            raise InputError(f"{sample.id}: {path} has no sound and the sample has no audio file; LSE scores a "
                             f"video against its speech (or use lse.audio=reference).")
        return path, audio

    def score_one(self, sample: Sample) -> dict[str, Any]:
        video_path = self._video_of(sample)
        audio_path, audio = self._audio_of(sample)
        cropped = face_crops(video_path, self.detector)
        if isinstance(cropped, str):
            logger.warning("%s: %s in %s; not scored by lse", sample.id, cropped, video_path)
            return {"scored": False, "reason": cropped, "audio": str(audio_path)}
        first, crops = cropped
        hop = SAMPLE_RATE // FPS
        audio = audio[first * hop:(first + len(crops)) * hop]  # the track's span, as crop_video cuts the audio
        video_feats, audio_feats = syncnet_features(self.model, crops, audio, self.device)
        result = sync_scores(video_feats, audio_feats, self.vshift)
        return {"scored": True, "lse_d": result.min_dist, "lse_c": result.conf, "offset": result.offset,
                "frames": len(crops), "first_frame": first, "audio": str(audio_path)}

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        return [self.score_one(sample) for sample in samples]

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        scored = [row for row in rows if row.get("scored")]
        if not scored:
            return {"lse_c": float("nan"), "lse_d": float("nan"), "scored": 0.0, "unscored": float(len(rows))}
        return {"lse_c": float(np.mean([row["lse_c"] for row in scored])),
                "lse_d": float(np.mean([row["lse_d"] for row in scored])),
                "abs_offset": float(np.mean([abs(row["offset"]) for row in scored])),
                "scored": float(len(scored)), "unscored": float(len(rows) - len(scored))}


OPTIONS = {
    "weights": f"the official {WEIGHTS_FILE} (required)",
    "audio": "generated (default: the video's own sound) or reference (the ground-truth audio: the paper's ablation)",
    "video": "generated (default) or reference (the original video with the generated audio: dubbing)",
    "vshift": f"frames searched each way (default {VSHIFT})",
    "device": DEVICE_HELP,
}


def make_lse(options: Mapping[str, str], workdir: Path) -> LSEMetric:
    """Factory for ``lse``. Options: ``weights`` (the official ``syncnet_v2.model``, required), ``audio``
    (``generated``: the video's own sound, default; ``reference``: the benchmark's ground-truth audio, the
    paper's ablation mode), ``video`` (``generated``, default; ``reference``: the benchmark's original video with
    the generated audio, for dubbing), ``vshift`` (frames searched each way, 15), ``device`` (default cuda when
    present)."""
    options = check_options("metric", "lse", options, OPTIONS)
    audio, video = (choice_option(options, key, "generated", MODES) for key in ("audio", "video"))
    vshift = int_option(options, "vshift", VSHIFT, minimum=0)
    device = device_option(options)
    if audio == video == "reference":
        raise InputError("lse.audio=reference and lse.video=reference together score the references against "
                         "each other; set one of them (reference audio: talking heads, reference video: dubbing).")
    weights = weights_path(options, WEIGHTS_FILE, f"SyncNet v2, {WEIGHTS_URL}")
    return LSEMetric(load_syncnet(weights), audio=audio, video=video, vshift=vshift, device=device)
