"""``mmflow generate``: run a task of any saved model whose plugins are installed.

    mmflow generate --model FOLDER --task NAME --input NAME=VALUE ... --out DIR

The folder's ``model_index.json`` names its pipeline class, which must be one a plugin registered
(``mmflow_pipelines``); ``--model`` may also name a model a plugin ships (``mmflow plugins`` lists them), and
without ``--model`` the shipped ``default`` is used. The pipeline class owns the rest of the command line
(``cli_main``): ``MMFlowPipeline`` reads the task's declared inputs as ``--input NAME=VALUE`` (``mmflow tasks``
lists them); a pipeline may offer its own flags (e.g. ``JAMFlowPipeline``'s ``--text``, ``--portrait``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .hub import resolve_pretrained
from .model_folder import read_model_index
from .plugins import PluginError, get_registry

HELP = "run a task of a saved model (`mmflow generate --model FOLDER --task NAME --help` for its options)"


def resolve_model(model: str | None) -> Path:
    """A model folder from ``--model``: a folder, a model name a plugin ships, a Hub id (``org/name``) in the local
    Hugging Face cache, or (None) the shipped default."""
    models = get_registry().models
    if model is None:
        if "default" not in models:
            raise ValueError(f"no default model is installed; pass --model FOLDER (or one of {sorted(models)})")
        return Path(models["default"])
    if model in models and not Path(model).exists():
        return Path(models[model])
    folder = resolve_pretrained(model)
    if not (folder / "model_index.json").is_file():
        known = f" or one of the installed models {sorted(models)}" if models else ""
        raise FileNotFoundError(f"--model {model}: not a saved pipeline folder (no model_index.json); pass a folder "
                                f"written by save_pretrained / mmflow train{known}")
    return folder


def pipeline_class(folder: Path) -> type:
    """The registered pipeline class a saved folder names (nothing else is ever imported for it)."""
    index = folder / "model_index.json"
    name = read_model_index(folder).get("_class_name")
    pipelines = get_registry().pipelines
    if name not in pipelines:
        raise PluginError(f"{index} names the pipeline class {name!r}, which no installed mmflow plugin registers "
                          f"(registered: {sorted(pipelines)}); install the plugin that provides it")
    return pipelines[name]


def main(argv: list[str]) -> int:
    """Find the model's pipeline class, then let it parse the command line and run."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model")
    known, _ = peek.parse_known_args(argv)
    wants_help = any(arg in ("-h", "--help") for arg in argv)
    try:
        folder = resolve_model(known.model)
    except (ValueError, FileNotFoundError):
        if not wants_help:
            raise
        print(__doc__)
        return 0
    return int(pipeline_class(folder).cli_main(argv, folder) or 0)


def add_generate(subparsers) -> None:
    """``generate`` in ``mmflow --help``; its arguments are the model's (``main`` parses what argparse leaves)."""
    parser = subparsers.add_parser("generate", help=HELP, add_help=False)
    parser.set_defaults(run=lambda args: main(args.rest), takes_rest=True)


def _input(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"--input takes NAME=VALUE (e.g. signal=clip.npy), got {value!r}")
    return name, rest


def span_argument(value: str) -> tuple[str, float, float]:
    """``--span STREAM:START:END`` (seconds) as ``(stream, start, end)``."""
    try:
        stream, start, end = value.split(":")
        return stream, float(start), float(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--span takes STREAM:START:END seconds (e.g. audio:1.0:1.6), got "
                                         f"{value!r}") from None


def length_buckets_argument(value: str):
    """``--length-buckets time_aligned|off|JSON``, checked before the model loads (its streams once it has)."""
    import json

    from .buckets import OFF, TIME_ALIGNED, check_config

    forms = 'time_aligned, off, or a JSON ladder such as \'{"min_length": 64, "growth": 1.25, "multiple": 16}\''
    try:
        setting = value if value in (TIME_ALIGNED, OFF) else json.loads(value)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--length-buckets: expected {forms}; {value!r} is not JSON ({error})") from None
    try:
        check_config(setting, "--length-buckets")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return setting


def add_length_buckets_option(parser: argparse.ArgumentParser) -> None:
    """``--length-buckets``: every pipeline's command line has it (``apply_length_buckets`` applies it)."""
    parser.add_argument("--length-buckets", type=length_buckets_argument, metavar="time_aligned|off|JSON",
                        help="pad attention to bucket lengths in this run (docs/concepts.md, length bucketing); "
                        "default: the model's saved setting. The model folder is not changed")


def apply_length_buckets(pipe, setting) -> None:
    """This run's ``--length-buckets`` on the loaded model (in memory only; ``None``: the saved setting)."""
    from .buckets import model_setting

    if setting is not None:  # checked against the model's streams first, so an error names the flag
        pipe.transformer.length_buckets = model_setting(setting, pipe.transformer.stream_rates, "--length-buckets")[0]


def collect_spans(spans) -> dict[str, list[tuple[float, float]]]:
    """Repeated ``--span`` values as a pipeline's ``spans=`` (per stream, in the order given)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for stream, start, end in spans or []:
        out.setdefault(stream, []).append((start, end))
    return out


def _task_listing(pipe) -> str:
    lines = ["tasks of this model and their inputs (--input NAME=VALUE):"]
    for name, task in sorted(pipe.tasks.items()):
        lines.append(f"  {name}: {task.description}")
        for item in pipe.task_inputs(task):
            lines.append(f"      {item.name}{'' if item.required else ' (optional)'}: {item.description}")
    return "\n".join(lines)


def generic_cli_main(pipeline_cls, argv: list[str], folder: Path) -> int:
    """``mmflow generate`` for a pipeline without flags of its own: the task's declared inputs as ``--input``."""
    import logging

    from .io import check_stem, folder_lock, output_folder

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pipe = pipeline_cls.from_pretrained(folder)
    parser = argparse.ArgumentParser(prog="mmflow generate", description=__doc__, epilog=_task_listing(pipe),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="saved pipeline folder, or the name of an installed model")
    parser.add_argument("--task", required=True, choices=sorted(pipe.tasks), metavar="TASK",
                        help="task to run (listed below)")
    parser.add_argument("--input", type=_input, action="append", default=[], metavar="NAME=VALUE",
                        help="an input of the task (repeatable); files are read by the stream's codec")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--stem", default="sample", help="output file name stem")
    parser.add_argument("--steps", type=int, help="solver steps (default: the model's scheduler)")
    parser.add_argument("--cfg", type=float, default=0.0, help="classifier-free guidance scale, generated streams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, help="seconds to generate (default: from the given inputs)")
    parser.add_argument("--span", type=span_argument, action="append", help="editing tasks: STREAM:START:END (repeatable)")
    parser.add_argument("--joint-attention", action=argparse.BooleanOptionalAction, default=True,
                        help="couple the streams (--no-joint-attention: each stream alone, the ablation)")
    parser.add_argument("--device", default="cpu")
    add_length_buckets_option(parser)
    args = parser.parse_args(argv)
    apply_length_buckets(pipe, args.length_buckets)
    stem = check_stem(args.stem)
    inputs = dict(args.input)
    twice = sorted({name for name, _ in args.input if [n for n, _ in args.input].count(name) > 1})
    if twice:
        raise ValueError(f"--input names {twice} more than once")
    spans = collect_spans(args.span)
    pipe.to(args.device)
    result = pipe(args.task, num_inference_steps=args.steps, guidance_scale=args.cfg, seed=args.seed,
                  duration=args.duration, spans=spans or None, joint_attention=args.joint_attention, **inputs)
    with output_folder(args.out) as out, folder_lock(out):
        for path in pipe.save(result, out, stem):  # atomic writes; never over a folder or other non-file
            print(path)
    return 0
