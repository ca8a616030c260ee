"""Imports of the reference implementations (``f5-tts``, ``vocos``) for parity tests.

The reference packages import heavy or absent dependencies at module level (wandb, librosa, encodec,
pydub, matplotlib) that the code paths used here never call. Those are replaced by empty stand-in
modules, but only when the real package is not installed. diffusers/transformers/accelerate are
imported first: they probe optional packages with ``importlib.util.find_spec``, which fails on a
stand-in without ``__spec__``, and they should see the real environment.

Each loader skips the calling test (``pytest.importorskip``) when a reference package is missing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest

# name -> attributes of the stand-in; only the attributes the reference modules touch at import time.
_STAND_INS: dict[str, dict[str, object]] = {
    "wandb": {},
    "librosa": {},
    "librosa.filters": {"mel": None},  # only the bigvgan mel path calls it
    "encodec": {"EncodecModel": None},  # only Vocos's EnCodec feature extractor uses it
    "pydub": {"AudioSegment": None, "silence": None},  # reference-audio preprocessing, not exercised
    "matplotlib": {"use": lambda *args, **kwargs: None},
    "matplotlib.pylab": {},  # spectrogram plotting in f5_tts.infer.utils_infer
    "datasets": {"Dataset": None, "load_from_disk": None},  # f5_tts.model's training dataset module only
}


_inserted: set[str] = set()


def _real_package_installed(name: str) -> bool:
    top = name.partition(".")[0]
    return top not in _inserted and importlib.util.find_spec(top) is not None


def _install_stand_ins() -> None:
    for name in ("diffusers", "transformers", "accelerate"):
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    for name, attrs in _STAND_INS.items():  # parents are listed before their submodules
        if name in sys.modules or _real_package_installed(name):
            continue
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        _inserted.add(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def f5_modules() -> types.SimpleNamespace:
    """``f5_tts`` pieces: ``MelSpec``, ``convert_char_to_pinyin``, ``list_str_to_idx``."""
    pytest.importorskip(
        "torchaudio", reason="the f5-tts reference mel needs torchaudio (pure-python is enough)"
    )
    for name in ("x_transformers", "torchdiffeq", "pypinyin", "rjieba"):
        pytest.importorskip(name, reason=f"f5-tts imports {name}")
    _install_stand_ins()
    pytest.importorskip("f5_tts", reason="reference package f5-tts not installed")
    modules = importlib.import_module("f5_tts.model.modules")
    utils = importlib.import_module("f5_tts.model.utils")
    return types.SimpleNamespace(
        MelSpec=modules.MelSpec,
        convert_char_to_pinyin=utils.convert_char_to_pinyin,
        list_str_to_idx=utils.list_str_to_idx,
    )


def f5_infer_batch_process():  # noqa: ANN201 - returns the reference generator function
    """``f5_tts.infer.utils_infer.infer_batch_process`` (slow import: it pulls in transformers)."""
    f5_modules()
    pytest.importorskip("transformers", reason="f5-tts inference imports transformers")
    return importlib.import_module("f5_tts.infer.utils_infer").infer_batch_process


def vocos_modules() -> types.SimpleNamespace:
    """``vocos`` pieces: ``Vocos`` and the classes its mel config names."""
    pytest.importorskip("torchaudio", reason="vocos imports torchaudio (pure-python is enough)")
    _install_stand_ins()
    pytest.importorskip("vocos", reason="reference package vocos not installed")
    pretrained = importlib.import_module("vocos.pretrained")
    return types.SimpleNamespace(Vocos=pretrained.Vocos)
