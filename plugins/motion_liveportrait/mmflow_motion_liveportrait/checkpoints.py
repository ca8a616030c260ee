"""Load LivePortrait's official ``.pth`` weights into the networks of :mod:`.networks`, strictly.

The official files (HF ``KwaiVGI/LivePortrait``, folder ``liveportrait/``) are plain state dicts, except that

* the stitching/retargeting file holds three sub-state-dicts (``retarget_shoulder`` = stitching S,
  ``retarget_mouth`` = lip, ``retarget_eye`` = eye) whose keys start with ``module.`` (saved from DDP);
* the SPADE decoder stores its spectrally normalised convs as ``weight_orig / weight_u / weight_v``
  (legacy ``torch.nn.utils.spectral_norm``); they are folded into ``weight`` (see ``networks/spectral_norm.py``).

Everything else loads by name. Any missing, unexpected or shape-mismatched key is an error that names the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ModelMixin

from .networks import (
    OFFICIAL_MLP_CONFIGS,
    AppearanceFeatureExtractor,
    MotionExtractor,
    SPADEDecoder,
    StitchingRetargetingNetwork,
    WarpingNetwork,
)
from .networks.spectral_norm import fold_legacy_spectral_norm

logger = logging.getLogger(__name__)

OFFICIAL_WEIGHTS_URL = "https://huggingface.co/KwaiVGI/LivePortrait"
DOWNLOAD_HINT = (
    f"LivePortrait publishes it at {OFFICIAL_WEIGHTS_URL} under liveportrait/; e.g. "
    "`huggingface-cli download KwaiVGI/LivePortrait --local-dir pretrained_weights --exclude '*.git*' README.md docs` "
    "and pass pretrained_weights/liveportrait"
)
DDP_PREFIX = "module."
MAX_LISTED_KEYS = 40  # per category in an error message


class CheckpointError(RuntimeError):
    """An official checkpoint is unreadable or does not match the network it is loaded into."""


@dataclass(frozen=True)
class OfficialCheckpoint:
    """Where one network's weights live in the official ``pretrained_weights/liveportrait/`` tree."""

    relative_path: str  # under pretrained_weights/liveportrait/
    model_class: type[ModelMixin]
    inner_key: str | None = None  # sub-state-dict inside the file, if any
    default_config: Mapping | None = None  # None: the class defaults (official full size)


RETARGETING_FILE = "retargeting_models/stitching_retargeting_module.pth"

# Network kind → official file. Kinds are the models.yaml names (stitching/lip/eye as in its retargeting entry).
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    "appearance_feature_extractor": OfficialCheckpoint(
        "base_models/appearance_feature_extractor.pth", AppearanceFeatureExtractor
    ),
    "motion_extractor": OfficialCheckpoint("base_models/motion_extractor.pth", MotionExtractor),
    "warping_module": OfficialCheckpoint("base_models/warping_module.pth", WarpingNetwork),
    "spade_generator": OfficialCheckpoint("base_models/spade_generator.pth", SPADEDecoder),
    "stitching": OfficialCheckpoint(
        RETARGETING_FILE, StitchingRetargetingNetwork, "retarget_shoulder", OFFICIAL_MLP_CONFIGS["stitching"]
    ),
    "lip": OfficialCheckpoint(
        RETARGETING_FILE, StitchingRetargetingNetwork, "retarget_mouth", OFFICIAL_MLP_CONFIGS["lip"]
    ),
    "eye": OfficialCheckpoint(
        RETARGETING_FILE, StitchingRetargetingNetwork, "retarget_eye", OFFICIAL_MLP_CONFIGS["eye"]
    ),
}


def _spec(kind: str) -> OfficialCheckpoint:
    if kind not in OFFICIAL_CHECKPOINTS:
        raise ValueError(
            f"Unknown LivePortrait network kind {kind!r}; choose one of {list(OFFICIAL_CHECKPOINTS)}."
        )
    return OFFICIAL_CHECKPOINTS[kind]


def read_official_state_dict(path: str | os.PathLike, kind: str) -> dict[str, torch.Tensor]:
    """Read one network's state dict from an official file, with the model's key names.

    Uses ``torch.load(weights_only=True, map_location="cpu")``, selects the sub-state-dict for retargeting kinds,
    strips a leading ``module.`` from every key and folds legacy spectral-norm entries.
    """
    spec = _spec(kind)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{kind}: checkpoint {str(path)!r} not found (official file "
            f"'{Path(spec.relative_path).name}'). {DOWNLOAD_HINT}."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        raise CheckpointError(
            f"{path}: cannot read {kind} checkpoint ({type(error).__name__}: {error}). The file may be truncated or "
            f"not a PyTorch state dict; re-download it. {DOWNLOAD_HINT}."
        ) from error
    if spec.inner_key is not None:
        if not isinstance(content, Mapping) or spec.inner_key not in content:
            found = sorted(content) if isinstance(content, Mapping) else type(content).__name__
            raise CheckpointError(
                f"{path}: expected the sub-state-dict {spec.inner_key!r} for {kind} (official "
                f"'{spec.relative_path}' holds retarget_shoulder / retarget_mouth / retarget_eye); found {found}."
            )
        content = content[spec.inner_key]
    if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(
            f"{path}: expected a state dict (name → tensor) for {kind}; got {type(content).__name__}."
        )
    state_dict = {key.removeprefix(DDP_PREFIX): value for key, value in content.items()}
    return fold_legacy_spectral_norm(state_dict)


def _describe_mismatch(path: Path, kind: str, model: torch.nn.Module, state_dict: Mapping) -> str | None:
    """One message listing missing / unexpected / wrongly shaped keys, or None if the keys match."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or reshaped):
        return None

    def section(title: str, keys: list[str], line) -> list[str]:
        if not keys:
            return []
        lines = [f"  {title} ({len(keys)}):"] + [f"    {line(k)}" for k in keys[:MAX_LISTED_KEYS]]
        if len(keys) > MAX_LISTED_KEYS:
            lines.append(f"    ... and {len(keys) - MAX_LISTED_KEYS} more")
        return lines

    lines = [f"{path}: checkpoint does not match {type(model).__name__} (kind {kind!r}):"]
    lines += section("missing keys", missing, lambda k: f"{k}: model {tuple(expected[k].shape)}, not in file")
    lines += section(
        "unexpected keys", unexpected, lambda k: f"{k}: file {tuple(state_dict[k].shape)}, not in model"
    )
    lines += section(
        "shape mismatches",
        reshaped,
        lambda k: f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}",
    )
    lines.append(
        "  Check that the file is the official one for this kind and that the model config matches it."
    )
    return "\n".join(lines)


def load_official_weights(model: ModelMixin, path: str | os.PathLike, kind: str) -> ModelMixin:
    """Load an official file into ``model`` strictly and switch it to eval mode; returns ``model``.

    ``model`` may live on the meta device (built without initialising weights); the file's tensors then
    replace its parameters instead of being copied into them.
    """
    path = Path(path)
    state_dict = read_official_state_dict(path, kind)
    problem = _describe_mismatch(path, kind, model, state_dict)
    if problem is not None:
        raise CheckpointError(problem)
    on_meta = any(tensor.is_meta for tensor in model.state_dict().values())
    model.load_state_dict(state_dict, strict=True, assign=on_meta)
    logger.info("loaded LivePortrait %s weights from %s", kind, path)
    return model.eval()


def build_official_model(kind: str, path: str | os.PathLike, **config) -> ModelMixin:
    """Construct the network for ``kind`` (official config, overridden by ``config``) and load ``path`` into it.

    The network is built on the meta device, so no time is spent on a random initialisation that the file
    overwrites anyway (seconds for W and G on CPU).
    """
    spec = _spec(kind)
    with torch.device("meta"):
        model = spec.model_class(**{**(spec.default_config or {}), **config})
    return load_official_weights(model, path, kind)


class LivePortraitWeights:
    """The official weight folder, laid out like LivePortrait's ``pretrained_weights/liveportrait/``::

        base_models/{appearance_feature_extractor,motion_extractor,warping_module,spade_generator}.pth
        retargeting_models/stitching_retargeting_module.pth

    ``root`` may also be the ``pretrained_weights/`` folder above it. Each accessor builds the full-size network
    and loads its file strictly (eval mode, fp32, CPU; move it with ``.to()``).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        if not (root / "base_models").is_dir() and (root / "liveportrait" / "base_models").is_dir():
            root = root / "liveportrait"
        self.root = root

    def path(self, kind: str) -> Path:
        """Where ``kind``'s official file is expected."""
        return self.root / _spec(kind).relative_path

    def missing(self) -> list[str]:
        """Official files absent from the folder (relative paths; empty when complete)."""
        files = dict.fromkeys(spec.relative_path for spec in OFFICIAL_CHECKPOINTS.values())
        return [name for name in files if not (self.root / name).is_file()]

    def load(self, kind: str, **config) -> ModelMixin:
        """Build and load one network: a key of :data:`OFFICIAL_CHECKPOINTS`."""
        path = self.path(kind)
        if not path.is_file():
            raise FileNotFoundError(
                f"{kind}: expected {_spec(kind).relative_path!r} under {str(self.root)!r} (looked for {str(path)!r}). "
                f"{DOWNLOAD_HINT}."
            )
        return build_official_model(kind, path, **config)

    def appearance_feature_extractor(self) -> AppearanceFeatureExtractor:
        return self.load("appearance_feature_extractor")

    def motion_extractor(self) -> MotionExtractor:
        return self.load("motion_extractor")

    def warping_module(self) -> WarpingNetwork:
        return self.load("warping_module")

    def spade_generator(self) -> SPADEDecoder:
        return self.load("spade_generator")

    def stitching(self) -> StitchingRetargetingNetwork:
        return self.load("stitching")

    def lip_retargeting(self) -> StitchingRetargetingNetwork:
        return self.load("lip")

    def eye_retargeting(self) -> StitchingRetargetingNetwork:
        return self.load("eye")
