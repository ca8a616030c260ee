"""mmflow's saved pipelines through diffusers' own loader: ``DiffusionPipeline.from_pretrained(folder or org/name)``.

diffusers resolves a folder's ``model_index.json`` in two places, and mmflow registers itself in both (by
``register_with_diffusers``, which ``import mmflow`` calls):

- ``_class_name`` is looked up as an attribute of the ``diffusers`` module. The pipeline classes that installed plugins
  register (``mmflow_pipelines``: ``MMFlowPipeline``, ``JAMFlowPipeline``...) are added to the names diffusers knows,
  resolved through the mmflow registry when diffusers first asks for a name it does not have. Only registered
  classes: a folder cannot name any other.
- Each component's ``[module, class]``: diffusers imports a module only when it is one of its ``LOADABLE_CLASSES``
  libraries (else it must already be imported). The modules of mmflow and of every installed mmflow plugin package
  are registered there with the save/load methods of diffusers' and transformers' base classes (found by name, not
  imported). The saved format does not change: components keep their full module path (``mmflow.transformer``).

Loading checks every component module before diffusers imports any (``MMFlowPipeline.extract_init_dict`` →
``allow_component_modules``): a module outside mmflow and the installed plugins is refused with the fix. Nothing in
the folder is code, and mmflow never needs ``trust_remote_code``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import pkgutil

logger = logging.getLogger(__name__)

CORE = "mmflow"


class _MMFlowPipelineNames(dict):
    """diffusers' top-level extra objects (``diffusers._objects``, read before its lazy imports) plus, on a miss, the
    pipeline classes registered by mmflow plugins."""

    def __contains__(self, name) -> bool:
        return super().__contains__(name) or registered_pipeline(name) is not None

    def __missing__(self, name):
        cls = registered_pipeline(name)
        if cls is None:
            raise KeyError(name)
        return cls


_RESOLVING = False


def registered_pipeline(name) -> type | None:
    """The mmflow pipeline class registered as ``name``, or None. Only class-like names (capitalised) that diffusers
    lacks are looked up, and none while the plugins are still loading, so other attribute misses on ``diffusers``
    stay cheap."""
    global _RESOLVING
    import diffusers

    if not isinstance(name, str) or not name[:1].isupper() or _RESOLVING:
        return None
    if name in getattr(diffusers, "_class_to_module", {}) or name in getattr(diffusers, "_modules", ()):
        return None
    from .plugins import get_registry

    _RESOLVING = True
    try:
        return get_registry().pipelines.get(name)
    finally:
        _RESOLVING = False


def plugin_module_names() -> list[str]:
    """Every module under mmflow and the installed mmflow plugin packages (from the installed files; nothing is
    imported). Top-level package names are left out: registering those would change how components are saved."""
    tops = {CORE} | {entry.value.split(":")[0].split(".")[0]
                     for entry in importlib.metadata.entry_points(group="mmflow.plugins")}
    names = []
    for top in sorted(tops):
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            continue
        names += _walk(list(spec.submodule_search_locations), f"{top}.")
    return names


def _walk(paths: list[str], prefix: str) -> list[str]:
    """Module names under ``paths``, subpackages included, read from the files (``pkgutil.walk_packages`` would
    import every subpackage)."""
    names = []
    for info in pkgutil.iter_modules(paths, prefix):
        names.append(info.name)
        if info.ispkg:
            names += _walk([os.path.join(info.module_finder.path, info.name.rsplit(".", 1)[-1])], f"{info.name}.")
    return names


def _loadable_methods() -> dict[str, list[str]]:
    from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

    methods = {}
    for library in ("diffusers", "transformers"):
        methods.update({base: list(pair) for base, pair in LOADABLE_CLASSES.get(library, {}).items()})
    return methods


def register_libraries(modules) -> None:
    """Let diffusers import components from ``modules`` (each checked to be mmflow's or an installed plugin's)."""
    from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

    methods = _loadable_methods()
    for module in modules:
        if module not in LOADABLE_CLASSES and "." in module:
            LOADABLE_CLASSES[module] = dict(methods)


def allow_component_modules(config: dict) -> None:
    """Before diffusers loads the components of a ``model_index.json`` mapping: refuse modules outside mmflow and the
    installed plugins (``mmflow.model_folder.component_modules``), import the others and register them."""
    from .model_folder import component_modules, import_component_module

    where = f"the {config.get('_class_name', 'pipeline')} being loaded (its model_index.json)"
    modules = component_modules(config, where)
    for name, module in modules.items():
        import_component_module(name, module, where)
    register_libraries(modules.values())


_REGISTERED = False


def register_with_diffusers() -> None:
    """Make ``diffusers.DiffusionPipeline.from_pretrained`` load mmflow pipelines (once; ``import mmflow`` calls it)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import diffusers

    objects = getattr(diffusers, "_objects", None)
    if not isinstance(objects, dict):
        logger.warning("diffusers %s has no lazy-module object table; DiffusionPipeline.from_pretrained cannot find "
                       "mmflow pipelines (MMFlowPipeline.from_pretrained still can)", diffusers.__version__)
    elif not isinstance(objects, _MMFlowPipelineNames):
        diffusers._objects = _MMFlowPipelineNames(objects)
    register_libraries(plugin_module_names())
    _REGISTERED = True
