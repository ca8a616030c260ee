"""The ``mmflow`` command line: list plugins and tasks, run demos."""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading

from .io import OutputLockedError
from .plugins import KINDS, PluginError, get_registry


def _plugins(args) -> int:
    registry = get_registry()
    print(f"{'plugin':<22}{'distribution':<28}{'version':<10}module")
    for info in registry.plugins:
        print(f"{info.name:<22}{info.distribution:<28}{info.version:<10}{info.module}")
    for kind in KINDS:
        table = getattr(registry, kind)
        entries = ", ".join(f"{name} ({registry.owners[(kind, name)]})" for name in sorted(table)) or "-"
        print(f"{kind.replace('_', ' ') + ':':<14}{entries}")
    return 0


def _tasks(args) -> int:
    """Each task with its streams' roles and its inputs (a block per task, so long names never break a table)."""
    from .codecs import TensorCodec
    from .tasks import declared_inputs

    registry = get_registry()

    def codec_of(stream: str):
        spec = registry.streams.get(stream)
        factory = registry.stream_codec(stream)
        return factory(spec, None) if factory is not None else TensorCodec(spec)

    for name in sorted(registry.tasks):
        task = registry.tasks[name]
        print(f"{name}  [{registry.owners[('tasks', name)]}]  {task.description}")
        roles = {"generates": task.generate, "given": task.given, "absent": task.absent}
        print("    " + "   ".join(f"{role}: {', '.join(streams)}" for role, streams in roles.items() if streams)
              + ("   (editable: takes spans=)" if task.editable else ""))
        streams = [*task.generate, *task.given, *task.absent]
        if all(stream in registry.streams for stream in streams):
            for item in declared_inputs(task, streams, codec_of):
                print(f"    {item.name}{'' if item.required else ' (optional)'}: {item.description}")
        print()
    return 0


def _demo(args) -> int:
    registry = get_registry()
    if args.name is None:  # `mmflow demo`: what there is to run
        for name in sorted(registry.demos):
            demo = registry.demos[name]
            doc = (demo.__doc__ or sys.modules[demo.__module__].__doc__ or "").strip().splitlines()
            print(f"{name}  [{registry.owners[('demos', name)]}]  {doc[0] if doc else ''}")
        return 0
    return int(registry.demo(args.name)(args.demo_args) or 0)


def _versions() -> str:
    """mmflow's version and every installed plugin's (``mmflow --version``)."""
    from . import __version__

    plugins = ", ".join(f"{info.distribution} {info.version}" for info in get_registry().plugins
                        if info.distribution != "mmflow")
    return f"mmflow {__version__}" + (f" (plugins: {plugins})" if plugins else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmflow", description="Multimodal flow-matching models.")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--version"]:
        print(_versions())
        return 0
    parser.add_argument("--version", action="store_true", help="print the versions of mmflow and its plugins")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("plugins", help="list installed plugins and what they register").set_defaults(run=_plugins)
    commands.add_parser("tasks", help="list the tasks the installed plugins register").set_defaults(run=_tasks)
    demo = commands.add_parser("demo", help="run a demo registered by a plugin (e.g. `mmflow demo toy`); "
                               "without a name, list them")
    demo.add_argument("name", nargs="?", help="demo name (without one: the list of demos)")
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help="arguments passed to the demo")
    demo.set_defaults(run=_demo)
    try:
        for add in get_registry().commands.values():
            add(commands)
    except PluginError as error:
        print(f"mmflow: error: {error}", file=sys.stderr)
        return 2
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "takes_rest", False):  # a command that parses its own arguments (`mmflow generate`)
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args)
    except (PluginError, ValueError, OSError, ImportError, OutputLockedError) as error:  # bad input: one clear line
        print(f"mmflow: error: {error}", file=sys.stderr)
        return 2


FAST_EXIT_COMMANDS = frozenset({"generate", "train"})
"""Commands whose process may end without the interpreter's teardown (``exit_without_teardown``): everything they
write is closed and renamed into place before they return. For ``train`` it also means that no gloo worker thread
can abort a rank during that teardown (``mmflow/training/process_group.py``)."""


def exit_without_teardown(code: int) -> None:
    """End the process now, skipping only the interpreter's teardown of its modules.

    Tearing down the ~4000 modules that torch, diffusers and transformers load takes about 1.2 s on 2 CPU cores,
    a sixth of ``mmflow generate`` for a 6 s clip (issue 19), and does nothing for the user. What teardown would
    still do is done here first: the atexit handlers run (logging's flush, temporary folders, helper processes) and
    stdout/stderr are flushed. While another non-daemon thread is alive the normal exit is taken, which waits for it.
    """
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`mmflow generate ... | head`): nothing left to deliver
            pass
    os._exit(code)


def run() -> None:
    """The ``mmflow`` console script: ``main()``, and for the commands of ``FAST_EXIT_COMMANDS`` a quick exit."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in FAST_EXIT_COMMANDS:
        exit_without_teardown(code)
    else:
        sys.exit(code)


if __name__ == "__main__":
    run()
