"""Face preparation: load a portrait, find the face, crop it the way LivePortrait does, and paste results back.

LivePortrait's networks see a 256×256 RGB crop in which the face is upright and fills a fixed share of the image
(``src/utils/crop.py`` + ``src/config/crop_config.py``): a similarity transform built from two landmark centres
(the eyes' and the lips') makes the eye→lip axis vertical; the crop is the square around the rotated landmarks,
enlarged ``scale=2.3`` times and shifted up by ``vy_ratio=-0.125`` of its size; it is warped to 512² and then
area-resized to 256². Rendered crops are put back into the frame with the inverse transform and a soft mask.

Landmarks come from dlib's HOG face detector and its 68-point shape predictor, because that is the offline
detector with bundled model files that works with numpy 2 in this environment (``dlib-bin`` for the library,
``face-recognition-models`` for the ``.dat`` files; see shared/reference/offline-components.md §6c). The official
pipeline uses InsightFace (non-commercial models) and a 203-point model; the 68 points carry the same eye and lip
centres and the same face extent, so the crop geometry is the same up to landmark noise. Licence note: dlib's
68-point model was trained on iBUG 300-W, whose terms exclude commercial use.

Choices (documented behaviour, not errors):

* grayscale input is replicated to three channels; an alpha channel (RGBA, LA, palette transparency) is
  composited over white; 16-bit and float images are rescaled to 8 bits; arrays are taken as RGB, not BGR.
* several faces: the largest one is used and a warning names how many were found.
* faces scoring below ``min_score`` are ignored (the astronaut's spacesuit gives a 0.12 false positive; frontal
  faces score above 0.5); faces smaller than ``min_face_size`` pixels are an error, because the 256² crop would
  upscale them into a blur.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DETECTOR_PACKAGES = "dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
INSTALL_HINT = f"install the offline face detector with `pip install {DETECTOR_PACKAGES}`"
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
NUM_LANDMARKS = 68

# 68-point (iBUG) indices used below.
LEFT_EYE_CORNERS = (36, 39)  # image-left eye: outer, inner corner
RIGHT_EYE_CORNERS = (42, 45)
OUTER_MOUTH_CORNERS = (48, 54)
INNER_LIP_TOP, INNER_LIP_BOTTOM = 62, 66
CHIN = 8

# Detection runs on a copy of the image whose longer side is at most this (HOG cost grows with the area; landmarks
# are then fitted on the full-resolution image).
DETECTION_MAX_SIDE = 640

MAX_IMAGE_PIXELS = 40_000_000
"""Portraits with more pixels are refused before they are decoded (an 8000×8000 JPEG is 2 MB on disk but 192 MB
decoded, and frames rendered at that size exhaust memory); 40 MP admits any camera photo up to 7300×5500."""
MAX_RENDER_SIDE = 1024
"""Default longer side of rendered frames: larger portraits are reduced to it before any work (the face crop is
512² anyway); ``size=`` asks for another output size, up to :data:`RENDER_SIDE_RANGE`."""
RENDER_SIDE_RANGE = (64, 2048)


class FaceError(ValueError):
    """Base class: the input cannot be turned into a usable face crop."""


class ImageReadError(FaceError):
    """The input is not an image this module can read."""


class NoFaceError(FaceError):
    """No face was found."""


class FaceTooSmallError(FaceError):
    """A face was found but is too small to crop to 256² without a heavy upscale."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than :data:`MAX_IMAGE_PIXELS`; refused before decoding."""


class DetectorUnavailableError(ImportError):
    """dlib or its bundled model files are not installed."""


ASSETS = Path(__file__).resolve().parent / "assets"


def demo_portrait_path() -> Path:
    """The bundled public-domain demo portrait (NASA's Eileen Collins, 512², see ``assets/LICENSE.md``)."""
    path = ASSETS / "astronaut.jpg"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the package was installed without its assets. Reinstall mmflow-motion-liveportrait "
            f"(package data 'assets/*'), or use skimage.data.astronaut() (pip install scikit-image)."
        )
    return path


# --------------------------------------------------------------------------------------------------------------
# Image loading
# --------------------------------------------------------------------------------------------------------------


def _describe(name: str | None) -> str:
    return name if name else "the image array"


def _composite_over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``H×W×3`` float in [0, 255] and ``H×W`` alpha in [0, 1] → RGB composited over a white background."""
    return rgb * alpha[..., None] + 255.0 * (1.0 - alpha[..., None])


def _array_to_rgb(array: np.ndarray, name: str | None) -> np.ndarray:
    """Any ``H×W``, ``H×W×1``, ``H×W×3`` or ``H×W×4`` array of uint8/uint16/float → ``H×W×3`` uint8 RGB."""
    what = _describe(name)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageReadError(
            f"{what}: expected an image array H×W (grayscale), H×W×3 (RGB) or H×W×4 (RGBA); got shape "
            f"{array.shape}. Pass one RGB frame, e.g. frames[0] of a video."
        )
    if min(array.shape[:2]) < 16:
        raise ImageReadError(f"{what}: image of {array.shape[1]}×{array.shape[0]} pixels is too small for a face.")
    check_pixel_count(array.shape[1], array.shape[0], name)
    if array.dtype == np.uint8:
        values = array.astype(np.float32)
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 257.0
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageReadError(f"{what}: the float image contains NaN or infinite values.")
        values = array.astype(np.float32)
        values = values * 255.0 if values.max(initial=0.0) <= 1.0 else values  # [0, 1] floats, else [0, 255]
    else:
        raise ImageReadError(
            f"{what}: unsupported dtype {array.dtype}; use uint8, uint16 or float (in [0, 1] or [0, 255])."
        )
    if values.ndim == 2:
        logger.info("%s is grayscale; replicating it to RGB", what)
        values = np.repeat(values[..., None], 3, axis=2)
    elif values.shape[2] == 4:
        logger.info("%s has an alpha channel; compositing it over white", what)
        values = _composite_over_white(values[..., :3], values[..., 3] / 255.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def check_pixel_count(width: int, height: int, name: str | None) -> None:
    """Refuse an image of more than :data:`MAX_IMAGE_PIXELS` pixels (called before it is decoded)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            f"{_describe(name)}: {width}×{height} pixels ({width * height / 1e6:.0f} MP) is over the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP (MAX_IMAGE_PIXELS) for a portrait; downscale it (e.g. to 2000 px "
            f"on the longer side) and pass that file."
        )


def _read_image_file(path: Path, max_side: int | None = None) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist; pass the path of a portrait (PNG, JPEG, ...).")
    try:
        with Image.open(path) as opened:  # lazy: only the header is read here
            check_pixel_count(*opened.size, str(path))
            if max_side is not None and opened.format == "JPEG":
                opened.draft("RGB", (max_side, max_side))  # decode at a reduced scale (≥ max_side) when it can
            opened.load()
            image = ImageOps.exif_transpose(opened)  # phone photos store their rotation in EXIF
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(
            f"{path}: not an image file Pillow can read ({error}). Pass a portrait as PNG, JPEG, WebP or BMP; "
            f"for a video use mmflow_motion_liveportrait.video.read_video and pass one of its frames."
        ) from error
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        logger.info("%s has an alpha channel; compositing it over white", path)
        return _array_to_rgb(np.asarray(image.convert("RGBA")), str(path))
    if image.mode in ("L", "1"):
        logger.info("%s is grayscale; replicating it to RGB", path)
        return _array_to_rgb(np.asarray(image.convert("L")), str(path))
    if image.mode.startswith("I"):  # 16/32-bit grayscale
        return _array_to_rgb(np.asarray(image, dtype=np.float32) / 257.0, str(path))
    return _array_to_rgb(np.asarray(image.convert("RGB")), str(path))


def load_image(image: str | os.PathLike | np.ndarray, name: str | None = None) -> np.ndarray:
    """A file path or an array → ``H×W×3`` uint8 RGB (see the module docstring for the conversions).

    Images over :data:`MAX_IMAGE_PIXELS` are refused (:class:`ImageTooLargeError`), files before decoding.
    """
    if isinstance(image, str | os.PathLike):
        return _read_image_file(Path(image))
    if isinstance(image, torch.Tensor):
        raise ImageReadError(
            f"{_describe(name)}: got a torch tensor; pass a numpy H×W×3 array (e.g. tensor.permute(1, 2, 0).numpy())."
        )
    if not isinstance(image, np.ndarray):
        raise ImageReadError(
            f"{_describe(name)}: expected a file path or a numpy array; got {type(image).__name__}."
        )
    return _array_to_rgb(image, name)


def render_side(size: int | None, width: int, height: int) -> int:
    """The longer side of rendered frames: ``size`` if given (checked), else the image's, at most
    :data:`MAX_RENDER_SIDE`."""
    if size is None:
        return min(max(width, height), MAX_RENDER_SIDE)
    low, high = RENDER_SIDE_RANGE
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not low <= size <= high:
        raise ValueError(f"size must be an integer number of pixels in [{low}, {high}] (the longer side of the "
                         f"video); got {size!r}.")
    return int(size)


def load_portrait(image: str | os.PathLike | np.ndarray, size: int | None = None, name: str | None = None) -> np.ndarray:
    """The portrait at the working resolution: ``H×W×3`` uint8 whose longer side is :func:`render_side`.

    Why: every later step (detection, crop, paste-back, the frames kept for the video) scales with the frame, so
    the frame is bounded first; a JPEG is even decoded at a reduced scale. Renderers crop the face at 512² and
    paste it back into this frame, as LivePortrait does.
    """
    from PIL import Image

    if isinstance(image, str | os.PathLike):
        name = name or str(image)
        path = Path(image)
        if path.is_file():
            try:
                with Image.open(path) as opened:
                    check_pixel_count(*opened.size, name)
                    side = render_side(size, *opened.size)
            except (OSError, SyntaxError):  # unreadable: _read_image_file names the file and the fix
                side = None
            frame = _read_image_file(path, max_side=side)
        else:
            frame = _read_image_file(path)
    else:
        frame = load_image(image, name)
    return fit_frame(frame, render_side(size, frame.shape[1], frame.shape[0]), name)


def fit_frame(frame: np.ndarray, side: int, name: str | None = None) -> np.ndarray:
    """``H×W×3`` uint8 resized so that its longer side is ``side`` (unchanged when it already is)."""
    from PIL import Image

    height, width = frame.shape[:2]
    if max(height, width) == side:
        return frame
    ratio = side / max(height, width)
    new_size = (max(16, round(width * ratio)), max(16, round(height * ratio)))
    logger.info("%s: rendering at %d×%d (from %d×%d)", _describe(name), *new_size, width, height)
    resample = Image.BOX if ratio < 1 else Image.BICUBIC  # area average when shrinking, as cv2.INTER_AREA
    return np.array(Image.fromarray(frame).resize(new_size, resample))


# --------------------------------------------------------------------------------------------------------------
# Landmark detection (dlib)
# --------------------------------------------------------------------------------------------------------------


def _require_dlib():
    try:
        import dlib
    except ImportError as error:
        raise DetectorUnavailableError(
            f"face detection needs dlib, which is not installed: {INSTALL_HINT}."
        ) from error
    return dlib


def shape_predictor_path() -> Path:
    """The 68-point model file shipped inside the installed ``face_recognition_models`` package.

    Found with ``importlib.util.find_spec`` instead of importing the package: its ``__init__`` imports
    ``pkg_resources``, which setuptools ≥ 81 no longer has. Nothing is ever downloaded.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise DetectorUnavailableError(
            f"the 68-point landmark model comes from the face-recognition-models package, which is not "
            f"installed: {INSTALL_HINT}."
        )
    path = Path(spec.origin).parent / "models" / SHAPE_PREDICTOR_FILE
    if not path.is_file():
        raise DetectorUnavailableError(
            f"{path} is missing from the installed face-recognition-models package; reinstall it: "
            f"`pip install --force-reinstall face-recognition-models==0.3.0`."
        )
    return path


@dataclass(frozen=True)
class Detection:
    """One face: its detector box ``(left, top, right, bottom)`` in frame pixels, score and 68 landmarks ``68×2``."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Side of the detector box in pixels (dlib boxes are square)."""
        return math.sqrt(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


class LandmarkDetector:
    """dlib HOG face detector + 68-point shape predictor, with the face choices of the module docstring.

    The models load once per instance (about 0.5 s for the 100 MB shape predictor); reuse the instance.
    """

    def __init__(self, min_score: float = 0.3, min_face_size: int = 48) -> None:
        dlib = _require_dlib()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(shape_predictor_path()))
        self.min_score = float(min_score)
        self.min_face_size = int(min_face_size)
        self._best_rejected: float | None = None  # best score below min_score in the last detect_all

    def landmarks_in_box(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """Fit the 68 landmarks inside ``box`` (left, top, right, bottom) of an ``H×W×3`` uint8 RGB image → ``68×2``."""
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(left, top, right, bottom))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def detect_all(self, image: np.ndarray) -> list[Detection]:
        """All faces scoring at least ``min_score``, largest first (no size check)."""
        from PIL import Image

        height, width = image.shape[:2]
        factor = min(1.0, DETECTION_MAX_SIDE / max(height, width))
        small = image
        if factor < 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        upsample = 1 if min(small.shape[:2]) >= 200 else 2  # HOG's 80 px window sees ~40 px faces at 1, ~20 at 2
        boxes, scores, _ = self._detector.run(np.ascontiguousarray(small), upsample, 0.0)
        detections = []
        for rect, score in zip(boxes, scores, strict=True):
            if score < self.min_score:
                continue
            box = tuple(v / factor for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            detections.append(Detection(box, float(score), self.landmarks_in_box(image, box)))
        self._best_rejected = max((s for s in scores if s < self.min_score), default=None)
        return sorted(detections, key=lambda d: d.size, reverse=True)

    def detect(self, image: np.ndarray, name: str | None = None) -> Detection:
        """The face to animate in an ``H×W×3`` uint8 RGB image: the largest one, checked for size."""
        return self.choose(self.detect_all(image), name)

    def choose(self, detections: list[Detection], name: str | None = None) -> Detection:
        """The face to animate among ``detect_all``'s result (called right after it): the largest, checked for size."""
        what = _describe(name)
        if not detections:
            hint = "Use a well-lit, roughly frontal portrait in which the face is at least ~80 px wide."
            if self._best_rejected is not None:
                hint += (
                    f" The best candidate scored {self._best_rejected:.2f}, below min_score={self.min_score}; "
                    f"lower min_score if it is a real face."
                )
            raise NoFaceError(f"{what}: no face found. {hint}")
        if len(detections) > 1:
            warn_several_faces(name, len(detections), detections[0])
        face = detections[0]
        if face.size < self.min_face_size:
            raise FaceTooSmallError(
                f"{what}: the face is only {face.size:.0f} px wide (minimum {self.min_face_size} px); the 256² "
                f"crop would upscale it into a blur. Use a higher-resolution image or a tighter shot, or lower "
                f"min_face_size."
            )
        return face


def warn_several_faces(name: str | None, count: int, used: Detection) -> None:
    """The warning for a portrait in which ``count`` faces were found and ``used`` (the largest) is animated."""
    logger.warning("%s: %d faces found; using the largest (%.0f px at %s)", _describe(name), count, used.size,
                   tuple(round(v) for v in used.box))


@functools.lru_cache(maxsize=1)
def default_detector() -> LandmarkDetector:
    """A process-wide :class:`LandmarkDetector` with the default settings (its model takes ~1 s to load)."""
    return LandmarkDetector()


class FaceTracker:
    """Landmarks for consecutive video frames: detect once, then fit each frame inside the previous face.

    The HOG detector costs ~0.1 s per 512² frame; the shape fit alone ~2 ms. The shape predictor was trained on
    detector boxes, so the tracked box keeps the detector box's offset and size relative to the landmarks'
    extent, measured on the frame where the face was detected. The face is detected again when the tracked box
    leaves the frame or the landmark extent changes by more than ``max_size_change`` between frames.
    """

    def __init__(self, detector: LandmarkDetector | None = None, max_size_change: float = 0.25) -> None:
        self.detector = detector or default_detector()
        self.max_size_change = max_size_change
        self._landmarks: np.ndarray | None = None
        self._box_from_extent: tuple[float, float, float] | None = None  # (dx, dy, size) in extent units

    @staticmethod
    def _extent(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
        low, high = landmarks.min(axis=0), landmarks.max(axis=0)
        return (low + high) / 2, float(max(high - low))

    def _detect(self, frame: np.ndarray, name: str | None) -> np.ndarray:
        face = self.detector.detect(frame, name)
        centre, size = self._extent(face.landmarks)
        box_centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
        dx, dy = (box_centre - centre) / size
        self._box_from_extent = (float(dx), float(dy), face.size / size)
        return face.landmarks

    def __call__(self, frame: np.ndarray, name: str | None = None) -> np.ndarray:
        """Landmarks ``68×2`` of the tracked face in ``frame`` (``H×W×3`` uint8 RGB).

        The first frame must show a face (else :class:`NoFaceError`). Later, when the face leaves the frame or
        jumps and cannot be detected again, the landmarks fitted in the tracked box are kept, with a warning.
        """
        if self._landmarks is None:
            self._landmarks = self._detect(frame, name)
            return self._landmarks
        centre, size = self._extent(self._landmarks)
        dx, dy, ratio = self._box_from_extent
        cx, cy, half = centre[0] + dx * size, centre[1] + dy * size, ratio * size / 2
        box = (cx - half, cy - half, cx + half, cy + half)
        landmarks = self.detector.landmarks_in_box(frame, box)
        height, width = frame.shape[:2]
        inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
        if not inside or abs(self._extent(landmarks)[1] / size - 1) > self.max_size_change:
            try:
                landmarks = self._detect(frame, name)
            except FaceError as error:
                logger.warning("%s: keeping the tracked landmarks (%s)", _describe(name), error)
        self._landmarks = landmarks
        return landmarks

    def reset(self) -> None:
        self._landmarks = None


# --------------------------------------------------------------------------------------------------------------
# Crop geometry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropConfig:
    """LivePortrait's source-crop settings (``crop_config.py``): the face box is ``scale`` × the landmark extent,
    shifted by ``vx_ratio``/``vy_ratio`` of its size (negative vy = up, to include the forehead), warped to
    ``warp_size`` and then area-resized to ``size``. ``rotate`` makes the eye→lip axis vertical."""

    size: int = 256
    warp_size: int = 512
    scale: float = 2.3
    vx_ratio: float = 0.0
    vy_ratio: float = -0.125
    rotate: bool = True

    def __post_init__(self) -> None:
        if self.size < 8 or self.warp_size < self.size or self.warp_size % self.size:
            raise ValueError(
                f"CropConfig needs size ≥ 8 and warp_size a multiple of size (official: 512 and 256); got "
                f"size={self.size}, warp_size={self.warp_size}."
            )
        if self.scale <= 0:
            raise ValueError(f"CropConfig.scale must be positive (official: 2.3); got {self.scale}.")


LIVEPORTRAIT_CROP = CropConfig()
"""The official source-crop settings: 2.3 × the landmark extent, 0.125 up, upright, 512² → 256²."""


def face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``(ux, uy)`` of the upright face: uy points from the eyes' centre to the lips' centre."""
    eyes = landmarks[[*LEFT_EYE_CORNERS, *RIGHT_EYE_CORNERS]].mean(axis=0)
    lips = landmarks[list(OUTER_MOUTH_CORNERS)].mean(axis=0)
    uy = (lips - eyes).astype(np.float64)
    length = float(np.linalg.norm(uy))
    uy = uy / length if length > 1e-3 else np.array([0.0, 1.0])
    return np.array([uy[1], -uy[0]]), uy


def crop_matrix(landmarks: np.ndarray, config: CropConfig = LIVEPORTRAIT_CROP, size: int | None = None) -> np.ndarray:
    """``3×3`` frame→crop similarity transform for a ``size``² crop (default ``config.warp_size``).

    Pixel coordinates have pixel centres at integers (OpenCV's convention), so ``crop = M @ [x, y, 1]``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    size = config.warp_size if size is None else size
    ux, uy = face_axes(landmarks) if config.rotate else (np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    rotation = np.stack([ux, uy])  # 2×2, rows = crop axes in frame coordinates
    mean = landmarks.mean(axis=0)
    rotated = (landmarks - mean) @ rotation.T  # N×2 in the face frame
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    side = float(max(high - low)) * config.scale
    centre = mean + rotation.T @ ((low + high) / 2)
    centre = centre + ux * config.vx_ratio * side + uy * config.vy_ratio * side
    zoom = size / side
    matrix = np.eye(3)
    matrix[:2, :2] = zoom * rotation
    matrix[:2, 2] = size / 2 - zoom * rotation @ centre
    return matrix


def resize_matrix(from_size: int, to_size: int) -> np.ndarray:
    """``3×3`` map between square images of two sizes covering the same area (pixel centres at integers)."""
    ratio = to_size / from_size
    return np.array([[ratio, 0, 0.5 * ratio - 0.5], [0, ratio, 0.5 * ratio - 0.5], [0, 0, 1.0]])


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``3×3`` affine map to points ``...×2``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _sampling_grid(dst_to_src: np.ndarray, out_height: int, out_width: int, src_height: int, src_width: int):
    """``1×H×W×2`` grid for ``F.grid_sample(align_corners=False)`` that reads ``src`` at ``dst_to_src @ p``."""
    ys, xs = np.mgrid[0:out_height, 0:out_width].astype(np.float64)
    src = apply_matrix(dst_to_src, np.stack([xs, ys], axis=-1))  # H×W×2 source pixel coordinates
    grid = np.empty_like(src)
    grid[..., 0] = (2 * src[..., 0] + 1) / src_width - 1
    grid[..., 1] = (2 * src[..., 1] + 1) / src_height - 1
    return torch.from_numpy(grid.astype(np.float32))[None]


def warp_affine(images: torch.Tensor, src_to_dst: np.ndarray, out_size: tuple[int, int]) -> torch.Tensor:
    """Resample ``B×C×H×W`` float images with the ``3×3`` map ``src_to_dst`` into ``B×C×out_h×out_w`` (bilinear,
    zeros outside), like ``cv2.warpAffine``."""
    out_height, out_width = out_size
    grid = _sampling_grid(np.linalg.inv(src_to_dst), out_height, out_width, *images.shape[-2:])
    grid = grid.to(images.device, images.dtype).expand(images.shape[0], -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H×W×3`` uint8 → ``1×3×H×W`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``B×3×H×W`` float in [0, 1] → ``B×H×W×3`` uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class FaceCrop:
    """An aligned face crop and how it maps to the frame it came from.

    image: ``S×S×3`` uint8 RGB. frame_to_crop: ``3×3`` similarity from frame pixels to crop pixels.
    frame_size: ``(H, W)`` of the frame. landmarks: ``68×2`` in frame pixels.
    """

    image: np.ndarray
    frame_to_crop: np.ndarray
    frame_size: tuple[int, int]
    landmarks: np.ndarray

    @property
    def size(self) -> int:
        return self.image.shape[0]

    @property
    def crop_to_frame(self) -> np.ndarray:
        return np.linalg.inv(self.frame_to_crop)

    @property
    def landmarks_crop(self) -> np.ndarray:
        """``68×2`` landmarks in crop pixels."""
        return apply_matrix(self.frame_to_crop, self.landmarks).astype(np.float32)

    def matrix_for(self, size: int) -> np.ndarray:
        """frame→crop map for a crop of another resolution over the same area (e.g. G's 512² output)."""
        return resize_matrix(self.size, size) @ self.frame_to_crop

    def for_frame(self, frame: np.ndarray) -> FaceCrop:
        """The same crop, mapped onto ``frame``: a resized copy of the frame it was taken from (paste-back there)."""
        height, width = self.frame_size
        scale_x, scale_y = frame.shape[1] / width, frame.shape[0] / height
        to_old = np.array([[1 / scale_x, 0, 0.5 / scale_x - 0.5], [0, 1 / scale_y, 0.5 / scale_y - 0.5], [0, 0, 1.0]])
        landmarks = (self.landmarks + 0.5) * np.array([scale_x, scale_y], dtype=np.float32) - 0.5
        return FaceCrop(self.image, self.frame_to_crop @ to_old, frame.shape[:2], landmarks.astype(np.float32))

    def tensor(self) -> torch.Tensor:
        """``1×3×S×S`` float32 in [0, 1], LivePortrait's network input (no mean/std normalisation)."""
        return to_tensor(self.image)


def crop_from_landmarks(frame: np.ndarray, landmarks: np.ndarray, config: CropConfig = LIVEPORTRAIT_CROP) -> FaceCrop:
    """Crop ``frame`` (``H×W×3`` uint8) around the face given by its 68 landmarks."""
    warp_matrix = crop_matrix(landmarks, config, config.warp_size)
    warped = warp_affine(to_tensor(frame), warp_matrix, (config.warp_size, config.warp_size))  # 1×3×512×512
    factor = config.warp_size // config.size
    crop = F.avg_pool2d(warped, factor) if factor > 1 else warped  # area resize, as cv2.INTER_AREA for 2×
    return FaceCrop(
        image=to_uint8(crop)[0],
        frame_to_crop=resize_matrix(config.warp_size, config.size) @ warp_matrix,
        frame_size=frame.shape[:2],
        landmarks=np.asarray(landmarks, dtype=np.float32),
    )


def crop_face(
    image: str | os.PathLike | np.ndarray,
    detector: LandmarkDetector | None = None,
    config: CropConfig = LIVEPORTRAIT_CROP,
    name: str | None = None,
) -> FaceCrop:
    """Find the face in a portrait (path or array) and return LivePortrait's aligned crop plus its transform."""
    if name is None and isinstance(image, str | os.PathLike):
        name = str(image)
    frame = load_image(image, name)
    detector = detector or default_detector()
    face = detector.detect(frame, name)
    return crop_from_landmarks(frame, face.landmarks, config)


# --------------------------------------------------------------------------------------------------------------
# Paste-back
# --------------------------------------------------------------------------------------------------------------


def soft_crop_mask(size: int, feather: float = 0.12, exponent: float = 4.0) -> np.ndarray:
    """``S×S`` float32 mask in [0, 1]: 1 in the middle of the crop, fading to 0 at its border.

    A superellipse (|u|⁴ + |v|⁴ = r⁴) with a smoothstep edge ``feather`` of the half-size wide, the role played by
    LivePortrait's ``mask_template.png``: it hides the crop's square edge, so only the face region is replaced.
    """
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(coords, coords)
    radius = (np.abs(u) ** exponent + np.abs(v) ** exponent) ** (1 / exponent)
    edge = np.clip((1.0 - radius) / feather, 0.0, 1.0)
    return (edge * edge * (3 - 2 * edge)).astype(np.float32)


class PasteBack:
    """Blend rendered crops into a fixed frame; the sampling grid and mask are built once for all frames.

    frame: ``H×W×3`` uint8. crop_to_frame: ``3×3`` map of the rendered crop (any size, see
    :meth:`FaceCrop.matrix_for`). mask: ``S×S`` in crop pixels, default :func:`soft_crop_mask`.
    """

    def __init__(
        self,
        frame: np.ndarray,
        frame_to_crop: np.ndarray,
        crop_size: int,
        mask: np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        height, width = frame.shape[:2]
        self.crop_size = crop_size
        self.frame = to_tensor(frame).to(device)  # 1×3×H×W
        self.grid = _sampling_grid(frame_to_crop, height, width, crop_size, crop_size).to(device)  # 1×H×W×2
        mask = soft_crop_mask(crop_size) if mask is None else np.asarray(mask, dtype=np.float32)
        if mask.shape != (crop_size, crop_size):
            raise ValueError(f"paste-back mask must be {crop_size}×{crop_size}; got {mask.shape}.")
        mask_tensor = torch.from_numpy(mask)[None, None].to(device)
        self.mask = F.grid_sample(mask_tensor, self.grid, mode="bilinear", align_corners=False)  # 1×1×H×W

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """``B×3×S×S`` float in [0, 1] → frames ``B×3×H×W`` float in [0, 1]."""
        if crops.shape[-2:] != (self.crop_size, self.crop_size):
            raise ValueError(f"expected crops of {self.crop_size}²; got {tuple(crops.shape[-2:])}.")
        grid = self.grid.to(crops.dtype).expand(crops.shape[0], -1, -1, -1)
        warped = F.grid_sample(crops, grid, mode="bilinear", align_corners=False)
        mask = self.mask.to(crops.dtype)
        return mask * warped + (1 - mask) * self.frame.to(crops.dtype)


def paste_back(
    frame: np.ndarray, rendered_crop: np.ndarray, transform: FaceCrop, mask: np.ndarray | None = None
) -> np.ndarray:
    """Put one rendered crop (``R×R×3`` uint8, any R, same area as ``transform``'s crop) back into ``frame``.

    frame: ``H×W×3`` uint8, the frame the crop was taken from. Returns ``H×W×3`` uint8. The blend uses a soft
    mask (:func:`soft_crop_mask` unless ``mask``, an ``R×R`` array in crop pixels, is given).
    """
    frame = load_image(frame, "frame")
    rendered = load_image(rendered_crop, "rendered crop")
    if rendered.shape[0] != rendered.shape[1]:
        raise ValueError(f"rendered crop must be square; got {rendered.shape[1]}×{rendered.shape[0]}.")
    if tuple(frame.shape[:2]) != tuple(transform.frame_size):
        raise ValueError(
            f"frame is {frame.shape[1]}×{frame.shape[0]} but the crop was taken from a "
            f"{transform.frame_size[1]}×{transform.frame_size[0]} frame; pass that frame."
        )
    size = rendered.shape[0]
    blend = PasteBack(frame, transform.matrix_for(size), size, mask)
    return to_uint8(blend(to_tensor(rendered)))[0]
