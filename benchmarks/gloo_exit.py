"""How often a two-rank gloo run aborts at exit: as torch leaves it, with mmflow's exit handler, and with the quick
exit of mmflow's training commands; the variants alternate in one run, so all see the same machine.

A gloo worker thread that drops a finished collective's Python tensors after the main thread has reached the
interpreter's finalization kills its rank with SIGABRT ("terminate called without an active exception");
``mmflow/training/process_group.py`` says why. Each launch is two ranks under ``torchrun`` that all-reduce once
(rank 1 arrives 0.5 s late) and then end without destroying the group: ``return`` (the script ends) or ``raise``
(rank 1 raises). ``reference`` does nothing more; ``handler`` calls ``end_process_group_at_exit()`` after
``init_process_group``, as the Trainer and the vocoder recipe do; ``fast_exit`` ends with
``mmflow.cli.exit_without_teardown`` (on ``return``; a raising rank takes Python's normal way out), as ``mmflow
train`` and the recipes do.

Per variant and ending the JSON holds the launches, how many printed the abort, and the exit codes seen.

    python benchmarks/gloo_exit.py --launches 30

Writes benchmarks/results/gloo-exit.json (or --out).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mmflow.io import write_text_atomic
from mmflow.testing import NATIVE_ABORT, free_port

logger = logging.getLogger("benchmarks.gloo_exit")

RANK_SCRIPT = """
import sys, time, torch
import mmflow.training.trainer  # imported before the group exists, as in a training script
import torch.distributed as dist
variant, ending = sys.argv[1:3]
dist.init_process_group("gloo")
if variant == "handler":
    from mmflow.training.process_group import end_process_group_at_exit
    end_process_group_at_exit()
if dist.get_rank() == 1:
    time.sleep(0.5)
dist.all_reduce(torch.ones(1000))
if ending == "raise" and dist.get_rank() == 1:
    raise ValueError("the rank's own error")
if variant == "fast_exit":
    from mmflow.cli import exit_without_teardown
    exit_without_teardown(0)
"""
VARIANTS = ("reference", "handler", "fast_exit")
ENDINGS = ("return", "raise")


def launch(script: Path, variant: str, ending: str) -> tuple[int, bool]:
    """(exit code of torchrun, whether a rank printed the native abort) for one two-rank launch."""
    command = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script), variant, ending]  # port 0 hangs torchrun when a rank raises
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    return result.returncode, NATIVE_ABORT in result.stderr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=20, help="launches per variant and ending")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--endings", nargs="+", choices=ENDINGS, default=list(ENDINGS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gloo-exit.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "rank.py"
        script.write_text(RANK_SCRIPT)
        for ending in args.endings:
            counts = {v: {"launches": 0, "aborted": 0, "exit_codes": collections.Counter()} for v in args.variants}
            for index in range(args.launches):
                for variant, count in counts.items():
                    code, aborted = launch(script, variant, ending)
                    count["launches"] += 1
                    count["aborted"] += aborted
                    count["exit_codes"][str(code)] += 1
                logger.info("%s %d/%d: %s", ending, index + 1, args.launches,
                            {v: c["aborted"] for v, c in counts.items()})
            results[ending] = {v: {**c, "exit_codes": dict(c["exit_codes"])} for v, c in counts.items()}
    report = {"benchmark": "gloo_exit", "torch": torch.__version__, "python": platform.python_version(),
              "cpus": os.cpu_count(), "launches_per_variant": args.launches, "results": results}
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
