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

from .plugins import get_registry


class ModelFolderError(ValueError):
    """A pipeline folder that cannot be loaded safely: a corrupt file or a module outside the mmflow plugins."""


def plugin_packages() -> set[str]:
    """Top-level packages of mmflow and of every installed mmflow plugin: the modules a model folder may name."""
    return {info.module.split(":")[0].split(".")[0] for info in get_registry().plugins}


def read_model_index(folder: str | os.PathLike) -> dict:
    """The folder's ``model_index.json`` as a mapping; a missing or unreadable index is named with the fix."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline (no model_index.json); save one with "
                                f"pipeline.save_pretrained(folder)")
    try:
        config = json.loads(index.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"{index}: not valid JSON ({error}); save the pipeline again") from error
    if not isinstance(config, dict):
        raise ModelFolderError(f"{index}: expected a JSON object of components; save the pipeline again")
    return config


def component_modules(config: dict, where: str) -> dict[str, str]:
    """Component name → module for every component of a ``model_index.json`` mapping; a module outside mmflow and the
    installed mmflow plugins is refused (before anything imports it), naming ``where`` the index comes from."""
    allowed = plugin_packages()
    modules = {}
    for name, value in config.items():
        if name.startswith("_") or not isinstance(value, list | tuple) or len(value) != 2 or value[0] is None:
            continue
        module = str(value[0])
        top = module.split(".")[0]
        if top not in allowed:
            fix = (f"install the plugin that provides it (pip install {top.replace('_', '-')})" if top.startswith("mmflow")
                   else "nothing outside mmflow plugins is imported from a model folder; use a folder from a trusted "
                   "source")
            raise ImportError(
                f"component {name!r} of {where} names the module {module!r}, which belongs to no installed mmflow "
                f"plugin (installed: {', '.join(sorted(allowed))}); {fix}"
            )
        modules[name] = module
    return modules


def import_component_module(name: str, module: str, where: str) -> None:
    """Import an allowed component module (``component_modules``), naming the plugin to reinstall when it fails."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"component {name!r} of {where} needs the module {module!r}, which does not import "
                          f"({error}); reinstall the plugin `{module.split('.')[0]}` or save the pipeline "
                          f"again") from error


def check_model_folder(folder: str | os.PathLike) -> None:
    """Refuse a folder whose ``model_index.json`` names modules outside the installed mmflow plugins, lacks a
    component's folder, or holds an unreadable ``.safetensors`` file; every message names the file and the fix.
    The allowed component modules are imported here, so diffusers finds them."""
    folder = Path(folder)
    modules = component_modules(read_model_index(folder), str(folder))
    for name, module in modules.items():
        if not (folder / name).is_dir():
            raise ModelFolderError(f"{folder} lacks the folder of its component {name!r} ({folder / name}), which "
                                   f"model_index.json lists; copy the whole model folder again")
        import_component_module(name, module, str(folder))
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
