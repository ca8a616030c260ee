"""Mutation testing of the numerical core: does each module's own fast test selection notice a one-line bug?

mutmut (requirements/mutation.txt; not installed by CI) plants one small change at a time in one module and
runs only the tests of that module's selection that call the changed function. A mutant the tests do not
notice "survives"; each survivor must either get a test that kills it or be listed in
benchmarks/mutation_equivalents.toml as equivalent (the mutated code computes the same thing), with a reason.

    python benchmarks/mutation.py                   # every module, one after the other (about 40 min, 1 core)
    python benchmarks/mutation.py --module flow     # one module; the others' results in the JSON are kept

Each module runs in its own scratch folder build/mutation/<module>/ (the package and its tests as committed
at --rev, default HEAD, and a setup.cfg for mutmut and pytest), niced, on one worker and one thread.
Results go to benchmarks/results/mutation.json: per module killed, survived, timeout, no tests, the kill rate
and every survivor with its diff and, where listed, why it is equivalent.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

from mmflow.io import write_text_atomic

logger = logging.getLogger("mutation")

REPO = Path(__file__).resolve().parent.parent
SCRATCH = REPO / "build" / "mutation"
EQUIVALENTS = REPO / "benchmarks" / "mutation_equivalents.toml"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "mutation.json"
# mutmut exit codes (mutmut.stats.status_by_exit_code) folded into the columns of the results
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout"}


@dataclass(frozen=True)
class Target:
    """One module to mutate and the narrowest fast tests that cover it.

    ``root`` is the folder that holds ``package`` and its ``tests`` folder (the repository or a plugin's).
    """

    root: str
    package: str
    module: str  # path inside root
    tests: tuple[str, ...]  # pytest selection, relative to root
    extra: tuple[str, ...] = ()  # folders the tests read by repository path, copied to the same place

    @property
    def path(self) -> str:
        return str(Path(self.root) / self.module) if self.root != "." else self.module


AUDIO, MOTION = "plugins/audio_f5tts", "plugins/motion_liveportrait"
TARGETS = {
    "flow": Target(".", "mmflow", "mmflow/flow.py", ("tests/test_flow.py", "tests/test_maths_pinned.py",
                                                          "tests/test_flow_values.py")),
    "masks": Target(".", "mmflow", "mmflow/masks.py", ("tests/test_masks.py", "tests/test_masks_values.py")),
    "positions": Target(".", "mmflow", "mmflow/positions.py", ("tests/test_positions.py", "tests/test_positions_values.py")),
    "transformer": Target(".", "mmflow", "mmflow/transformer.py", ("tests/test_transformer.py", "tests/test_transformer_values.py",
                                                                   "tests/test_gradient_checkpointing.py",
        # reads a config from examples/ by repository path; its trainer path is not this module's
        "--deselect", "tests/test_gradient_checkpointing.py::test_training_config_switch_turns_it_on_in_the_trainer")),
    "scheduler": Target(".", "mmflow", "mmflow/scheduler.py", (
        "tests/test_scheduler.py", "tests/test_scheduler_values.py", "tests/test_maths_pinned.py",
        "tests/test_flow_values.py::test_scheduler_puts_its_grid_on_the_requested_device",
        "tests/test_flow.py::test_scheduler_component_round_trip_and_sampling"),
        extra=("plugins/audio_f5tts/tests",)),  # test_scheduler reads the F5-TTS reference helper there
    "long_form": Target(".", "mmflow", "mmflow/long_form.py", ("tests/test_long_form.py", "tests/test_long_form_values.py")),
    "ema": Target(".", "mmflow", "mmflow/training/ema.py", ("tests/test_maths_pinned.py", "tests/test_ema_values.py")),
    "mel": Target(AUDIO, "mmflow_audio_f5tts", "mmflow_audio_f5tts/mel.py", ("tests/test_audio_mel.py", "tests/test_mel_values.py")),
    "text": Target(AUDIO, "mmflow_audio_f5tts", "mmflow_audio_f5tts/text.py", ("tests/test_audio_text.py", "tests/test_text_values.py")),
    "keypoints": Target(MOTION, "mmflow_motion_liveportrait", "mmflow_motion_liveportrait/keypoints.py",
                        ("tests/test_lp_keypoints.py", "tests/test_keypoints_values.py")),
    # last: other work on the trainer may change this module while the study runs
    "checkpoint": Target(".", "mmflow", "mmflow/training/checkpoint.py", ("tests/test_checkpoint_values.py",)),
}

SETUP_CFG = """\
# Written by benchmarks/mutation.py for one module; the folder is scratch and is rebuilt on every run.
[mutmut]
source_paths = {package}
only_mutate = {module}
also_copy =
{also_copy}
pytest_add_cli_args_test_selection =
{tests}
pytest_add_cli_args =
    -p
    no:cacheprovider
# raise statements and log calls carry messages, not maths; the conditions that lead to them are mutated
do_not_mutate_patterns =
    ^\s*raise\s
    ^\s*logger\.(debug|info|warning|error)\(

[tool:pytest]
addopts = --import-mode=importlib -p no:cacheprovider
timeout = 300
markers =
    gpu: needs a CUDA device (skipped without one)
    slow: takes more than a few seconds
"""


def mutmut_command() -> list[str]:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.is_file():
        raise SystemExit(f"mutmut is not installed next to {sys.executable}; install it with "
                         f"`{sys.executable} -m pip install -r requirements/mutation.txt`")
    return [str(exe)]


# Every package the editable install provides: all of them come from the same source (the commit, or the
# working tree), or a plugin from the working tree would import a mmflow that is not its own.
PACKAGES = {"mmflow": ".", "mmflow_audio_f5tts": AUDIO, "mmflow_motion_liveportrait": MOTION,
            "mmflow_jamflow": "plugins/jamflow", "mmflow_toy_gesture": "examples/toy_gesture"}


def prepare(name: str, target: Target, rev: str | None) -> Path:
    """A fresh scratch folder with the packages, the target's tests and the per-module config.

    With ``rev`` the code and tests are that commit's (other work in the tree does not leak in); without it
    they are links to the working tree (to try a new test before committing it).
    """
    folder = SCRATCH / name
    if folder.exists():
        shutil.rmtree(folder)  # only ever this script's own scratch output
    folder.mkdir(parents=True)
    parts = {package: Path(root) / package for package, root in PACKAGES.items()}
    parts["tests"] = Path(target.root) / "tests"
    parts.update({extra: Path(extra) for extra in target.extra})
    if rev is None:
        for part, path in parts.items():
            (folder / part).parent.mkdir(parents=True, exist_ok=True)
            (folder / part).symlink_to(REPO / path, target_is_directory=True)
    else:
        archive = subprocess.run(["git", "archive", rev, "--", *map(str, parts.values())], cwd=REPO,
                                 capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(folder / "tree", filter="data")
        for part, path in parts.items():
            (folder / part).parent.mkdir(parents=True, exist_ok=True)
            (folder / "tree" / path).rename(folder / part)
        shutil.rmtree(folder / "tree")
    tests = "\n".join(f"    {t}" for t in target.tests)
    also_copy = "\n".join(f"    {p}" for p in [*PACKAGES, *target.extra] if p != target.package)
    (folder / "setup.cfg").write_text(SETUP_CFG.format(package=target.package, module=target.module, tests=tests,
                                                       also_copy=also_copy))
    return folder


def run_mutmut(folder: Path, log: Path) -> float:
    # no TorchDynamo: FlexAttention's CPU path would trace mutmut's trampolines (ContextVar) and fail; eager
    # FlexAttention computes the same masks
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               TORCHDYNAMO_DISABLE="1")
    start = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(["nice", "-n", "10", *mutmut_command(), "run", "--max-children", "1"],
                                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"mutmut failed in {folder} (exit {result.returncode}); its output is in {log}")
    return seconds


def changed_lines(diff: str) -> tuple[str, str]:
    """The original and the mutated lines of a mutant's diff, stripped and joined."""
    lines = diff.splitlines()
    old = [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")]
    new = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    return "\n".join(old), "\n".join(new)


def load_equivalents() -> list[dict]:
    if not EQUIVALENTS.is_file():
        return []
    return tomllib.loads(EQUIVALENTS.read_text())["equivalent"]


def survivors(folder: Path, target: Target, codes: dict[str, int | None], equivalents: list[dict]) -> list[dict]:
    out = []
    for key, code in sorted(codes.items()):
        if STATUS.get(code, "suspicious") in ("killed", "timeout"):
            continue
        diff = subprocess.run([*mutmut_command(), "show", key], cwd=folder, capture_output=True, text=True).stdout
        old, new = changed_lines(diff)
        out.append({"mutant": key, "status": STATUS.get(code, "suspicious"), "original": old, "mutated": new,
                    "equivalent": _reason(target, old, new, equivalents)})
    return out


def _reason(target: Target, old: str, new: str, equivalents: list[dict]) -> str | None:
    """Why the mutant that turns ``old`` into ``new`` is equivalent, if the list says so."""
    reasons = [e["reason"] for e in equivalents
               if e["module"] == target.path and e["original"] == old and e["mutated"] == new]
    return reasons[0] if reasons else None


def study(name: str, target: Target, equivalents: list[dict], rev: str | None, previous: dict | None) -> dict:
    """Run mutmut on one module (or, with ``previous``, only re-read its last run) and sum up the result."""
    if previous is not None:  # the counts and diffs are in the last results: only match them against the list
        left = [dict(s, equivalent=_reason(target, s["original"], s["mutated"], equivalents))
                for s in previous["survivors"]]
        explained = sum(s["equivalent"] is not None for s in left)
        detected = previous["killed"] + previous["timeout"]
        return dict(previous, equivalent=explained, unexplained=len(left) - explained, survivors=left,
                    kill_rate_of_non_equivalent=round(detected / (previous["mutants"] - explained), 4))
    folder = prepare(name, target, rev)
    seconds = run_mutmut(folder, folder / "mutmut.log")
    meta = json.loads((folder / "mutants" / (target.module + ".meta")).read_text())
    codes = meta["exit_code_by_key"]
    counts = {"killed": 0, "survived": 0, "timeout": 0, "no tests": 0, "other": 0}
    for code in codes.values():
        status = STATUS.get(code, "other")
        counts[status if status in counts else "other"] += 1
    left = survivors(folder, target, codes, equivalents)
    explained = sum(s["equivalent"] is not None for s in left)
    detected = counts["killed"] + counts["timeout"]
    return {
        "module": target.path,
        "source": rev or "working tree",
        "tests": list(target.tests),
        "mutants": len(codes),
        **{k.replace(" ", "_"): v for k, v in counts.items()},
        "equivalent": explained,
        "unexplained": len(left) - explained,
        "kill_rate": round(detected / len(codes), 4) if codes else None,
        "kill_rate_of_non_equivalent": round(detected / (len(codes) - explained), 4) if codes else None,
        "seconds": round(seconds, 1),
        "survivors": left,
    }


def summary(modules: dict[str, dict]) -> dict:
    done = [m for m in modules.values() if "mutants" in m]
    total = sum(m["mutants"] for m in done)
    detected = sum(m["killed"] + m["timeout"] for m in done)
    equivalent = sum(m["equivalent"] for m in done)
    return {
        "tool": f"mutmut {_mutmut_version()}",
        "command": "python benchmarks/mutation.py",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "workers": 1},
        "excluded": "raise statements and logger calls (messages, not maths); their conditions are mutated",
        "total": {"mutants": total, "detected": detected, "equivalent": equivalent,
                  "unexplained": sum(m["unexplained"] for m in done),
                  "kill_rate": round(detected / total, 4) if total else None,
                  "kill_rate_of_non_equivalent": round(detected / (total - equivalent), 4) if total else None,
                  "seconds": round(sum(m["seconds"] for m in done), 1)},
        "modules": {name: modules[name] for name in TARGETS if name in modules},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS),
                        help="run only this module (repeatable); default: all, in the listed order")
    parser.add_argument("--rev", default="HEAD", help="the commit whose code and tests are mutated (default HEAD)")
    parser.add_argument("--worktree", action="store_true",
                        help="mutate the working tree instead (uncommitted edits included), e.g. to try a new test")
    parser.add_argument("--reclassify", action="store_true",
                        help="do not run mutmut: re-read the last runs in build/mutation against the current "
                             "list of equivalent mutants")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    rev = None if args.worktree else _commit(args.rev)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    names = args.module or list(TARGETS)
    modules = json.loads(args.output.read_text())["modules"] if args.output.is_file() else {}
    equivalents = load_equivalents()
    failed = []
    for name in names:
        previous = modules.get(name) if args.reclassify else None
        if args.reclassify and (previous is None or "mutants" not in previous):
            logger.warning(f"{name}: no earlier run to re-read; skipped")
            continue
        logger.info(f"{name}: mutating {TARGETS[name].path} against {' '.join(TARGETS[name].tests)}")
        try:
            modules[name] = m = study(name, TARGETS[name], equivalents, rev, previous)
        except RuntimeError as error:  # one module's failure (its log says why) does not stop the others
            logger.error(f"{name}: {error}")
            failed.append(name)
            continue
        logger.info(f"{name}: {m['killed']} killed, {m['survived']} survived, {m['timeout']} timeout, "
                    f"{m['no_tests']} without tests, {m['equivalent']} equivalent, {m['unexplained']} unexplained "
                    f"({m['seconds']:.0f} s)")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.output, json.dumps(summary(modules), indent=2, ensure_ascii=False) + "\n")
    total = summary(modules)["total"]
    if total["mutants"]:
        logger.info(f"kill rate {total['kill_rate']:.1%} over {total['mutants']} mutants "
                    f"({total['unexplained']} survivors unexplained); wrote {args.output}")
    return 1 if failed else 0


def _commit(rev: str) -> str:
    result = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"--rev {rev!r} is not a commit of {REPO}: {result.stderr.strip()}")
    return result.stdout.strip()


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
