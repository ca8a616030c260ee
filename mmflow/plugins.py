"""Plugin discovery: every installed plugin's registrations, merged into one ``Registry``.

A plugin is a module that implements some of the hooks of ``hookspecs.py`` (decorated with ``mmflow.hookimpl``) and is
announced by an entry point in the ``mmflow.plugins`` group of its distribution::

    [project.entry-points."mmflow.plugins"]
    audio_f5tts = "mmflow_audio_f5tts.plugin"

The core registers its own built-ins (the generic ``dit`` backbone, the ``local_global`` mask preset)
through the same hooks. ``get_registry()`` loads every installed plugin once; a plugin that fails to import or
that registers a name twice raises ``PluginError`` naming the plugin, its distribution and the fix.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pluggy

from . import builtins
from .hookspecs import PROJECT, MMFlowHookSpecs, hookimpl, hookspec  # noqa: F401  (re-exported for plugins)
from .streams import StreamSpec
from .tasks import TaskPreset

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmflow.plugins"
KINDS = ("streams", "stream_codecs", "pipelines", "models", "backbones", "mask_presets", "tasks", "demos", "commands", "metrics", "benchmarks")


class PluginError(RuntimeError):
    """A plugin could not be loaded, or a name it asks for is not registered."""


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str


@dataclass
class Registry:
    """Everything the installed plugins registered, merged by kind, with the plugin that provided each name."""

    streams: dict[str, StreamSpec] = field(default_factory=dict)
    stream_codecs: dict[str, Callable] = field(default_factory=dict)
    pipelines: dict[str, type] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    backbones: dict[str, type] = field(default_factory=dict)
    mask_presets: dict[str, Callable] = field(default_factory=dict)
    tasks: dict[str, TaskPreset] = field(default_factory=dict)
    demos: dict[str, Callable] = field(default_factory=dict)
    commands: dict[str, Callable] = field(default_factory=dict)
    metrics: dict[str, Callable] = field(default_factory=dict)
    benchmarks: dict[str, Callable] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)

    def _lookup(self, kind: str, name: str):
        table = getattr(self, kind)
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(
                f"no {kind[:-1].replace('_', ' ')} named {name!r} is registered (known: {known}); check the "
                f"spelling, or install the plugin that provides it and check `mmflow plugins`"
            )
        return table[name]

    def backbone(self, name: str) -> type:
        return self._lookup("backbones", name)

    def stream(self, name: str) -> StreamSpec:
        return self._lookup("streams", name)

    def stream_codec(self, name: str) -> Callable | None:
        """The codec factory registered for stream ``name``, or None (streams without one use ``TensorCodec``)."""
        return self.stream_codecs.get(name)

    def mask_preset(self, name: str) -> Callable:
        return self._lookup("mask_presets", name)

    def task(self, name: str) -> TaskPreset:
        return self._lookup("tasks", name)

    def demo(self, name: str) -> Callable:
        return self._lookup("demos", name)

    def metric(self, name: str) -> Callable:
        return self._lookup("metrics", name)

    def benchmark(self, name: str) -> Callable:
        return self._lookup("benchmarks", name)


def _add(registry: Registry, kind: str, plugin: str, items: dict):
    table = getattr(registry, kind)
    for name, value in items.items():
        if name in table:
            raise PluginError(
                f"plugin {plugin!r} registers {kind[:-1]} {name!r}, already registered by "
                f"{registry.owners[(kind, name)]!r}; uninstall one of the two"
            )
        table[name] = value
        registry.owners[(kind, name)] = plugin


def _entry_points():
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def build_registry(extra_plugins: dict[str, object] | None = None, load_entry_points: bool = True) -> Registry:
    """Load the built-ins, every installed entry-point plugin and ``extra_plugins`` into a new registry."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(MMFlowHookSpecs)
    registry = Registry()
    plugins = {"mmflow": builtins}
    infos = {"mmflow": PluginInfo("mmflow", "mmflow", _version("mmflow"), builtins.__name__)}
    if load_entry_points:
        for entry in _entry_points():
            distribution = entry.dist.name if entry.dist is not None else "?"
            try:
                module = entry.load()
            except Exception as error:
                raise PluginError(
                    f"mmflow plugin {entry.name!r} (distribution {distribution!r}, module {entry.value!r}) failed to "
                    f"load: {type(error).__name__}: {error}. Reinstall it (`pip install --force-reinstall "
                    f"{distribution}`) or uninstall it (`pip uninstall {distribution}`)"
                ) from error
            plugins[entry.name] = module
            version = entry.dist.version if entry.dist is not None else "?"
            infos[entry.name] = PluginInfo(entry.name, distribution, version, entry.value)
    for name, module in (extra_plugins or {}).items():
        plugins[name] = module
        infos[name] = PluginInfo(name, "-", "-", getattr(module, "__name__", repr(module)))
    for name, module in plugins.items():
        try:
            manager.register(module, name=name)
        except (ValueError, pluggy.PluginValidationError) as error:
            raise PluginError(f"mmflow plugin {name!r} has an invalid hook implementation: {error}") from error
        registry.plugins.append(infos[name])
    manager.check_pending()
    for name in plugins:
        plugin = manager.get_plugin(name)
        others = [p for p in manager.get_plugins() if p is not plugin]

        def results(hook: str, others=others):
            """One plugin's answers to one hook (a list of its return values, None skipped)."""
            return manager.subset_hook_caller(hook, remove_plugins=others)()

        for specs in results("mmflow_streams"):
            _add(registry, "streams", name, {spec.name: spec for spec in specs})
        for kind in ("stream_codecs", "pipelines", "models", "backbones", "mask_presets", "demos", "commands", "metrics", "benchmarks"):
            for items in results(f"mmflow_{kind}"):
                _add(registry, kind, name, items)
        for tasks in results("mmflow_tasks"):
            _add(registry, "tasks", name, {task.name: task for task in tasks})
    return registry


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = build_registry()
    return _REGISTRY
