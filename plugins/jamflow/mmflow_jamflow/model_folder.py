"""Checks of a saved pipeline folder before diffusers loads it, since the folder may come from someone else.

``model_index.json`` names a Python module per component and diffusers imports it: only modules of installed mmflow
plugins (and of mmflow itself) may be named, so a folder cannot make the loader import arbitrary code. Every
``.safetensors`` file's header is read first, so a truncated or corrupt download is one error naming the file.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from mmflow.plugins import get_registry

_DISTRIBUTIONS = {
    "mmflow": "mmflow",
    "mmflow_audio_f5tts": "mmflow-audio-f5tts (plugins/audio_f5tts)",
    "mmflow_motion_liveportrait": "mmflow-motion-liveportrait (plugins/motion_liveportrait)",
    "mmflow_jamflow": "mmflow-jamflow (plugins/jamflow)",
}


class ModelFolderError(ValueError):
    """A pipeline folder that cannot be loaded safely: a corrupt file or a module outside the mmflow plugins."""


def plugin_packages() -> set[str]:
    """Top-level packages of mmflow and of every installed mmflow plugin: the modules a model folder may name."""
    return {info.module.split(":")[0].split(".")[0] for info in get_registry().plugins}


def check_model_folder(folder: str | os.PathLike) -> None:
    """Refuse a folder whose ``model_index.json`` names modules outside the installed mmflow plugins, or that
    holds an unreadable ``.safetensors`` file; every message names the file and the fix."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline (no model_index.json); save one with "
                                f"pipeline.save_pretrained(folder)")
    try:
        config = json.loads(index.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"{index}: not valid JSON ({error}); save the pipeline again") from error
    if not isinstance(config, dict):
        raise ModelFolderError(f"{index}: expected a JSON object of components; save the pipeline again")
    allowed = plugin_packages()
    for name, value in config.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        module = value[0]
        top = str(module).split(".")[0]
        if top not in allowed:
            package = _DISTRIBUTIONS.get(top, top.replace("_", "-"))
            fix = (f"install the plugin `{package}` (pip install {package.split(' ')[0]})" if top.startswith("mmflow")
                   else "nothing outside mmflow plugins is imported from a model folder; use a folder from a trusted "
                   "source")
            raise ImportError(
                f"component {name!r} of {folder} names the module {module!r}, which belongs to no installed mmflow "
                f"plugin (installed: {', '.join(sorted(allowed))}); {fix}"
            )
        if not (folder / name).is_dir():
            raise ModelFolderError(f"{folder} lacks the folder of its component {name!r} ({folder / name}), which "
                                   f"model_index.json lists; copy the whole model folder again")
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(f"component {name!r} of {folder} needs the module {module!r}, which does not import "
                              f"({error}); reinstall the plugin `{top}` or save the pipeline again") from error
    for path in sorted(folder.rglob("*.safetensors")):
        _check_safetensors(path)


def _check_safetensors(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFolderError(f"{path}: not a readable safetensors file ({error}); it may be truncated or corrupt: "
                               f"copy or download the model again") from error
