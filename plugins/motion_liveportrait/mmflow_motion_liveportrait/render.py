"""Turn per-frame LivePortrait motion into video frames of a source portrait.

Two renderers share one interface, ``render(motion) -> uint8 T×H×W×3``:

* :class:`LivePortraitRenderer` runs the real networks (paper §3.1, LivePortrait's ``warp_decode``): the source's
  appearance feature ``f_s = F(crop)`` and keypoints ``x_s`` are computed once; each driving frame becomes
  keypoints ``x_d = s·(x_c R + e) + t`` (Eq. 2), optionally corrected by the stitching MLP, then
  ``G(W(f_s, x_d, x_s))`` gives a 512² crop that is pasted back into the source frame. Frames are batched.
* :class:`~.fallback.LandmarkFallbackRenderer` needs no weights: a landmark-anchored 2-D warp of the portrait
  that reads the whole motion (mouth, eyelids, brows, gaze, approximate head pose; see ``fallback.py``), for
  demos and tests on machines without the official weights.

Both also stream: ``video(motion)`` returns a :class:`~.frames.RenderedVideo` whose frames are rendered batch by
batch as a writer reads them, so a long clip is never held in memory whole (``render`` gives them all at once).

Motion is absolute by default (the expression, pose, scale and translation given are used as they are; what is
not given comes from the source). ``relative=True`` applies LivePortrait's default relative driving instead
(changes with respect to the first driving frame are added to the source's motion; liveportrait.md §5).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from .checkpoints import LivePortraitWeights
from .face import (
    LIVEPORTRAIT_CROP,
    MAX_RENDER_SIDE,
    CropConfig,
    FaceCrop,
    LandmarkDetector,
    PasteBack,
    crop_from_landmarks,
    fit_frame,
    load_portrait,
    render_side,
    to_uint8,
)
from .face_cache import detect_portrait
from .frames import StreamingRenderer
from .keypoints import (
    MOUTH_KEYPOINT_INDICES,
    NUM_KEYPOINTS,
    KeypointInfo,
    merge_expression,
    rotation_matrix,
    transform_keypoints,
)
from .motion_template import MotionTemplate
from .networks import (
    AppearanceFeatureExtractor,
    MotionExtractor,
    SPADEDecoder,
    StitchingRetargetingNetwork,
    WarpingNetwork,
)

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | np.ndarray


# --------------------------------------------------------------------------------------------------------------
# Driving motion
# --------------------------------------------------------------------------------------------------------------


def _tensor(value, name: str, shape_tail: tuple[int, ...], frames: int | None) -> torch.Tensor | None:
    if value is None:
        return None
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    tensor = tensor.detach().to(torch.float32)
    if shape_tail == () and tensor.ndim == 2 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]  # T×1 angles
    if tensor.shape[1:] != shape_tail or (frames is not None and tensor.shape[0] != frames):
        expected = ("T" if frames is None else str(frames),) + tuple(str(s) for s in shape_tail)
        raise ValueError(f"DrivingMotion.{name} must have shape {'×'.join(expected)}; got {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"DrivingMotion.{name} contains NaN or infinite values.")
    return tensor


@dataclass
class DrivingMotion:
    """Per-frame motion of ``T`` frames; ``None`` fields are taken from the source portrait.

    exp: ``T×21×3`` expression offsets. pitch, yaw, roll: ``T`` degrees, or rotation: ``T×3×3`` (row-vector
    convention of :func:`~.keypoints.rotation_matrix`); give one or the other. scale: ``T×1``. t: ``T×3`` (t_z is
    ignored, as in LivePortrait).
    """

    exp: torch.Tensor
    pitch: torch.Tensor | None = None
    yaw: torch.Tensor | None = None
    roll: torch.Tensor | None = None
    rotation: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    t: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.exp = _tensor(self.exp, "exp", (NUM_KEYPOINTS, 3), None)
        frames = self.exp.shape[0]
        if frames == 0:
            raise ValueError("DrivingMotion needs at least one frame.")
        for name in ("pitch", "yaw", "roll"):
            setattr(self, name, _tensor(getattr(self, name), name, (), frames))
        angles = [a is not None for a in (self.pitch, self.yaw, self.roll)]
        if any(angles) and not all(angles):
            raise ValueError("DrivingMotion: give all of pitch, yaw and roll, or none of them.")
        self.rotation = _tensor(self.rotation, "rotation", (3, 3), frames)
        if self.rotation is not None and all(angles):
            raise ValueError("DrivingMotion: give either pitch/yaw/roll or rotation, not both.")
        self.scale = _tensor(self.scale, "scale", (1,), frames)
        self.t = _tensor(self.t, "t", (3,), frames)

    @property
    def num_frames(self) -> int:
        return self.exp.shape[0]

    def rotations(self) -> torch.Tensor | None:
        """``T×3×3`` or None when the pose is not given."""
        if self.rotation is not None:
            return self.rotation
        if self.pitch is not None:
            return rotation_matrix(self.pitch, self.yaw, self.roll)
        return None

    def slice(self, start: int, stop: int) -> DrivingMotion:
        """Frames ``start:stop`` (no copy)."""
        return DrivingMotion(
            **{f.name: (v[start:stop] if (v := getattr(self, f.name)) is not None else None) for f in fields(self)}
        )

    @classmethod
    def from_mouth(
        cls,
        e_mouth,
        e_rest,
        mouth_indices: Sequence[int] = MOUTH_KEYPOINT_INDICES,
        **pose,
    ) -> DrivingMotion:
        """Build from JAM-Flow's split expression: ``e_mouth`` ``T×4×3`` and ``e_rest`` ``T×17×3``."""
        e_mouth = torch.as_tensor(np.asarray(e_mouth) if not isinstance(e_mouth, torch.Tensor) else e_mouth)
        e_rest = torch.as_tensor(np.asarray(e_rest) if not isinstance(e_rest, torch.Tensor) else e_rest)
        return cls(exp=merge_expression(e_mouth.float(), e_rest.float(), mouth_indices), **pose)

    @classmethod
    def from_template(cls, template: MotionTemplate) -> DrivingMotion:
        """Use a :class:`~.motion_template.MotionTemplate` (LivePortrait ``.pkl`` / ``.npz``) as driving motion."""
        return cls(exp=template.exp, rotation=template.R, scale=template.scale, t=template.t)


def as_driving_motion(motion) -> DrivingMotion:
    """Accept a :class:`DrivingMotion`, a :class:`MotionTemplate` or a bare ``T×21×3`` expression array."""
    if isinstance(motion, DrivingMotion):
        return motion
    if isinstance(motion, MotionTemplate):
        return DrivingMotion.from_template(motion)
    if isinstance(motion, np.ndarray | torch.Tensor):
        return DrivingMotion(exp=motion)
    raise TypeError(
        f"motion must be a DrivingMotion, a MotionTemplate or a T×21×3 expression array; got {type(motion).__name__}."
    )


# --------------------------------------------------------------------------------------------------------------
# LivePortrait renderer
# --------------------------------------------------------------------------------------------------------------


def portrait_and_face(
    source: ImageInput,
    size: int | None,
    face: FaceCrop | None,
    detector: LandmarkDetector | None,
    crop_config: CropConfig,
    recrop: bool = False,
) -> tuple[np.ndarray, FaceCrop]:
    """The frame to paste into, at the size asked for (``face.render_side``), and the face crop mapped onto it.

    The face is found and cropped on the portrait at its working resolution (``face.load_portrait``: its own
    size, at most ``MAX_RENDER_SIDE``, or ``size`` when larger), so a small ``size`` does not shrink the face
    below what the detector and the crop need; the crop is then mapped onto the resized frame. A given ``face``
    must come from a frame of the working resolution; ``recrop`` re-crops it with ``crop_config`` when its size
    differs."""
    name = str(source) if isinstance(source, str | os.PathLike) else None
    work = load_portrait(source, size if size is not None and size > MAX_RENDER_SIDE else None, name)
    if face is None:
        found = detector.detect(work, name) if detector is not None else detect_portrait(work, name)
        face = crop_from_landmarks(work, found.landmarks, crop_config)
    elif tuple(face.frame_size) != work.shape[:2]:
        raise ValueError(
            f"face was cropped from a {face.frame_size[1]}×{face.frame_size[0]} frame but the portrait works at "
            f"{work.shape[1]}×{work.shape[0]}; pass face=None or crop that frame."
        )
    elif recrop and face.size != crop_config.size:
        face = crop_from_landmarks(work, face.landmarks, crop_config)
    frame = fit_frame(work, render_side(size, work.shape[1], work.shape[0]), name)
    return frame, (face if frame is work else face.for_frame(frame))



@dataclass
class LivePortraitNetworks:
    """The networks a renderer needs: F, M, W, G and (optionally) the stitching MLP S."""

    appearance_feature_extractor: AppearanceFeatureExtractor
    motion_extractor: MotionExtractor
    warping_module: WarpingNetwork
    spade_generator: SPADEDecoder
    stitching: StitchingRetargetingNetwork | None = None

    @classmethod
    def from_weights(cls, weights: LivePortraitWeights | str | os.PathLike, stitching: bool = True):
        """Load the official files (a :class:`LivePortraitWeights` or its folder) strictly, in eval mode."""
        weights = weights if isinstance(weights, LivePortraitWeights) else LivePortraitWeights(weights)
        return cls(
            appearance_feature_extractor=weights.appearance_feature_extractor(),
            motion_extractor=weights.motion_extractor(),
            warping_module=weights.warping_module(),
            spade_generator=weights.spade_generator(),
            stitching=weights.stitching() if stitching else None,
        )

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> LivePortraitNetworks:
        """Move F, M, W, G to ``device``/``dtype`` and S to ``device`` in fp32 (LivePortrait keeps S in fp32)."""
        for name in ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator"):
            move(getattr(self, name), device, dtype)
        if self.stitching is not None:
            move(self.stitching, device, torch.float32)
        return self


def move(model: torch.nn.Module, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` on ``device`` in ``dtype``, eval mode. Casts only when needed: diffusers warns on every
    ``ModelMixin.to(dtype=...)`` call, even a no-op one."""
    model.to(device)
    if next(model.parameters()).dtype != dtype:
        model.to(dtype)
    return model.eval()


def stitch(stitching: StitchingRetargetingNetwork, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """LivePortrait's stitching: ``x_d + Δ`` where S(x_s ‖ x_d) gives Δ for all keypoints plus Δ(tx, ty).

    x_s: ``B×K×3`` (or ``1×K×3``), x_d: ``B×K×3`` → ``B×K×3``. It keeps the shoulders/background of the pasted
    crop aligned with the source frame.
    """
    batch, num_kp = x_d.shape[:2]
    x_s = x_s.expand(batch, -1, -1)
    delta = stitching(torch.cat([x_s.reshape(batch, -1), x_d.reshape(batch, -1)], dim=1))  # B×(3K+2)
    out = x_d + delta[:, : 3 * num_kp].reshape(batch, num_kp, 3)
    shift = torch.zeros_like(out[:, :1])  # B×1×3
    shift[..., :2] = delta[:, None, 3 * num_kp : 3 * num_kp + 2]
    return out + shift


class LivePortraitRenderer(StreamingRenderer):
    """Render driving motion onto one source portrait with LivePortrait's networks.

    networks: :class:`LivePortraitNetworks`, or the official weight folder / :class:`LivePortraitWeights`.
    source: the portrait (path or ``H×W×3`` array). face: its crop when already computed (else detected).
    paste: put the 512² output back into the source frame (else return the crops). use_stitching: apply S
    (if the networks have one). relative: LivePortrait's relative driving (module docstring). size: longer side
    of the pasted frames (default: the portrait's, at most ``face.MAX_RENDER_SIDE``; see ``face.load_portrait``).
    The networks are moved to ``device``/``dtype`` in place. F and M run once here, on the source crop.
    """

    def __init__(
        self,
        networks: LivePortraitNetworks | LivePortraitWeights | str | os.PathLike,
        source: ImageInput,
        *,
        face: FaceCrop | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 4,
        paste: bool = True,
        use_stitching: bool = True,
        relative: bool = False,
        detector: LandmarkDetector | None = None,
        crop_config: CropConfig = LIVEPORTRAIT_CROP,
        size: int | None = None,
    ) -> None:
        if not isinstance(networks, LivePortraitNetworks):
            networks = LivePortraitNetworks.from_weights(networks)
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1; got {batch_size}.")
        self.device, self.dtype = torch.device(device), dtype
        if self.device.type == "cpu" and dtype != torch.float32:
            raise ValueError(
                f"dtype {dtype} is not supported on CPU: W's 3-D average pooling has no half-precision CPU kernel "
                f"in torch. Use dtype=torch.float32 on CPU, or a CUDA device for fp16/bf16."
            )
        self.networks = networks.to(self.device, dtype)
        self.batch_size, self.paste, self.relative = batch_size, paste, relative
        self.use_stitching = use_stitching and networks.stitching is not None
        self.source_frame, face = portrait_and_face(source, size, face, detector, crop_config)
        self.face = face
        self._prepare_source()
        self._paste: PasteBack | None = None

    @torch.no_grad()
    def _prepare_source(self) -> None:
        """F and M on the source crop, once: ``f_s`` ``1×C×D×64×64`` and the source keypoint info."""
        image = self.face.tensor().to(self.device, self.dtype)  # 1×3×256×256
        self.f_s = self.networks.appearance_feature_extractor(image)
        raw = self.networks.motion_extractor(image)
        self.source_info = KeypointInfo.from_motion_output({k: v.float() for k, v in raw.items()})
        self.x_s = self.source_info.transformed()  # 1×21×3

    @torch.no_grad()
    def driving_keypoints(self, motion) -> torch.Tensor:
        """Driving keypoints ``x_d`` ``T×21×3`` (fp32, before stitching) for ``motion``."""
        motion = as_driving_motion(motion)
        source = self.source_info
        frames = motion.num_frames
        exp = motion.exp.to(self.device)
        rotation = motion.rotations()
        scale, t = motion.scale, motion.t
        source_rotation = source.rotation  # 1×3×3
        if self.relative:
            exp = source.exp + exp - exp[:1]
            if rotation is not None:
                rotation = rotation.to(self.device)
                rotation = rotation @ rotation[:1].transpose(1, 2) @ source_rotation
            if scale is not None:
                scale = source.scale * scale.to(self.device) / scale[:1].to(self.device)
            if t is not None:
                t = source.t + t.to(self.device) - t[:1].to(self.device)
        rotation = source_rotation.expand(frames, -1, -1) if rotation is None else rotation.to(self.device)
        scale = source.scale.expand(frames, -1) if scale is None else scale.to(self.device)
        t = source.t.expand(frames, -1) if t is None else t.to(self.device)
        kp = source.kp.expand(frames, -1, -1)
        return transform_keypoints(kp, rotation, exp, scale, t)

    @torch.no_grad()
    def render_crops(self, x_d: torch.Tensor) -> torch.Tensor:
        """Driving keypoints ``B×21×3`` → G's output ``B×3×512×512`` in [0, 1] (stitching applied if enabled)."""
        if self.use_stitching:
            x_d = stitch(self.networks.stitching, self.x_s, x_d)
        batch = x_d.shape[0]
        warped = self.networks.warping_module(
            self.f_s.expand(batch, -1, -1, -1, -1),
            kp_driving=x_d.to(self.dtype),
            kp_source=self.x_s.to(self.dtype).expand(batch, -1, -1),
        )
        return self.networks.spade_generator(warped.out).float()

    @property
    def frame_shape(self) -> tuple[int, int, int] | None:
        """``H×W×3`` of every pasted frame (None without paste: G's output size, known once rendered)."""
        return self.source_frame.shape if self.paste else None

    def prepare(self, motion) -> torch.Tensor:
        """What :meth:`render_frames` reads, from the whole motion: the driving keypoints."""
        return self.driving_keypoints(motion)

    @torch.no_grad()
    def render_frames(self, x_d: torch.Tensor, index) -> np.ndarray:
        """The frames at ``index`` (ints) of the driving keypoints ``x_d`` → ``B×H×W×3`` uint8, in batches."""
        index = torch.as_tensor(np.asarray(index, dtype=np.int64), device=x_d.device)
        frames = []
        for start in range(0, len(index), self.batch_size):
            crops = self.render_crops(x_d[index[start : start + self.batch_size]])
            if self.paste:
                if self._paste is None or self._paste.crop_size != crops.shape[-1]:
                    size = crops.shape[-1]
                    self._paste = PasteBack(self.source_frame, self.face.matrix_for(size), size, device=self.device)
                crops = self._paste(crops)
            frames.append(to_uint8(crops))
        return np.concatenate(frames)


# --------------------------------------------------------------------------------------------------------------
# Weights-free fallback renderer
# --------------------------------------------------------------------------------------------------------------

# Mouth opening from the expression: kp 19's y offset dominates speech motion (PC1, 42 % of the variance in the
# official templates, liveportrait.md §3b) and grows downwards when the mouth opens (the official "lip open"
# slider adds to it). LivePortrait's closed-lip reference (lip_array.pkl) has 19y = −0.0151.
MOUTH_OPEN_KEYPOINT = 19
CLOSED_MOUTH_EXP_Y = -0.015
OPEN_MOUTH_EXP_SPAN = 0.05  # 19y change from closed to fully open (heuristic; |exp| ≤ 0.08 in the templates)


def mouth_opening_from_expression(
    exp, closed: float = CLOSED_MOUTH_EXP_Y, span: float = OPEN_MOUTH_EXP_SPAN
) -> np.ndarray:
    """Expression ``T×21×3`` → mouth opening ``T`` in [0, 1] from kp 19's y offset (a heuristic, see above)."""
    exp = np.asarray(exp.detach().cpu() if isinstance(exp, torch.Tensor) else exp, dtype=np.float32)
    if exp.ndim != 3 or exp.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"exp must be T×{NUM_KEYPOINTS}×3; got shape {exp.shape}.")
    return np.clip((exp[:, MOUTH_OPEN_KEYPOINT, 1] - closed) / span, 0.0, 1.0)


def expression_for_opening(opening, closed: float = CLOSED_MOUTH_EXP_Y, span: float = OPEN_MOUTH_EXP_SPAN):
    """Inverse of :func:`mouth_opening_from_expression` on a neutral expression: opening ``T`` → ``T×21×3``."""
    opening = np.asarray(opening, dtype=np.float32).reshape(-1)
    exp = np.zeros((len(opening), NUM_KEYPOINTS, 3), dtype=np.float32)
    exp[:, MOUTH_OPEN_KEYPOINT, 1] = closed + span * opening
    return exp


def make_renderer(source: ImageInput, weights=None, **kwargs):
    """:class:`LivePortraitRenderer` when ``weights`` (folder, :class:`LivePortraitWeights` or
    :class:`LivePortraitNetworks`) is given, else the :class:`LandmarkFallbackRenderer` (which logs a warning)."""
    if weights is None:
        return LandmarkFallbackRenderer(source, **kwargs)
    return LivePortraitRenderer(weights, source, **kwargs)


from .fallback import LandmarkFallbackRenderer  # noqa: E402  (it builds on the helpers above)
