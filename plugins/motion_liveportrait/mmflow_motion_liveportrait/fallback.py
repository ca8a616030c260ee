"""The weights-free renderer: the whole face the motion describes, drawn by warping the source portrait.

Used whenever no LivePortrait weights are given. It reads every part of the motion at the expression layout of
``expression_layout.py`` (the layout the synthetic corpus and the idle face write):

* mouth opening (kp 19's y, :func:`~.render.mouth_opening_from_expression`): the jaw drops; the gap between the
  lips gets an inner mouth with depth (darker towards the back), upper teeth as soon as it opens and lower teeth
  when it opens wide, coloured like the portrait's own teeth when they show; rounding (``oU``, ``u:``) narrows
  the lips and spreading widens them;
* eyelid closure (the ``BLINK`` direction): the upper lids slide down over the eyes;
* brow height (brow keypoints' y) and gaze (eye keypoints' x), as changes from the first frame, in pixels;
* head pose, when given (a template's rotation, scale, translation), as changes from the first frame: roll,
  scale and translation move the whole face (a similarity folded into the paste-back); yaw and pitch rotate the
  landmarks, given depths by a generic 3-D face (``face3d.py``), and project them (weak perspective); the face
  region follows by a thin-plate spline through the landmarks, fixed on the region's border (no ears, hair or
  neck turn, and nothing hidden by the turn is occluded: it is a smooth warp, not a 3-D render).

Everything is one displacement field on the face region of an upright 512² crop, one bilinear resample, a few
painted layers and one resample back into the frame, so a frame costs a few milliseconds on one CPU core
(``benchmarks/fallback_render.py``); a turn adds two resamples of a displacement field. It is a demo
renderer: no hair, ear or neck motion, no occlusion.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import face3d
from .expression_layout import (
    BLINK,
    BROW_KEYPOINT_INDICES,
    EYE_KEYPOINT_INDICES,
    ROUND,
    SPREAD,
    amount,
    mean_offset,
)
from .face import CHIN, CropConfig, FaceCrop, LandmarkDetector, apply_matrix, to_tensor
from .frames import StreamingRenderer
from .render import (
    CLOSED_MOUTH_EXP_Y,
    OPEN_MOUTH_EXP_SPAN,
    ImageInput,
    as_driving_motion,
    expression_for_opening,
    mouth_opening_from_expression,
    portrait_and_face,
)

logger = logging.getLogger(__name__)

# Expression units → crop pixels at 512² for brows and gaze (heuristic: the corpus's brow drift of ±0.002 moves
# the brows by ±5 px, a visible lift; its gaze wander of ±0.001 the irises by ±1.5 px).
BROW_PIXELS_PER_UNIT = 2500.0
GAZE_PIXELS_PER_UNIT = 1500.0
TURN_GRID_STEP = 8  # crop pixels between the samples of the head-turn warp (bilinear in between)
TURN_ANCHORS_PER_SIDE = 8  # fixed points on each side of the face region: the turn fades to nothing there
ROUND_NARROWING, SPREAD_WIDENING = 0.25, 0.12  # horizontal lip scale change per unit of rounding / spread

CAVITY_RGB = (0.20, 0.07, 0.08)
DEFAULT_TEETH_RGB = (0.86, 0.84, 0.78)
LASH_RGB = (0.12, 0.09, 0.09)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _blur(row: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 1-D profile (zero outside), ``sigma`` in samples."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2)
    return np.convolve(row, kernel / kernel.sum(), mode="same")


def _window(field: np.ndarray, margin: int = 1) -> tuple[slice, slice]:
    """Row and column slices of the bounding box where ``field`` is non-zero (plus ``margin``)."""
    rows, cols = np.flatnonzero(np.abs(field).max(axis=1) > 1e-4), np.flatnonzero(np.abs(field).max(axis=0) > 1e-4)
    if len(rows) == 0:
        return slice(0, 0), slice(0, 0)
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1), slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def relative_pose(motion) -> dict[str, np.ndarray] | None:
    """Pose changes from the first frame: ``pitch, yaw, roll`` degrees, ``scale`` ratio and ``t`` (x, y) in
    keypoint units, each ``T`` (``T×2`` for t); None when the motion carries no pose at all."""
    rotation, scale, t = motion.rotations(), motion.scale, motion.t
    if rotation is None and scale is None and t is None:
        return None
    frames = motion.num_frames
    pose = {"pitch": np.zeros(frames), "yaw": np.zeros(frames), "roll": np.zeros(frames),
            "scale": np.ones(frames), "t": np.zeros((frames, 2))}
    if rotation is not None:
        rotation = rotation.double().numpy()
        turn = np.swapaxes(rotation[:1].transpose(0, 2, 1) @ rotation, 1, 2)  # (R_0ᵀ R_t)ᵀ = Rz·Ry·Rx
        pose["pitch"] = np.degrees(np.arctan2(turn[:, 2, 1], turn[:, 2, 2]))
        pose["yaw"] = np.degrees(np.arcsin(np.clip(-turn[:, 2, 0], -1, 1)))
        pose["roll"] = np.degrees(np.arctan2(turn[:, 1, 0], turn[:, 0, 0]))
    if scale is not None:
        scale = scale.double().numpy()[:, 0]
        pose["scale"] = scale / scale[0]
    if t is not None:
        t = t.double().numpy()[:, :2]
        pose["t"] = t - t[:1]
    return pose


class LandmarkFallbackRenderer(StreamingRenderer):
    """Weights-free talking portrait (module docstring): ``render(motion) -> uint8 T×H×W×3``.

    source: the portrait (path or ``H×W×3`` array). face: its crop when already computed. size: longer side of
    the frames (``face.load_portrait``). max_drop: jaw drop at full opening, in mouth widths.
    """

    CROP = CropConfig(size=512, warp_size=512)
    side_margin = 0.3
    """Face widths of room beside the face outline in the warped region: a yaw moves the outline by up to a
    tenth of the face width, and dlib's jaw points follow a turn only with this room (0.12 read 15° as 10°)."""

    def __init__(
        self,
        source: ImageInput,
        *,
        face: FaceCrop | None = None,
        detector: LandmarkDetector | None = None,
        max_drop: float = 0.4,
        batch_size: int = 8,
        closed_exp_y: float = CLOSED_MOUTH_EXP_Y,
        open_exp_span: float = OPEN_MOUTH_EXP_SPAN,
        size: int | None = None,
    ) -> None:
        logger.warning(
            "No LivePortrait weights: using the landmark fallback renderer, a 2-D warp of the portrait (mouth, "
            "eyelids, brows, gaze and an approximate head pose). Pass the official weights folder for real "
            "LivePortrait rendering."
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1; got {batch_size}.")
        self.source_frame, self.face = portrait_and_face(source, size, face, detector, self.CROP, recrop=True)
        self.max_drop, self.batch_size = max_drop, batch_size
        self.closed_exp_y, self.open_exp_span = closed_exp_y, open_exp_span
        self._build_fields()

    # ------------------------------------------------------------------------------------------ per source

    def _build_fields(self) -> None:
        """Per-source constants on the face region (ROI) of the crop: the displacement bases of every motion
        part, the mouth geometry, the paste mask and the teeth colour."""
        size = self.face.size
        lm = self.face.landmarks_crop.astype(np.float64)  # 68×2 crop pixels
        self._lm = lm
        face_width = float(np.linalg.norm(lm[16] - lm[0]))
        chin_y = float(lm[CHIN, 1])
        mouth_width = float(np.linalg.norm(lm[54] - lm[48]))
        centre_x = float(lm[[48, 54], 0].mean())
        midline = np.array([lm[60], (lm[61] + lm[67]) / 2, (lm[62] + lm[66]) / 2, (lm[63] + lm[65]) / 2, lm[64]])
        midline = midline[np.argsort(midline[:, 0])]
        self.drop_px = self.max_drop * mouth_width
        neck = max(0.6 * (chin_y - float(np.interp(centre_x, midline[:, 0], midline[:, 1]))), 2.0 * self.drop_px)
        brow_gap = float(np.mean(lm[36:48, 1]) - np.mean(lm[17:27, 1]))  # brows → eyes

        # ROI: brows (and some forehead) to below the chin, jaw to jaw; the paste mask is its inscribed ellipse.
        left, right = lm[:, 0].min() - self.side_margin * face_width, lm[:, 0].max() + self.side_margin * face_width
        top, bottom = lm[17:27, 1].min() - 1.2 * brow_gap, chin_y + neck
        x0, x1 = max(int(math.floor(left)), 0), min(int(math.ceil(right)) + 1, size)
        y0, y1 = max(int(math.floor(top)), 0), min(int(math.ceil(bottom)) + 1, size)
        self._roi = (x0, y0, x1, y1)
        xs, ys = np.arange(x0, x1, dtype=np.float64)[None, :], np.arange(y0, y1, dtype=np.float64)[:, None]
        self._xs, self._ys = _tensor(xs), _tensor(ys)

        # Mouth: the jaw below the inner-lip midline drops rigidly, fading sideways and below the chin.
        midline_y = np.interp(xs[0], midline[:, 0], midline[:, 1])[None, :]
        jaw_half = max(float(abs(lm[12, 0] - lm[4, 0])) / 2, 0.6 * mouth_width)
        core = 0.3 * mouth_width
        sideways = 1 - _smoothstep((np.abs(xs - centre_x) - core) / max(jaw_half - core, 1.0))
        below_chin = 1 - _smoothstep((ys - chin_y) / neck)
        self._below_midline = _tensor(ys - midline_y)  # > 0 below the lips' midline
        self._jaw_falloff = _tensor(sideways * below_chin)
        self._sideways = _tensor(sideways)
        self._centre_x, self._inner_half = centre_x, max(abs(lm[64, 0] - lm[60, 0]) / 2, 1.0)
        self._mouth_width = mouth_width
        mouth_y = float(lm[48:68, 1].mean())
        radius = np.sqrt(((xs - centre_x) / (0.9 * mouth_width)) ** 2 + ((ys - mouth_y) / (0.55 * mouth_width)) ** 2)
        self._lip_weight = _tensor(_smoothstep((1.0 - radius) / 0.5) * (xs - centre_x))  # × k: horizontal scale
        self._teeth_rgb, self._source_teeth = self._source_teeth_colour(lm)

        # Eyes: per column, the opening between the lids (gaze moves what is inside), and the lid's skin colour.
        gaze = np.zeros((len(ys), len(xs[0])))
        brow = np.zeros_like(gaze)
        self._build_lids(lm)
        for eye, brow_points in ((range(36, 42), range(17, 22)), (range(42, 48), range(22, 27))):
            points = lm[list(eye)]
            corner_l, corner_r = points[0], points[3]
            upper = np.interp(xs[0], *self._sorted(points[[0, 1, 2, 3]]))[None, :]
            lower = np.interp(xs[0], *self._sorted(points[[0, 5, 4, 3]]))[None, :]
            inside_x = (xs >= min(corner_l[0], corner_r[0])) & (xs <= max(corner_l[0], corner_r[0]))
            opening = np.where(inside_x, np.maximum(lower - upper, 0.0), 0.0)  # 1×W
            gaze += np.clip((ys - upper) / 1.5, 0, 1) * np.clip((lower - ys) / 1.5, 0, 1) * np.clip(opening / 2, 0, 1)
            # Brow: the band from the forehead down to just above the lid moves; fades beyond the brow's ends.
            brow_xy = lm[list(brow_points)]
            brow_y = np.interp(xs[0], *self._sorted(brow_xy))[None, :]
            ends = (brow_xy[:, 0].min(), brow_xy[:, 0].max())
            along = 1 - _smoothstep((np.maximum(ends[0] - xs, xs - ends[1])) / (0.08 * face_width))
            up = _smoothstep((ys - (brow_y - 1.2 * brow_gap)) / (0.7 * brow_gap))
            down = 1 - _smoothstep((ys - (brow_y + 0.2 * brow_gap)) / (0.5 * brow_gap))
            brow = np.maximum(brow, along * up * down)
        self._gaze, self._brow = _tensor(gaze), _tensor(brow)
        reach = (np.abs(xs - centre_x) <= 1.6 * self._inner_half) & (ys >= midline_y.min() - 2) \
            & (ys <= midline_y.max() + self.drop_px + 2)
        self._mouth_window = _window(reach.astype(np.float64))
        self._eye_width = float(np.linalg.norm(lm[39] - lm[36]))
        self._brow_gap = brow_gap

        self._build_turn(lm)
        self._face_width = face_width
        self._face_centre = lm.mean(axis=0)

        radius = np.sqrt(((xs - (x0 + x1 - 1) / 2) / ((x1 - x0) / 2)) ** 2 + ((ys - (y0 + y1 - 1) / 2) / ((y1 - y0) / 2)) ** 2)
        self._mask = _tensor(_smoothstep((1.0 - radius) / 0.25))[None, None]  # 1×1×h×w
        self._crop = self.face.tensor()  # 1×3×S×S
        self._frame = to_tensor(self.source_frame)  # 1×3×H×W
        self.mouth_box = self._mouth_box_in_frame(lm, mouth_width)

    def _build_turn(self, lm: np.ndarray) -> None:
        """Yaw and pitch: the landmarks get depths from the generic 3-D face (``face3d.lift``); a turn rotates them
        about their centroid and projects them (weak perspective). The face region follows by a thin-plate spline
        through the landmarks' displacements, anchored (no displacement) on the region's border; it is linear in
        the displacements, so ``_turn_basis`` maps the 68 displacements to the spline on a coarse grid at once."""
        x0, y0, x1, y1 = self._roi
        self._lifted = face3d.lift(lm)  # 68×3 crop pixels
        self._pivot = self._lifted.mean(axis=0)
        side = np.linspace(0.0, 1.0, TURN_ANCHORS_PER_SIDE, endpoint=False)
        left, top, right, bottom = x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5
        anchors = np.concatenate([
            np.stack([left + side * (right - left), np.full_like(side, top)], 1),
            np.stack([np.full_like(side, right), top + side * (bottom - top)], 1),
            np.stack([right - side * (right - left), np.full_like(side, bottom)], 1),
            np.stack([np.full_like(side, left), bottom - side * (bottom - top)], 1),
        ])
        controls = np.concatenate([lm, anchors])

        def kernel(points: np.ndarray) -> np.ndarray:  # [U(|p − c|) | 1 x y], U(r) = r² log r
            squared = ((points[:, None, :] - controls[None, :, :]) ** 2).sum(-1)
            radial = 0.5 * squared * np.log(np.maximum(squared, 1e-12))
            return np.concatenate([radial, np.ones((len(points), 1)), points], axis=1)

        system = np.zeros((len(controls) + 3, len(controls) + 3))
        system[: len(controls)] = kernel(controls)
        system[len(controls):, : len(controls)] = system[: len(controls), len(controls):].T
        self._turn_shape = (math.ceil((y1 - y0) / TURN_GRID_STEP) + 1, math.ceil((x1 - x0) / TURN_GRID_STEP) + 1)
        gy, gx = np.meshgrid(np.linspace(y0, y1 - 1, self._turn_shape[0]), np.linspace(x0, x1 - 1, self._turn_shape[1]),
                             indexing="ij")
        weights = np.linalg.solve(system.T, kernel(np.stack([gx.ravel(), gy.ravel()], 1)).T).T  # grid × controls
        self._turn_basis = _tensor(weights[:, : len(lm)])  # anchors and the affine part carry no displacement

    def _turn_fields(self, controls: dict[str, np.ndarray], index) -> torch.Tensor | None:
        """Per frame of the batch, the turn's forward displacement on the coarse grid ``B×2×gh×gw`` (crop pixels;
        the grid spans the face region's first to last pixel centre), or None when no frame of the batch turns."""
        pitch, yaw = controls["pitch"][index], controls["yaw"][index]
        if not (np.abs(pitch).max() > 1e-6 or np.abs(yaw).max() > 1e-6):
            return None
        rotation = face3d.rotation(pitch, yaw, np.zeros_like(yaw))  # B×3×3; roll is the paste's similarity
        moved = (self._lifted - self._pivot) @ np.swapaxes(rotation, 1, 2) + self._pivot
        shift = _tensor(moved[..., :2] - self._lifted[:, :2])  # B×68×2
        return (self._turn_basis @ shift).permute(0, 2, 1).reshape(len(shift), 2, *self._turn_shape)

    def _build_lids(self, lm: np.ndarray) -> None:
        """Per crop column over both eyes: the upper lid's y and the opening down to the lower lid (smooth arcs
        through the six eye landmarks), for lowering the upper lids onto the source crop."""
        size = self.face.size
        xs = np.arange(size, dtype=np.float64)
        upper_y, opening, margin = np.zeros(size), np.zeros(size), np.zeros(size)
        for eye in (range(36, 42), range(42, 48)):
            points = lm[list(eye)]
            upper = np.polyval(np.polyfit(points[[0, 1, 2, 3], 0], points[[0, 1, 2, 3], 1], 2), xs)
            lower = np.polyval(np.polyfit(points[[0, 5, 4, 3], 0], points[[0, 5, 4, 3], 1], 2), xs)
            low, high = sorted((points[0, 0], points[3, 0]))
            inside = (xs >= low) & (xs <= high)
            height = max(float((lower - upper)[inside].max(initial=0.0)), 2.0)
            # The lid covers a little more than the fitted opening (landmarks sit on the lid margins, the lashes
            # lie above them), more towards the middle of the eye.
            upper_y[inside] = upper[inside] - 1
            opening[inside] = np.maximum(lower - upper, 0.0)[inside] + 2
            margin[inside] = 1 + 0.3 * height * np.sqrt(np.clip(opening[inside] / (height + 2), 0, 1))
        cols = np.flatnonzero(opening > 0)
        if len(cols) == 0:  # degenerate eye landmarks: nothing to close
            cols = np.array([0])
        rows = slice(max(int((upper_y - margin)[cols].min()) - 2, 0), min(int((upper_y + opening)[cols].max()) + 4, size))
        cols = slice(max(cols.min() - 1, 0), min(cols.max() + 2, size))
        self._lid_window = (rows, cols)
        self._lid_rel = _tensor(np.arange(rows.start, rows.stop)[:, None] - upper_y[None, cols])  # h×w
        self._lid_opening = _tensor(opening[cols])  # w
        self._lid_margin = _tensor(margin[cols])  # w: how far above the fitted lid the closing lid covers
        # Lid colour per column: the skin just above the lashes, smoothed sideways (no crease or lash structure).
        image = self.face.image.astype(np.float64) / 255
        skin_rows = np.clip(np.round(upper_y - margin - 2), 0, size - 1).astype(int)
        colour = image[skin_rows, np.arange(size)].T  # 3×S
        colour = np.stack([_blur(channel, 0.02 * size) for channel in colour * (opening > 0)])
        colour /= np.maximum(_blur((opening > 0).astype(np.float64), 0.02 * size), 1e-6)
        self._lid_colour = _tensor(colour[:, cols])[None, :, None, :]  # 1×3×1×w

    def _closed_lids(self, closure: torch.Tensor) -> torch.Tensor:
        """The source crop with each frame's upper lids lowered by ``closure`` (``B×1×1``) → ``B×3×S×S``."""
        batch = closure.shape[0]
        if float(closure.max()) < 1e-3:
            return self._crop.expand(batch, -1, -1, -1)
        source = self._crop.expand(batch, -1, -1, -1).clone()
        rows, cols = self._lid_window
        lowered = closure * self._lid_opening  # B×1×w: how far each column's lid has come down
        rel = self._lid_rel
        eye = self._lid_opening > 0
        # Soft lid edge; above the fitted lid it covers the source's own upper lashes, as the lid comes down.
        cover = ((lowered - rel + 1.0) / 2).clamp(0, 1) * ((rel + self._lid_margin * closure) / 2).clamp(0, 1) * eye
        edge = 0.6 * closure * torch.exp(-((rel - lowered) / 1.3) ** 2) * eye
        # The lid is the skin just above the lashes stretched down (one row per column: no crease or lash
        # structure comes with it), slightly darker towards its edge.
        lid = self._lid_colour * (1 - 0.1 * (rel / lowered.clamp(min=1)).clamp(0, 1)).unsqueeze(1)
        window = torch.lerp(source[..., rows, cols], lid, cover.unsqueeze(1))
        source[..., rows, cols] = torch.lerp(window, torch.tensor(LASH_RGB).view(1, 3, 1, 1), edge.unsqueeze(1))
        return source

    @staticmethod
    def _sorted(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(points[:, 0])
        return points[order, 0], points[order, 1]

    def _source_teeth_colour(self, lm: np.ndarray) -> tuple[torch.Tensor, bool]:
        """The portrait's teeth colour, and whether its teeth show between the lips (else a default colour)."""
        from PIL import Image, ImageDraw

        mask = Image.new("L", (self.face.size, self.face.size), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in lm[60:68]], fill=1)
        inside = np.asarray(mask, dtype=bool)
        pixels = self.face.image[inside].astype(np.float64) / 255
        bright = pixels[(pixels.mean(axis=1) > 0.55) & (np.ptp(pixels, axis=1) < 0.25)]
        visible = len(bright) >= 12 and len(bright) >= 0.3 * len(pixels)
        colour = np.median(bright, axis=0) if visible else np.array(DEFAULT_TEETH_RGB)
        return torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1), visible

    def _mouth_box_in_frame(self, lm: np.ndarray, mouth_width: float) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` frame pixels covering the mouth at full opening (for measurements)."""
        margin = 0.1 * mouth_width
        left, right = lm[48, 0] - margin, lm[54, 0] + margin
        top, bottom = lm[50:53, 1].min() - margin, lm[56:59, 1].max() + self.drop_px + margin
        corners = np.array([[left, top], [right, top], [left, bottom], [right, bottom]])
        frame_points = apply_matrix(self.face.crop_to_frame, corners)
        low, high = np.floor(frame_points.min(axis=0)), np.ceil(frame_points.max(axis=0))
        height, width = self.source_frame.shape[:2]
        return (max(int(low[0]), 0), max(int(low[1]), 0), min(int(high[0]), width), min(int(high[1]), height))

    # ------------------------------------------------------------------------------------------ per frame

    def openings(self, motion) -> np.ndarray:
        """Mouth opening ``T`` in [0, 1] read from the motion's expression."""
        motion = as_driving_motion(motion)
        return mouth_opening_from_expression(motion.exp, self.closed_exp_y, self.open_exp_span)

    def controls(self, motion) -> dict[str, np.ndarray]:
        """What the renderer reads from ``motion``, per frame: opening, lip scale, eye closure, brow raise and
        gaze (crop pixels), and the relative pose (:func:`relative_pose`, identity when absent)."""
        motion = as_driving_motion(motion)
        exp = motion.exp.double().numpy()
        scale = self.face.size / 512
        brow = -(mean_offset(exp, BROW_KEYPOINT_INDICES, 1) - mean_offset(exp[:1], BROW_KEYPOINT_INDICES, 1))
        gaze = mean_offset(exp, EYE_KEYPOINT_INDICES, 0) - mean_offset(exp[:1], EYE_KEYPOINT_INDICES, 0)
        frames = motion.num_frames
        pose = relative_pose(motion) or {"pitch": np.zeros(frames), "yaw": np.zeros(frames),
                                         "roll": np.zeros(frames), "scale": np.ones(frames),
                                         "t": np.zeros((frames, 2))}
        return {
            "opening": mouth_opening_from_expression(exp, self.closed_exp_y, self.open_exp_span),
            "lip_scale": (ROUND_NARROWING * np.clip(amount(exp, ROUND), -0.5, 1.5)
                          - SPREAD_WIDENING * np.clip(amount(exp, SPREAD), -0.5, 1.5)),
            "closure": np.clip(amount(exp, BLINK), 0.0, 1.0),
            "brow": np.clip(brow * BROW_PIXELS_PER_UNIT * scale, -0.4 * self._brow_gap, 0.4 * self._brow_gap),
            "gaze": np.clip(gaze * GAZE_PIXELS_PER_UNIT * scale, -0.15 * self._eye_width, 0.15 * self._eye_width),
            **pose,
        }

    def _pose_matrices(self, controls: dict[str, np.ndarray], index: slice) -> np.ndarray:
        """``B×3×3`` frame pixels → crop pixels of the unposed face: the crop map after the inverse of each
        frame's similarity (roll, scale, translation about the face centre, in crop pixels)."""
        matrices = []
        centre = self._face_centre
        for roll, scale, shift in zip(controls["roll"][index], controls["scale"][index], controls["t"][index],
                                      strict=True):
            angle = math.radians(roll)
            linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            pose = np.eye(3)
            pose[:2, :2] = linear
            pose[:2, 2] = centre + shift * self.face.size / 2 - linear @ centre
            matrices.append(np.linalg.inv(pose) @ self.face.frame_to_crop)
        return np.stack(matrices)

    @torch.no_grad()
    def _render_batch(self, controls: dict[str, np.ndarray], index: slice) -> torch.Tensor:
        """One batch → the face region ``B×3×h×w`` in crop pixels."""
        def column(name: str) -> torch.Tensor:
            return torch.as_tensor(controls[name][index], dtype=torch.float32).view(-1, 1, 1)

        opening, lip_scale, closure = column("opening"), column("lip_scale"), column("closure")
        drop = opening * self.drop_px
        below = self._below_midline
        jaw = torch.minimum(below.clamp(min=0), drop) * self._jaw_falloff
        dy = jaw - column("brow") * self._brow
        dx = column("gaze") * self._gaze - lip_scale * self._lip_weight
        size = self.face.size
        grid = torch.stack([(2 * (self._xs - dx) + 1) / size - 1, (2 * (self._ys - dy) + 1) / size - 1], dim=-1)
        face = F.grid_sample(self._closed_lids(closure), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)  # B×3×h×w

        rows, cols = self._mouth_window
        face[..., rows, cols] = self._paint_mouth(face[..., rows, cols], drop, lip_scale, rows, cols)
        return face

    def _paint_mouth(self, face: torch.Tensor, drop, lip_scale, rows: slice, cols: slice) -> torch.Tensor:
        """Paint the gap between the lips (``face``: the mouth window ``B×3×h×w``): per column its height; upper
        teeth first, then a cavity that darkens only as it deepens (no thin dark line), lower teeth when wide."""
        below = self._below_midline[rows, cols]
        xs = self._xs[:, cols]
        half = self._inner_half / (1 + lip_scale)
        lens = torch.sqrt((1 - ((xs - self._centre_x) / half) ** 2).clamp(min=0)) * self._sideways[:, cols]  # B×1×w
        height = drop * lens
        gap = below.clamp(0, 1) * (height - below).clamp(0, 1)  # B×h×w, anti-aliased
        width = self._mouth_width
        upper = torch.minimum(height, torch.full_like(height, 0.09 * width))
        lower = (height - upper - 0.08 * width).clamp(0, 0.065 * width)
        upper_teeth = (upper - below + 0.5).clamp(0, 1)
        lower_teeth = (below - (height - lower) + 0.5).clamp(0, 1) * (lower > 0.5)
        # A thin cavity is a soft shadow under the teeth; it darkens only as it grows (no thin dark line).
        open_depth = ((height - upper - lower - 0.05 * width) / (0.1 * width)).clamp(0, 1)
        middle = 1 - (2 * below / height.clamp(min=1e-3) - 1).abs()
        depth = (lens * middle * open_depth).clamp(0, 1).unsqueeze(1)  # B×1×h×w, 1 = the back of the mouth
        teeth = self._teeth_rgb * (0.72 + 0.28 * lens.unsqueeze(1))  # darker towards the mouth corners
        shadow = torch.lerp(teeth * 0.8, torch.tensor(CAVITY_RGB).view(1, 3, 1, 1), open_depth.unsqueeze(1))
        cavity = shadow * (1 - 0.75 * depth)
        # Teeth: the portrait's own where they show (the warp stretches the upper teeth down and carries the lower
        # ones with the jaw), else painted in a teeth colour.
        upper_fill, lower_fill = (face, face) if self._source_teeth else (teeth, teeth * 0.9)
        fill = torch.lerp(cavity, upper_fill, upper_teeth.unsqueeze(1))
        if not self._source_teeth:
            fill = torch.lerp(fill, lower_fill, lower_teeth.unsqueeze(1))
        return torch.lerp(face, fill, gap.unsqueeze(1))

    @torch.no_grad()
    def _paste(self, region: torch.Tensor, matrices: np.ndarray, frames: np.ndarray,
               turn: torch.Tensor | None = None) -> None:
        """Blend the face regions into ``frames`` (``B×H×W×3`` uint8, in place) through ``matrices``, turned by the
        forward displacements ``turn`` (``B×2×h×w``, :meth:`_turn_fields`) when given."""
        x0, y0, x1, y1 = self._roi
        height, width = self.source_frame.shape[:2]
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=np.float64)
        in_frame = np.concatenate([(np.linalg.inv(m) @ corners.T).T[:, :2] for m in matrices])
        left, top = (max(int(v), 0) for v in np.floor(in_frame.min(axis=0)))
        right, bottom = np.ceil(in_frame.max(axis=0)).astype(int) + 1
        right, bottom = min(int(right), width), min(int(bottom), height)
        if right <= left or bottom <= top:
            return
        # frame pixel → ROI grid coordinates in [-1, 1], one affine map per frame.
        to_grid = np.array([[2 / (x1 - x0), 0, (1 - 2 * x0) / (x1 - x0) - 1],
                            [0, 2 / (y1 - y0), (1 - 2 * y0) / (y1 - y0) - 1], [0, 0, 1]])
        maps = _tensor((to_grid @ matrices)[:, :2]).transpose(1, 2)  # B×3×2
        gy, gx = torch.meshgrid(torch.arange(top, bottom, dtype=torch.float32),
                                torch.arange(left, right, dtype=torch.float32), indexing="ij")
        points = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, -1, 3)
        grid = (points @ maps).view(len(matrices), bottom - top, right - left, 2)
        if turn is not None:  # where each turned pixel comes from: p = q − D(p), two fixed-point steps
            size = torch.tensor([x1 - x0, y1 - y0], dtype=torch.float32)
            # D lives on a grid from the region's first to last pixel centre (align_corners=True coordinates).
            corners = (grid + 1) * size / (size - 1) - 1 - 1 / (size - 1)
            back = corners
            for _ in range(2):
                shift = F.grid_sample(turn, back, mode="bilinear", padding_mode="zeros", align_corners=True)
                back = corners - shift.permute(0, 2, 3, 1) * 2 / (size - 1)
            grid = (back + 1 + 1 / (size - 1)) * (size - 1) / size - 1
        pasted = F.grid_sample(region, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mask = F.grid_sample(self._mask.expand(len(matrices), -1, -1, -1), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=False)
        background = self._frame[..., top:bottom, left:right]
        blended = torch.lerp(background, pasted, mask)
        frames[:, top:bottom, left:right] = (blended.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``H×W×3`` of every rendered frame (the portrait's working size)."""
        return self.source_frame.shape

    def prepare(self, motion) -> dict[str, np.ndarray]:
        """What :meth:`render_frames` reads, from the whole motion (:meth:`controls`)."""
        return self.controls(motion)

    def render_frames(self, controls: dict[str, np.ndarray], index) -> np.ndarray:
        """The frames at ``index`` (ints) of the motion ``controls`` came from → ``B×H×W×3`` uint8."""
        index = np.asarray(index, dtype=np.int64)
        frames = np.empty((len(index), *self.source_frame.shape), dtype=np.uint8)
        frames[:] = self.source_frame
        self._paste(self._render_batch(controls, index), self._pose_matrices(controls, index), frames,
                    self._turn_fields(controls, index))
        return frames

    def render_openings(self, openings, progress: bool = True) -> np.ndarray:
        """Mouth openings ``T`` in [0, 1] (a neutral face otherwise) → frames ``T×H×W×3`` uint8."""
        return self.render(expression_for_opening(np.clip(np.asarray(openings, np.float32), 0, 1)), progress)
