"""``mmflow evaluate``: generate a benchmark with a model (or read existing outputs), score it, print the table.

    mmflow evaluate --model FOLDER --benchmark NAME [--benchmark-root DIR] [--benchmark-option KEY=VALUE]
                    [--metrics a,b] [--metric-option METRIC.KEY=VALUE] [--limit N] [--out DIR]
    mmflow evaluate --outputs DIR --benchmark NAME --metrics a,b
    mmflow evaluate --list

See docs/evaluation.md for the evaluation folder, the metrics and how plugins add their own.
"""

from __future__ import annotations

import argparse
import logging

HELP = "score a model (or a folder of outputs) on a benchmark with registered metrics"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the registered metrics and benchmarks, and exit")
    parser.add_argument("--model", help="saved pipeline folder, installed model name or cached Hub id "
                                        "(default: the installed default)")
    parser.add_argument("--outputs", help="score this folder of existing outputs (<id>.wav, <id>.mp4, <id>.npz or "
                                          "<id>/) instead of generating")
    parser.add_argument("--benchmark", help="registered benchmark list (see --list)")
    parser.add_argument("--benchmark-root", help="local dataset folder of the benchmark")
    parser.add_argument("--benchmark-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the benchmark's loader, e.g. segment_seconds=10 for hdtf (repeatable)")
    parser.add_argument("--metrics", help="comma-separated metric names (default: every metric the samples and "
                                          "references can feed and that needs no weights you must supply)")
    parser.add_argument("--metric-option", action="append", default=[], metavar="METRIC.KEY=VALUE",
                        help="an option of one metric, e.g. wer.model=/path (repeatable)")
    parser.add_argument("--out", help="evaluation folder (default: evaluation/<benchmark>)")
    parser.add_argument("--limit", type=_positive, help="the first N items only")
    parser.add_argument("--seed", type=int, default=0, help="item i is generated with seed + i")
    parser.add_argument("--steps", type=_positive, help="solver steps (default: the model's scheduler)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def listing(registry) -> str:
    """Registered metrics and benchmarks, each with the plugin that provides it."""
    lines = ["metrics:"]
    for name in sorted(registry.metrics):
        lines.append(f"  {name}  ({registry.owners[('metrics', name)]})")
    lines.append("benchmarks:")
    for name in sorted(registry.benchmarks):
        lines.append(f"  {name}  ({registry.owners[('benchmarks', name)]})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..plugins import get_registry
    from .report import markdown_table
    from .runner import evaluate, parse_benchmark_options, parse_metric_options

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    registry = get_registry()
    if args.list:
        print(listing(registry))
        return 0
    if not args.benchmark:
        raise SystemExit(f"mmflow evaluate: --benchmark is required (one of {sorted(registry.benchmarks)}; --list)")
    metrics = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    results = evaluate(args.benchmark, model=args.model, outputs=args.outputs, benchmark_root=args.benchmark_root,
                       benchmark_options=parse_benchmark_options(args.benchmark_option),
                       metrics=metrics, metric_options=parse_metric_options(args.metric_option), out=args.out,
                       limit=args.limit, seed=args.seed, steps=args.steps, device=args.device, registry=registry)
    print(markdown_table(results))
    return 0
