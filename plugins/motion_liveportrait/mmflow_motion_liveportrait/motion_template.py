"""LivePortrait motion templates: the ``.pkl`` files of ``make_motion_template`` and a plain ``.npz`` with the
same per-frame arrays stacked along a leading frame axis. Writes are atomic; reads refuse malformed files
with the file and the problem named.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmflow.io import atomic_path
from mmflow.validation import Range

logger = logging.getLogger(__name__)


class MotionTemplateError(ValueError):
    """A motion-template file is unreadable or does not have the expected layout."""


FPS_RANGE = Range(1.0, 1000.0)
"""Frame rates a motion template may have; far outside, resampling it to 25 fps would make absurd sizes."""
MAX_FILE_BYTES = 512 * 2**20
"""Largest motion-template file read (10 minutes of a full LivePortrait template take about 15 MB)."""

# Per-frame array shapes; K is the number of keypoints (21 for LivePortrait).
_REQUIRED_FIELDS = ("scale", "R", "exp", "t")
_OPTIONAL_FIELDS = ("kp", "x_s", "c_eyes", "c_lip")


def _frame_shape(field: str, num_kp: int) -> tuple[int, ...]:
    return {
        "scale": (1,),
        "R": (3, 3),
        "exp": (num_kp, 3),
        "t": (3,),
        "kp": (num_kp, 3),
        "x_s": (num_kp, 3),
        "c_eyes": (2,),
        "c_lip": (1,),
    }[field]


@dataclass
class MotionTemplate:
    """A driving-motion sequence of ``T`` frames, stored as float32 arrays with a leading frame axis.

    scale ``T×1``; R ``T×3×3`` (row-vector rotation, :func:`rotation_matrix`); exp ``T×K×3``; t ``T×3``.
    Optional: kp ``T×K×3`` (canonical keypoints), x_s ``T×K×3`` (transformed keypoints), c_eyes ``T×2`` and
    c_lip ``T×1`` (eye / lip open ratios used by retargeting). fps: frames per second of the motion.
    """

    scale: np.ndarray
    R: np.ndarray
    exp: np.ndarray
    t: np.ndarray
    kp: np.ndarray | None = None
    x_s: np.ndarray | None = None
    c_eyes: np.ndarray | None = None
    c_lip: np.ndarray | None = None
    fps: float = 25.0

    def __post_init__(self) -> None:
        num_frames = np.shape(self.exp)[0] if np.ndim(self.exp) == 3 else None
        num_kp = np.shape(self.exp)[1] if num_frames is not None else None
        if num_frames is None:
            raise ValueError(f"MotionTemplate.exp must be T×K×3; got shape {np.shape(self.exp)}.")
        if num_frames == 0:
            raise ValueError("the motion has 0 frames; give a template with at least one frame.")
        for field in _REQUIRED_FIELDS + _OPTIONAL_FIELDS:
            value = getattr(self, field)
            if value is None:
                continue
            array = np.asarray(value, dtype=np.float32)
            expected = (num_frames, *_frame_shape(field, num_kp))
            if array.shape != expected:
                raise ValueError(f"MotionTemplate.{field} must have shape {expected}; got {array.shape}.")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"MotionTemplate.{field} contains NaN or infinite values.")
            setattr(self, field, array)
        self.fps = FPS_RANGE.check("the motion's fps", self.fps, "a LivePortrait template is usually at 25 or 30")

    @property
    def num_frames(self) -> int:
        return self.exp.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The present per-frame fields as a dict of stacked arrays."""
        fields = _REQUIRED_FIELDS + _OPTIONAL_FIELDS
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


# Eye / lip open ratios from expressions ------------------------------------------------------------------------

# LivePortrait computes c_eyes (left, right: eyelid gap / eye width) and c_lip (lip gap / mouth width) on its
# 203-point landmarks of each driving frame (src/utils/retargeting_utils.py); generated motion has no landmarks.
# These are least-squares linear fits of those ratios on the y expression offsets of the keypoints that move with
# the eyes (11, 13, 15, 16) and the lips (14, 17, 19, 20), over the 633 frames of the official templates that carry
# ratios (assets/examples/driving/d1, d2, d5, d7, d8.pkl at KwaiVGI/LivePortrait 1986663); refit them with
# scripts/fit_open_ratios.py. Held-out-clip R²: 0.77 (lip), 0.86 / 0.93 (left / right eye).
LIP_RATIO_KEYPOINTS = (14, 17, 19, 20)
LIP_RATIO_FIT = np.array([[0.1437], [3.5992], [4.7998], [5.4428], [-7.6925]], np.float32)
"""Intercept, then one weight per keypoint of :data:`LIP_RATIO_KEYPOINTS` (its exp y) → c_lip."""
EYE_RATIO_KEYPOINTS = (11, 13, 15, 16)
EYE_RATIO_FIT = np.array([[0.3004, 0.2624], [-13.8095, -2.7355], [15.931, 8.055], [-3.4572, -14.6595],
                          [0.3168, 11.4756]], np.float32)
"""Intercept, then one row per keypoint of :data:`EYE_RATIO_KEYPOINTS` (its exp y) → c_eyes (left, right)."""


def open_ratios(exp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(c_eyes T×2, c_lip T×1)`` estimated from expressions ``T×21×3`` with the fits above (ratios are ≥ 0)."""
    exp = np.asarray(exp, np.float32)

    def fit(keypoints, weights):
        features = np.concatenate([np.ones((len(exp), 1), np.float32), exp[:, keypoints, 1]], axis=1)
        return np.maximum(features @ weights, 0.0).astype(np.float32)

    return fit(list(EYE_RATIO_KEYPOINTS), EYE_RATIO_FIT), fit(list(LIP_RATIO_KEYPOINTS), LIP_RATIO_FIT)


def template_from_expressions(exp: np.ndarray, fps: float, pose: dict[str, np.ndarray] | None = None
                              ) -> MotionTemplate:
    """A template official LivePortrait can drive with: generated expressions ``T×21×3``, a head pose and the open
    ratios its retargeting reads.

    ``pose`` (``scale``, ``R``, ``t`` per frame, e.g. a given template's) is held at its last frame where the
    expressions outlast it; without one the head stays still (scale 1, no rotation, no translation). ``kp`` and
    ``x_s`` are left out: they belong to a face the generated motion never saw, and LivePortrait's driving-template
    reader does not use them (it reads ``scale``, ``R``, ``exp`` and ``t`` of each frame).
    """
    exp = np.asarray(exp, np.float32)
    frames = len(exp)
    if pose is None:
        scale = np.ones((frames, 1), np.float32)
        rotation = np.broadcast_to(np.eye(3, dtype=np.float32), (frames, 3, 3)).copy()
        translation = np.zeros((frames, 3), np.float32)
    else:
        index = np.minimum(np.arange(frames), len(pose["R"]) - 1)
        scale, rotation, translation = (np.asarray(pose[key], np.float32)[index] for key in ("scale", "R", "t"))
    c_eyes, c_lip = open_ratios(exp)
    return MotionTemplate(scale=scale, R=rotation, exp=exp, t=translation, c_eyes=c_eyes, c_lip=c_lip,
                          fps=float(fps))


def load_motion_template(path: str | os.PathLike) -> MotionTemplate:
    """Read a LivePortrait ``.pkl`` motion template or an ``.npz`` written by :func:`save_motion_template`.

    ``.pkl`` files are unpickled with an allow-list (plain containers and numpy arrays only), so a file cannot run
    code. Older official templates (``R_d``, ``c_d_eyes_lst``, ``c_d_lip_lst``, no ``output_fps``) are accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion template {str(path)!r} does not exist.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise MotionTemplateError(f"{path}: {size / 2**20:.0f} MiB is larger than a motion template can be "
                                  f"({MAX_FILE_BYTES / 2**20:.0f} MiB); give a shorter motion.")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return _read_pkl(path)
    if suffix == ".npz":
        return _read_npz(path)
    raise MotionTemplateError(f"{path}: unknown motion-template extension {suffix!r}; use .pkl or .npz.")


def save_motion_template(template: MotionTemplate, path: str | os.PathLike) -> Path:
    """Write ``template`` as LivePortrait's ``.pkl`` layout or as ``.npz`` (by extension), atomically.

    The file is written to a temporary file in the same folder and renamed over ``path``, so readers never see a
    partial file. The ``.pkl`` layout is the one ``make_motion_template`` writes (per-frame dicts with a leading
    size-1 batch axis); ``c_eyes_lst`` / ``c_lip_lst`` are only written when the template has them.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        write = _write_pkl
    elif suffix == ".npz":
        write = _write_npz
    else:
        raise MotionTemplateError(f"{path}: unknown motion-template extension {suffix!r}; use .pkl or .npz.")
    with atomic_path(path) as tmp:  # mode from the umask, as any file the user writes (mkstemp's 0600 is not)
        with tmp.open("wb") as stream:
            write(template, stream)
            stream.flush()
            os.fsync(stream.fileno())
    logger.info("wrote motion template %s (%d frames)", path, template.num_frames)
    return path


def _build(path: Path, frames: dict[str, np.ndarray], fps) -> MotionTemplate:
    try:
        return MotionTemplate(**frames, fps=fps)
    except ValueError as error:
        raise MotionTemplateError(f"{path}: {error}") from error


# .npz ------------------------------------------------------------------------------------------------------------


def _write_npz(template: MotionTemplate, stream) -> None:
    np.savez(stream, fps=np.float64(template.fps), **template.arrays())


def _read_npz(path: Path) -> MotionTemplate:
    try:
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except MotionTemplateError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise MotionTemplateError(f"{path}: not a readable .npz archive ({error}).") from error
    missing = [name for name in _REQUIRED_FIELDS if name not in contents]
    if missing:
        raise MotionTemplateError(
            f"{path}: missing arrays {missing}; a motion template needs {list(_REQUIRED_FIELDS)} (T-first)."
        )
    unknown = sorted(set(contents) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS) - {"fps"})
    if unknown:
        raise MotionTemplateError(f"{path}: unexpected arrays {unknown}.")
    fps = float(contents.pop("fps")) if "fps" in contents else 25.0
    return _build(path, contents, fps)


def _check_npz_sizes(path: Path) -> None:
    """Refuse an archive whose arrays would need more memory than :data:`MAX_FILE_BYTES`, before numpy allocates.

    ``np.load`` allocates what each member's header declares before it reads the data, so a tiny file could ask
    for any amount; here the headers are read first and the declared sizes added up.
    """
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
            total += math.prod(shape) * dtype.itemsize
            if total > MAX_FILE_BYTES:
                raise MotionTemplateError(f"{path}: its arrays would take more than {MAX_FILE_BYTES / 2**20:.0f} MiB "
                                          f"(array {info.filename[:-4]!r} has shape {shape}); not a motion template.")


# .pkl ------------------------------------------------------------------------------------------------------------

# The only globals a LivePortrait template needs: numpy array / scalar reconstruction (numpy 1.x and 2.x names).
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
}


class _TemplateUnpickler(pickle.Unpickler):
    """Refuses every global outside :data:`_PICKLE_ALLOWED`, so unpickling cannot execute code, and every array
    larger than the file itself (a genuine array's data are in the file), so it cannot allocate absurd memory."""

    def __init__(self, stream, max_bytes: int):
        super().__init__(stream)
        self.max_bytes = max_bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a motion template")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2 moved numpy.core
        target = getattr(importlib.import_module(module), name)
        return _bounded(target, name, self.max_bytes)


def _bounded(target, name: str, max_bytes: int):
    """``target`` (an allowed numpy constructor) with the array size it is asked for checked first."""

    def check(shape, dtype) -> None:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"array shape {shape} is not a shape")
        size = math.prod(shape) * np.dtype(dtype).itemsize
        if size > max_bytes:
            raise pickle.UnpicklingError(f"an array of shape {shape} ({size} bytes) is larger than the file")

    if name == "ndarray":

        class BoundedArray(np.ndarray):  # the class itself is pickled as _reconstruct's argument
            def __new__(cls, shape, dtype=float, *args, **kwargs):
                check(shape, dtype)
                return np.ndarray.__new__(np.ndarray, shape, dtype, *args, **kwargs)

        return BoundedArray
    if name == "_reconstruct":

        def reconstruct(subtype, shape, dtype):
            check(shape, dtype)
            return target(np.ndarray if issubclass(subtype, np.ndarray) else subtype, shape, dtype)

        return reconstruct
    if name == "_frombuffer":

        def frombuffer(buffer, dtype, shape, order):
            check(shape, dtype)
            return target(buffer, dtype, shape, order)

        return frombuffer
    if name == "scalar":

        def scalar(dtype, *args):
            check((), dtype)
            return target(dtype, *args)

        return scalar
    return target


def _write_pkl(template: MotionTemplate, stream) -> None:
    arrays = template.arrays()
    motion = [
        {name: arrays[name][i][None] for name in ("scale", "R", "exp", "t", "kp", "x_s") if name in arrays}
        for i in range(template.num_frames)
    ]  # each entry has a leading size-1 batch axis, as LivePortrait writes it
    payload: dict = {"n_frames": template.num_frames, "output_fps": template.fps, "motion": motion}
    if "c_eyes" in arrays:
        payload["c_eyes_lst"] = [row[None] for row in arrays["c_eyes"]]  # each 1×2
    if "c_lip" in arrays:
        payload["c_lip_lst"] = [row[None] for row in arrays["c_lip"]]  # each 1×1
    if "c_eyes" not in arrays or "c_lip" not in arrays:
        logger.warning("the motion template has no eye/lip open ratios; official LivePortrait's inference.py -d "
                       "needs them (build it with template_from_expressions)")
    pickle.dump(payload, stream, protocol=4)


def _stack_frames(path: Path, field: str, values: list, shape: tuple[int, ...]) -> np.ndarray:
    """Stack per-frame arrays of shape ``shape`` (optionally with extra size-1 axes) into ``T×shape``."""
    stacked = []
    for index, value in enumerate(values):
        array = np.asarray(value, dtype=np.float32)
        if array.size != math.prod(shape):
            raise MotionTemplateError(
                f"{path}: frame {index} field {field!r} has shape {array.shape}; expected {shape} "
                f"(or with a leading batch axis of 1)."
            )
        stacked.append(array.reshape(shape))
    return np.stack(stacked)


def _read_pkl(path: Path) -> MotionTemplate:
    try:
        with path.open("rb") as stream:
            payload = _TemplateUnpickler(stream, max_bytes=path.stat().st_size).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        TypeError,
        ValueError,
    ) as error:
        raise MotionTemplateError(
            f"{path}: not a readable LivePortrait motion template ({error})."
        ) from error
    if not isinstance(payload, dict) or not isinstance(payload.get("motion"), list | tuple):
        raise MotionTemplateError(
            f"{path}: expected a dict with a 'motion' list of per-frame dicts (LivePortrait's make_motion_template "
            f"layout); got {type(payload).__name__} with keys {sorted(payload) if isinstance(payload, dict) else '-'}."
        )
    motion = payload["motion"]
    if not motion or not all(isinstance(frame, dict) for frame in motion):
        raise MotionTemplateError(f"{path}: 'motion' must be a non-empty list of per-frame dicts.")
    n_frames = payload.get("n_frames", len(motion))
    if n_frames != len(motion):
        raise MotionTemplateError(f"{path}: n_frames is {n_frames} but 'motion' has {len(motion)} frames.")

    first = motion[0]
    if "exp" not in first:
        raise MotionTemplateError(f"{path}: frame 0 has no 'exp'; keys are {sorted(first)}.")
    num_kp = np.asarray(first["exp"]).size // 3
    names = {"R": "R" if "R" in first else "R_d"}  # older templates call the rotation R_d
    frames: dict[str, np.ndarray] = {}
    for field in ("scale", "R", "exp", "t", "kp", "x_s"):
        key = names.get(field, field)
        present = [key in frame for frame in motion]
        if not any(present) and field not in _REQUIRED_FIELDS:
            continue
        if not all(present):
            raise MotionTemplateError(f"{path}: frame {present.index(False)} has no {key!r}.")
        frames[field] = _stack_frames(
            path, key, [frame[key] for frame in motion], _frame_shape(field, num_kp)
        )
    for field, keys in (("c_eyes", ("c_eyes_lst", "c_d_eyes_lst")), ("c_lip", ("c_lip_lst", "c_d_lip_lst"))):
        key = next((k for k in keys if k in payload), None)
        if key is None:
            continue
        values = payload[key]
        if len(values) != len(motion):
            raise MotionTemplateError(f"{path}: {key!r} has {len(values)} entries for {len(motion)} frames.")
        frames[field] = _stack_frames(path, key, list(values), _frame_shape(field, num_kp))
    if "output_fps" not in payload:
        logger.info("%s has no output_fps; assuming LivePortrait's default of 25", path)
    return _build(path, frames, payload.get("output_fps", 25.0))
