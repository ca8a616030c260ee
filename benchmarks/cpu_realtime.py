"""Real-time factor, time to first file and peak memory of ``mmflow generate`` with the embedded default, on CPU.

Each case runs the command as a user does (``mmflow generate --text TEXT --out DIR``: text → wav, npz, pkl and an
mp4 with sound, the default model, its default steps and seed) in a fresh subprocess, so that start-up imports
and peak RSS are the run's own. Cases: a ~2 s, a ~6 s and a ~60 s text, each with and without ``--no-video``.

Reported per case:

* ``wall_s``: the subprocess from launch to exit (interpreter start and imports included);
* ``audio_s``: seconds of speech in the written wav; ``rtf`` = wall_s / audio_s (≤ 1.0 is real time);
* ``first_file_s``: launch → the first output file complete (its mtime; outputs are written atomically, so a
  file exists only once whole). Nothing is streamed, so this is when the whole generation is done and the
  wav has been written, not a streaming latency;
* ``first_byte_s``: launch → the first byte of any output on disk (the parent polls the output folder, temporary
  files of the atomic writes included, every 10 ms);
* ``cpu_s``: the child's user + system CPU seconds (its rusage). The machine is shared: wall clock grows with the
  other users' load, CPU seconds much less, so compare runs on both;
* ``peak_rss_mb``: the child's ``ru_maxrss`` (VmHWM), read in the parent after the child exits;
* ``import_s``: the child's first statement → mmflow's CLI and the JAM-Flow pipeline imported (the interpreter's
  own start-up, about 0.1 s, is in wall_s only);
* ``import_chain_s`` (``--profile`` runs only, measured before the profiler starts): the start-up imports taken
  one link at a time in the order they pull each other in (``IMPORT_CHAIN``), seconds per link, and which heavy
  third-party packages are loaded after the whole start-up (``HEAVY``);
* ``breakdown_s`` (``--profile`` runs only, a second subprocess per case under cProfile, so its seconds carry
  the profiler's overhead and are for proportions): cumulative time in the text front end, sampling, vocoder,
  render, mux and file writing.

The reference, measured in the same run: the release's own numbers (``RELEASE`` below: a 6.2 s clip in 11.2 s,
RTF 1.8; 3.4 GB RSS for a 59 s paragraph), and the same cases run by this script.

    python benchmarks/cpu_realtime.py                     # all cases, writes benchmarks/results/cpu-realtime.json
    python benchmarks/cpu_realtime.py --cases 2s 6s --profile
    python benchmarks/cpu_realtime.py --label after --merge   # add a labelled run to the existing JSON
    python benchmarks/cpu_realtime.py --busy 1 --env OMP_WAIT_POLICY= --label busy-spin --merge  # one core taken
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cpu-realtime.json"

RELEASE = {"6.2 s clip wall_s": 11.2, "6.2 s clip rtf": 1.8, "59 s paragraph peak_rss_mb": 3400.0}
"""The numbers issue 19 quotes for the release (the target: RTF ≤ 1.0, RSS ≤ 1.5 GB flat in the length)."""

SENTENCE = ("The small boat drifted past the harbour lights while the old keeper counted the ships "
            "that came home before the storm. ")
TEXTS = {
    "2s": "Good morning to you.",
    "6s": "Good morning, how are you today? I hope you slept well and had a nice breakfast.",
    "14s": SENTENCE * 2,
    "60s": SENTENCE * 9,
}
"""Texts whose default-speed speech lasts about 2, 6, 14 and 60 seconds (the written wav says exactly how long)."""

IMPORT_CHAIN = [
    ("torch", "import torch"),
    ("diffusers (its utils import torch._dynamo, sympy)", "import diffusers"),
    ("ModelMixin (diffusers.quantizers imports transformers)", "from diffusers.models.modeling_utils import ModelMixin"),
    ("PeftAdapterMixin (diffusers.hooks imports peft -> transformers.modeling_utils, scipy)",
     "from diffusers.loaders.peft import PeftAdapterMixin"),
    ("DiffusionPipeline (imports AutoencoderKL: every diffusers model module)",
     "from diffusers.pipelines.pipeline_utils import DiffusionPipeline"),
    ("mmflow, its CLI and the JAM-Flow plugin", "from mmflow_jamflow import cli, pipeline; from mmflow.cli import main"),
]
"""The start-up imports of ``mmflow generate`` one link at a time: each line imports what the next needs of
diffusers first, so its seconds are what that link adds. mmflow's classes derive from all four diffusers bases
(``MMDiT``: ``ModelMixin``, ``PeftAdapterMixin``; ``MMFlowPipeline``: ``DiffusionPipeline``), so none can be
skipped on the generate path."""

HEAVY = ["torch._dynamo", "sympy", "transformers", "transformers.modeling_utils", "peft", "scipy", "accelerate",
         "onnxruntime", "pyarrow", "datasets", "pandas", "cv2", "av", "dlib"]
"""Third-party packages whose presence after start-up the profiled runs list."""

PHASES = {
    "plugin_registry": [("mmflow/plugins.py", "build_registry")],
    "model_load": [("mmflow/pipeline.py", "from_pretrained")],
    "text_front_end": [("mmflow_audio_f5tts/codec.py", "encode")],
    "sampling": [("mmflow/flow.py", "generate")],
    "vocoder": [("mmflow_audio_f5tts/codec.py", "decode")],
    "renderer_setup": [("mmflow_motion_liveportrait/render.py", "make_renderer")],
    "render": [("mmflow_motion_liveportrait/codec.py", "decode")],
    "mux": [("mmflow_motion_liveportrait/video.py", "write_video")],
    "write_wav": [("mmflow_audio_f5tts/audio_io.py", "write_wav")],
    "write_motion": [("mmflow_motion_liveportrait/motion_template.py", "save_motion_template")],
}
"""cProfile entries (file suffix, function name) whose cumulative time makes up each phase: the audio codec's
``encode`` is the text front end (espeak timing, tokens), its ``decode`` the vocoder (mel → wave); the motion
codec's ``decode`` returns the frames unrendered (a ``RenderedVideo``): they are rendered while ``write_video``
encodes them, in a background thread cProfile does not see, so ``mux`` holds render + encode; ``make_renderer`` is
the renderer's set-up (portrait, landmarks)."""


def _import_chain() -> dict[str, float]:
    """Seconds of each ``IMPORT_CHAIN`` link, imported in order in this process."""
    seconds = {}
    for link, statement in IMPORT_CHAIN:
        begun = time.time()
        exec(statement, {})
        seconds[link] = round(time.time() - begun, 3)
    return seconds


def _child(argv: list[str], import_mark: Path, chain: dict[str, float] | None = None) -> int:
    """Run ``mmflow generate`` in this process, noting when its imports were done (and, given the ``chain`` that
    ``_import_chain`` measured before, that and which ``HEAVY`` packages the imports loaded)."""
    started = time.time()
    from mmflow_jamflow import cli, pipeline  # noqa: F401  (what the command imports before the model loads)

    from mmflow.cli import main

    mark = {"import_s": time.time() - started}
    if chain is not None:
        mark["import_s"] += sum(chain.values())
        mark["import_chain_s"] = chain
        mark["heavy_modules_after_imports"] = [name for name in HEAVY if name in sys.modules]
    import_mark.write_text(json.dumps(mark))
    return main(argv)


def _first_byte(folder: Path, proc: subprocess.Popen, launched: float) -> float | None:
    """Seconds from launch until any file under ``folder`` (temporary ones of atomic writes included) holds a
    byte, polled every 10 ms while ``proc`` runs; None if none did before it exited. The child is not reaped
    here (``WNOWAIT``), so that ``os.wait4`` still gets its rusage."""
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if folder.is_dir():
            for path in folder.rglob("*"):
                try:
                    if path.is_file() and path.stat().st_size > 0:
                        return time.time() - launched
                except OSError:  # renamed or removed between listing and stat
                    continue
        time.sleep(0.01)
    return None


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as handle:
        return handle.getnframes() / handle.getframerate()


def _phase_seconds(stats_path: Path) -> dict[str, float]:
    """Cumulative seconds per phase from a cProfile dump (recursive entries count once, as cProfile does)."""
    stats = pstats.Stats(str(stats_path)).stats
    out = {}
    for phase, keys in PHASES.items():
        out[phase] = round(sum(cumulative for (filename, _line, name), (_cc, _nc, _tt, cumulative, _callers)
                               in stats.items() if any(filename.endswith(suffix) and name == function
                                                       for suffix, function in keys)), 3)
    return out


def _busy_loop() -> None:  # pragma: no cover - runs in a helper process
    while True:
        pass


def run_case(name: str, video: bool, profile: bool, env: dict[str, str] | None = None) -> dict:
    """One fresh subprocess of ``mmflow generate`` for ``TEXTS[name]``; the measures listed in the docstring."""
    with tempfile.TemporaryDirectory(prefix="mmflow-cpu-rt-") as tmp:
        out, mark, stats = Path(tmp) / "out", Path(tmp) / "imports.json", Path(tmp) / "profile.pstats"
        argv = ["generate", "--text", TEXTS[name], "--out", str(out), *([] if video else ["--no-video"])]
        code = (f"import sys, json, pathlib; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
                f"from cpu_realtime import _child; argv = json.loads(sys.argv[1]); ")
        if profile:  # the import chain first (outside the profiler, whose overhead would swell it), then the run
            code += (f"from cpu_realtime import _import_chain; chain = _import_chain(); import cProfile; "
                     f"p = cProfile.Profile(); rc = p.runcall(_child, argv, pathlib.Path({str(mark)!r}), chain); "
                     f"p.dump_stats({str(stats)!r}); sys.exit(rc)")
        else:
            code += (f"rc = _child(argv, pathlib.Path({str(mark)!r})); "  # then leave as the `mmflow` script does
                     f"from mmflow.cli import exit_without_teardown; exit_without_teardown(rc)")
        load = os.getloadavg()[0]  # the machine is shared: a busy one slows every case alike
        launched = time.time()
        log = Path(tmp) / "log.txt"
        with log.open("w") as handle:
            proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(argv)], stdout=handle, stderr=handle,
                                    env=os.environ | (env or {}))
            first_byte = _first_byte(out, proc, launched)
            _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: ru_maxrss is its VmHWM
        wall = time.time() - launched
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"case {name} (video={video}) failed:\n{log.read_text()[-4000:]}")
        files = sorted(out.iterdir(), key=lambda p: p.stat().st_mtime)
        audio = _wav_seconds(out / "sample.wav")
        marks = json.loads(mark.read_text())
        result = {
            "case": name, "video": video, "profiled": profile, "text_chars": len(TEXTS[name]),
            "wall_s": round(wall, 3), "audio_s": round(audio, 3), "rtf": round(wall / audio, 3),
            "first_file_s": round(files[0].stat().st_mtime - launched, 3), "first_file": files[0].name,
            "first_byte_s": None if first_byte is None else round(first_byte, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "load_avg_1min_before": round(load, 2),
            "import_s": round(marks["import_s"], 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "outputs": [p.name for p in files],
        }
        if profile:
            result["import_chain_s"] = marks["import_chain_s"]
            result["heavy_modules_after_imports"] = marks["heavy_modules_after_imports"]
            result["breakdown_s"] = _phase_seconds(stats)
        return result


def _warm_child(cases: list[str], out_root: Path) -> list[dict]:
    """In this process: load the default pipeline once, then per case a first call and a second (warm) one, each
    ``pipe(text, portrait) → result.save`` as ``mmflow generate`` does (what the app and the Python API do after
    their start-up). Returns one record per call."""
    importlib.import_module("mmflow")  # first, as in the CLI: it sets OMP_WAIT_POLICY before torch loads OpenMP
    import torch
    from mmflow_jamflow.default_model import default_model_path
    from mmflow_jamflow.pipeline import JAMFlowPipeline
    from mmflow_motion_liveportrait.face import demo_portrait_path

    pipe = JAMFlowPipeline.from_pretrained(default_model_path())
    records = []
    for name in cases:
        for video in (True, False):
            for call in ("first", "warm"):
                out = out_root / f"{name}-{'video' if video else 'audio'}-{call}"
                begun, cpu = time.time(), time.process_time()
                result = pipe("talking_head", TEXTS[name], portrait=demo_portrait_path() if video else None, seed=0)
                generated = time.time() - begun
                with torch.no_grad():
                    written = result.save(out, kinds=("wav", "npz", "pkl", *(("mp4",) if video else ())))
                wall = time.time() - begun
                audio = _wav_seconds(out / "sample.wav")
                records.append({"case": name, "video": video, "call": call, "wall_s": round(wall, 3),
                                "generate_s": round(generated, 3), "save_s": round(wall - generated, 3),
                                "audio_s": round(audio, 3), "rtf": round(wall / audio, 3),
                                "cpu_s": round(time.process_time() - cpu, 3),
                                "outputs": [Path(p).name for p in written]})
    return records


def run_warm(cases: list[str], env: dict[str, str] | None = None) -> list[dict]:
    """``_warm_child`` in one fresh subprocess (the calls after start-up: no imports, the model loaded once)."""
    with tempfile.TemporaryDirectory(prefix="mmflow-cpu-rt-warm-") as tmp:
        code = (f"import sys, json, pathlib; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
                f"from cpu_realtime import _warm_child; "
                f"print('RESULT ' + json.dumps(_warm_child(json.loads(sys.argv[1]), pathlib.Path(sys.argv[2]))))")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(cases), tmp], capture_output=True, text=True,
                              env=os.environ | (env or {}))
        if proc.returncode:
            raise RuntimeError(f"warm runs failed:\n{proc.stderr[-4000:]}")
        line = next(row for row in proc.stdout.splitlines() if row.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])


def _commit() -> str:
    """The checked-out commit, so a labelled run names its code."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(TEXTS), default=["2s", "6s", "14s", "60s"])
    parser.add_argument("--profile", action="store_true", help="also a cProfile run per case, for the breakdown")
    parser.add_argument("--label", default="baseline", help="name of this run in the JSON (e.g. before / after)")
    parser.add_argument("--merge", action="store_true", help="keep the other labelled runs already in --out")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the runs (e.g. OMP_WAIT_POLICY= for the OpenMP runtime's own default)")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on a core during the runs (the "
                        "shared machine's other work, made repeatable)")
    parser.add_argument("--warm", action="store_true", help="also the calls after start-up: one process loads the "
                        "model once and generates each case twice (first call, warm call), as the app does")
    parser.add_argument("--note", default="", help="how this run differs (stored with it)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    import multiprocessing

    busy = [multiprocessing.Process(target=_busy_loop, daemon=True) for _ in range(args.busy)]
    for process in busy:
        process.start()

    runs = []
    for name in args.cases:
        for video in (True, False):
            runs.append(run_case(name, video, profile=False, env=env))
            print(json.dumps(runs[-1]), flush=True)
            if args.profile:
                runs.append(run_case(name, video, profile=True, env=env))
                print(json.dumps(runs[-1]), flush=True)
    warm = run_warm(args.cases, env) if args.warm else None
    for record in warm or []:
        print(json.dumps(record), flush=True)
    for process in busy:
        process.terminate()
    document = json.loads(args.out.read_text()) if args.merge and args.out.exists() else {}
    document.update({
        "benchmark": "mmflow generate, embedded default model, end to end on CPU (benchmarks/cpu_realtime.py)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "release_reference": RELEASE,
        "targets": {"rtf": 1.0, "peak_rss_mb_60s": 1500.0},
    })
    document.setdefault("runs", {})[args.label] = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                   "commit": _commit(), "env": env, "busy_processes": args.busy, "note": args.note,
                                                   "cases": runs}
    if warm is not None:
        document["runs"][args.label]["warm_calls"] = warm
    from mmflow.io import write_text_atomic

    write_text_atomic(args.out, json.dumps(document, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
