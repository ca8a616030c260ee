"""Plugin hook specifications and discovery.

A plugin is a module that implements some of the hooks below (decorated with ``mmflow.hookimpl``) and is
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

from .streams import StreamSpec

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmflow.plugins"
hookspec = pluggy.HookspecMarker("mmflow")
hookimpl = pluggy.HookimplMarker("mmflow")


class PluginError(RuntimeError):
    """A plugin could not be loaded, or a name it asks for is not registered."""


@dataclass(frozen=True)
class TaskPreset:
    """A named inpainting task: which streams are generated and which are given whole.

    Streams named in neither keep whatever ``given`` mask the caller passes (e.g. a reference prompt).
    """

    name: str
    description: str
    generate: tuple[str, ...]
    given: tuple[str, ...] = ()


class MMFlowHookSpecs:
    """The hooks a plugin may implement. Each returns a mapping or list; the registry merges them."""

    @hookspec
    def mmflow_streams(self) -> list[StreamSpec]:
        """Default specs of the streams this plugin provides (name, frame rate, channels, position policy).

        Models may override channels per config; the name and rate say what the stream is.
        """

    @hookspec
    def mmflow_backbones(self) -> dict[str, type]:
        """Stream backbone classes by name (subclasses of ``mmflow.backbone.StreamBackbone``).

        A model config names its backbone (``"backbone": "f5tts_dit"``) and the registry builds it.
        """

    @hookspec
    def mmflow_mask_presets(self) -> dict[str, Callable]:
        """Mask policy factories by name: ``factory(**kwargs) -> MaskPolicy``."""

    @hookspec
    def mmflow_tasks(self) -> list[TaskPreset]:
        """Named tasks (which streams are generated, which are given) this plugin's streams support."""

    @hookspec
    def mmflow_demos(self) -> dict[str, Callable]:
        """Demos for ``mmflow demo NAME``: ``demo(argv: list[str]) -> int`` (an exit status)."""

    @hookspec
    def mmflow_commands(self) -> dict[str, Callable]:
        """Subcommands of ``mmflow``: ``add(subparsers) -> None`` adds its parser (``set_defaults(run=...)``,
        ``run(args) -> int``). E.g. the JAM-Flow plugin adds ``mmflow generate``."""


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
    backbones: dict[str, type] = field(default_factory=dict)
    mask_presets: dict[str, Callable] = field(default_factory=dict)
    tasks: dict[str, TaskPreset] = field(default_factory=dict)
    demos: dict[str, Callable] = field(default_factory=dict)
    commands: dict[str, Callable] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)

    def _lookup(self, kind: str, name: str):
        table = getattr(self, kind)
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(
                f"no {kind[:-1].replace('_', ' ')} named {name!r} is registered (known: {known}); install the plugin "
                f"that provides it (e.g. `pip install mmflow-audio-f5tts`) and check `mmflow plugins`"
            )
        return table[name]

    def backbone(self, name: str) -> type:
        return self._lookup("backbones", name)

    def stream(self, name: str) -> StreamSpec:
        return self._lookup("streams", name)

    def mask_preset(self, name: str) -> Callable:
        return self._lookup("mask_presets", name)

    def task(self, name: str) -> TaskPreset:
        return self._lookup("tasks", name)

    def demo(self, name: str) -> Callable:
        return self._lookup("demos", name)


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
    from . import builtins

    manager = pluggy.PluginManager("mmflow")
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
        for kind in ("backbones", "mask_presets", "demos", "commands"):
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
