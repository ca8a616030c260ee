"""A talking clip end to end (text → wav + mp4) with a time breakdown: text front end, sampling, vocoder, render, mux.

The run is what ``mmflow generate`` does (``JAMFlowPipeline`` on a text and the bundled portrait, then
``JAMFlowOutput.save``), in this process, with timers around each phase (CUDA synchronised on both sides of
each, so asynchronous kernels are charged to the phase that launched them):

* ``text_front_end``: the audio codec's ``encode`` (tokens, duration, timing);
* ``sampling``: ``mmflow.flow.generate`` (every window of the long-form sampler; ``--steps`` NFEs each);
* ``vocoder``: the audio codec's ``decode`` (mel → waveform);
* ``renderer_setup``: the renderer made for the portrait (crop, landmarks, F on the source; in the motion codec's
  ``encode``);
* ``render``: the motion codec's ``decode`` plus the frames rendered while the writer reads them (frames are
  streamed to ``write_video``, so their cost is moved from mux to render; ``frames (in render)`` lists it);
* ``mux``: the rest of ``write_video`` (encoding frames + sound into the mp4); ``write_other`` the rest of
  ``save`` (wav, motion files). ``other_s``: what no phase covers (task set-up, timeline, noise...).

Models (``--model``):

* ``default``: the embedded default model (real weights), its vocoder, the landmark fallback renderer unless
  ``--renderer liveportrait``;
* ``paper``: the paper config (``recipes/configs/jamflow_paper.yaml``: F5-TTS v1 Base audio + Motion-DiT, half
  schedule, JAM mask) with random weights, a random-weight Vocos (F5-TTS's vocoder layout), a character
  tokenizer over a synthetic vocab of F5-TTS's size; the speech is noise, the cost is the real model's.

``--renderer liveportrait`` renders with LivePortrait's official-size networks (F, M, W, G, stitching) at random
weights; ``fallback`` with the weights-free landmark renderer. The reference of issue 19 (≤ 3 s on an H100 for
20 s, 32 NFE, paper config, LivePortrait) is a target; the measured reference in the same run is the audio-only
share: ``--reference`` also runs the ``tts`` task (no motion, no render) on the same text and model.

    python benchmarks/clip_e2e.py --model default                                    # CPU, real default model
    python benchmarks/clip_e2e.py --model paper --steps 2 --seconds 5                # CPU, paper config, shortened
    python benchmarks/clip_e2e.py --model paper --renderer liveportrait --device cuda --dtype bf16

Writes benchmarks/results/clip-e2e-<model>-<renderer>-<device>[-<dtype>].json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
import wave
from pathlib import Path

import torch

from mmflow.io import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from joint_nfe import DTYPES, F5_VOCAB_SIZE, PAPER_CONFIG, ROOT, paper_model_config, randomize  # noqa: E402

TEXT = ("The small boat drifted past the harbour lights while the old keeper counted the ships that came home "
        "before the storm, and the wind carried the sound of bells across the water to the quiet town.")
"""About 12 s of speech at the default speed; ``--seconds`` sets the clip's length (``duration=``) exactly."""
PHASES = {
    "text_front_end": ("mmflow_audio_f5tts.codec", "F5AudioCodec", "encode"),
    "sampling": ("mmflow.long_form", None, "generate"),
    "vocoder": ("mmflow_audio_f5tts.codec", "F5AudioCodec", "decode"),
    "render": ("mmflow_motion_liveportrait.codec", "LivePortraitMotionCodec", "decode"),
    "renderer_setup": ("mmflow_motion_liveportrait.render", None, "make_renderer"),
    "renderer_setup_components": ("mmflow_motion_liveportrait.renderer_weights", "LivePortraitComponents",
                                  "renderer"),
    "mux": ("mmflow_motion_liveportrait.video", None, "write_video"),
    "render_frames": ("mmflow_motion_liveportrait.render", "LivePortraitRenderer", "render_frames"),
    "render_frames_fallback": ("mmflow_motion_liveportrait.fallback", "LandmarkFallbackRenderer", "render_frames"),
}
"""Phase → (module, class or None, attribute) timed by wrapping it (the modules look these up at call time)."""
TARGET_S = 3.0
logger = logging.getLogger("benchmarks.clip_e2e")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["default", "paper"], default="default")
    parser.add_argument("--config", type=Path, default=PAPER_CONFIG, help="paper model: the recipe YAML it is built from")
    parser.add_argument("--renderer", choices=["fallback", "liveportrait"], default="fallback")
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length (the pipeline's duration=)")
    parser.add_argument("--steps", type=int, default=32, help="NFEs per sampling window")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--depth", type=int, help="paper model: override both streams' depth (small runs, tests)")
    parser.add_argument("--dim", type=int, help="paper model: override the audio stream's width")
    parser.add_argument("--size", type=int, help="video's longer side in pixels (default: the pipeline's)")
    parser.add_argument("--reference", action="store_true", help="also the tts task (audio only) in the same run")
    parser.add_argument("--warmup", action="store_true", help="an untimed run first (kernels, caches, compile)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seconds <= 0:
        parser.error("--steps must be >= 1 and --seconds > 0")
    if args.dtype != "fp32" and not args.device.startswith("cuda"):
        parser.error(f"--dtype {args.dtype} is for --device cuda; the CPU runs fp32")
    if (args.depth or args.dim) and args.model != "paper":
        parser.error("--depth / --dim shrink the paper model; the default model is used as saved")
    return args


class PhaseTimer:
    """Wall seconds spent in each of ``PHASES`` (outermost calls only), synchronising CUDA around each call."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self._depth = device, {}, {}

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _wrap(self, phase: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            depth = self._depth.get(phase, 0)
            self._depth[phase] = depth + 1
            self._sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                self._depth[phase] = depth
                if depth == 0:
                    elapsed = time.perf_counter() - start
                    self.seconds[phase] = self.seconds.get(phase, 0.0) + elapsed
                    if phase.startswith("render_frames") and self._depth.get("mux"):  # streamed to the writer
                        self.seconds["frames_in_mux"] = self.seconds.get("frames_in_mux", 0.0) + elapsed

        return timed

    @contextlib.contextmanager
    def installed(self):
        """Every phase's function wrapped for the duration of the block (restored after)."""
        restore = []
        for phase, (module_name, class_name, attribute) in PHASES.items():
            owner = importlib.import_module(module_name)
            owner = getattr(owner, class_name) if class_name else owner
            original = owner.__dict__[attribute] if class_name else getattr(owner, attribute)
            setattr(owner, attribute, self._wrap(phase, original))
            restore.append((owner, attribute, original))
        try:
            yield self
        finally:
            for owner, attribute, original in reversed(restore):
                setattr(owner, attribute, original)


def synthetic_vocab(folder: Path) -> Path:
    """A ``vocab.txt`` of F5-TTS's size: the characters of ``TEXT`` first, then unused placeholder tokens."""
    chars = sorted(set(TEXT + REF_TEXT))
    tokens = [" "] + [c for c in chars if c != " "]
    tokens += [f"<unused{i}>" for i in range(F5_VOCAB_SIZE - len(tokens))]
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


REF_TEXT = "A short sentence read for the reference voice."
REF_SECONDS = 3.0


def reference_voice(folder: Path) -> Path:
    """A 3 s synthetic voice-like wav (a gliding 120-240 Hz tone with harmonics): what the F5 text mode asks for
    (a reference clip and its transcript). Its frames are sampled as the given prompt, as a real reference's are."""
    import numpy as np
    from mmflow_audio_f5tts.audio_io import write_wav
    from mmflow_audio_f5tts.mel import SAMPLE_RATE

    t = np.arange(int(REF_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(180 + 60 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    wave_ = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    path = folder / "reference.wav"
    write_wav(path, (0.1 * wave_ / np.abs(wave_).max()).astype(np.float32), SAMPLE_RATE)
    return path


def paper_pipeline(args, folder: Path):
    """The paper config with random weights in the official layouts, a random Vocos and a character tokenizer."""
    from mmflow_audio_f5tts.tokenizer import F5Tokenizer
    from mmflow_audio_f5tts.vocoder import Vocos
    from mmflow_jamflow.pipeline import JAMFlowPipeline
    from mmflow_motion_liveportrait.motion_stream import MotionNormalizer

    from mmflow import FlowMatchingScheduler, MMDiT

    model = randomize(MMDiT(**paper_model_config(args.config, args.depth, args.dim))).eval()
    tokenizer = F5Tokenizer(str(synthetic_vocab(folder)), tokenizer_mode="char", on_unknown="space")
    return JAMFlowPipeline(model, FlowMatchingScheduler(num_inference_steps=32, sway_coefficient=-1.0), tokenizer,
                           MotionNormalizer(), vocoder=randomize(Vocos()).eval())


def build_pipeline(args, folder: Path):
    if args.model == "paper":
        pipe = paper_pipeline(args, folder)
    else:
        from mmflow_jamflow.default_model import default_model_path
        from mmflow_jamflow.pipeline import JAMFlowPipeline

        pipe = JAMFlowPipeline.from_pretrained(default_model_path())
    if args.renderer == "liveportrait":
        from mmflow_motion_liveportrait.renderer_weights import LivePortraitComponents

        torch.manual_seed(0)
        pipe.register_modules(renderer=LivePortraitComponents().eval())  # official sizes, random weights
    pipe.to(args.device)
    if args.dtype != "fp32":
        pipe.transformer.to(DTYPES[args.dtype])
    return pipe


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as handle:
        return handle.getnframes() / handle.getframerate()


def one_clip(pipe, args, task: str, out: Path, device: torch.device) -> dict:
    """One timed run of ``task`` into ``out``: total wall seconds and the phases'."""
    from mmflow_motion_liveportrait.face import demo_portrait_path

    timer = PhaseTimer(device)
    video = task == "talking_head"
    voice = {"ref_audio": args.ref_audio, "ref_text": REF_TEXT} if args.ref_audio else {}
    with timer.installed():
        start, cpu_start = time.perf_counter(), time.process_time()
        result = pipe(task, TEXT, duration=args.seconds, num_inference_steps=args.steps, seed=0, progress=False,
                      **voice, **({"portrait": demo_portrait_path(), "size": args.size} if video else {}))
        generated = time.perf_counter()
        written = result.save(out, kinds=("wav", "mp4") if video else ("wav",))
        end, cpu_end = time.perf_counter(), time.process_time()
    seconds = dict(timer.seconds)
    # frames are rendered as the writer reads them: charge them to render, not to mux
    streamed = seconds.pop("frames_in_mux", 0.0)
    frames = seconds.pop("render_frames", 0.0) + seconds.pop("render_frames_fallback", 0.0)
    setup = seconds.pop("renderer_setup", 0.0) + seconds.pop("renderer_setup_components", 0.0)
    written_s = end - generated
    if "render" in seconds:
        seconds["render"] += streamed
    if "mux" in seconds:
        seconds["mux"] -= streamed
    seconds["write_other"] = written_s - timer.seconds.get("mux", 0.0)
    if video:
        seconds["renderer_setup"] = setup  # the motion codec's encode: portrait crop, landmarks, F on the source
    phases = {name: round(value, 4) for name, value in seconds.items()}
    accounted = sum(phases.values())
    if video:
        phases["frames (in render)"] = round(frames, 4)
    total = end - start
    audio_s = wav_seconds(out / "sample.wav")
    return {"task": task, "total_s": round(total, 4), "process_cpu_s": round(cpu_end - cpu_start, 4),
            "phases_s": phases,
            "other_s": round(total - accounted, 4), "audio_s": round(audio_s, 3), "rtf": round(total / audio_s, 4),
            "outputs": sorted(p.name for p in written),
            "video_frames": int(len(result.videos[0])) if result.videos else 0}


def run(args) -> dict:
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="mmflow-clip-e2e-") as tmp:
        start = time.perf_counter()
        pipe = build_pipeline(args, Path(tmp))
        # filler-text models (the paper's F5-TTS audio stream) clone a reference voice; aligned ones need none
        args.ref_audio = None if pipe.aligned else reference_voice(Path(tmp))
        load_s = time.perf_counter() - start
        if args.warmup:
            one_clip(pipe, args, "talking_head", Path(tmp) / "warmup", device)
        runs = [one_clip(pipe, args, "talking_head", Path(tmp) / "clip", device)]
        if args.reference:
            runs.append(one_clip(pipe, args, "tts", Path(tmp) / "tts", device))
    transformer = pipe.transformer
    paper_full = args.model == "paper" and not (args.depth or args.dim) and args.config == PAPER_CONFIG
    return {
        "benchmark": "talking clip end to end, text -> wav + mp4 (benchmarks/clip_e2e.py)",
        "model": args.model,
        "model_note": ("the embedded default model, real weights" if args.model == "default" else
                       f"{args.config.name} (a JAM-Flow recipe config), random weights in the official layouts"
                       + ("" if paper_full else f", shrunk: depth {args.depth}, dim {args.dim}")),
        "renderer": args.renderer + (" (official-size networks, random weights)" if args.renderer == "liveportrait"
                                     else " (weights-free landmark renderer)"),
        "seconds": args.seconds, "steps": args.steps,
        "model_default_steps": pipe.scheduler.config.num_inference_steps,
        "reference_voice_s": None if args.ref_audio is None else REF_SECONDS,
        "reference_voice_note": None if args.ref_audio is None else
        "a synthetic 3 s voice prompt (F5 text mode needs one): the model samples prompt + the clip's seconds",
        "as_issue_19_row": paper_full and args.steps == 32 and args.seconds == 20.0
        and args.renderer == "liveportrait",
        "parameters": {name: sum(p.numel() for p in b.parameters()) for name, b in transformer.backbones.items()},
        "device": str(device), "dtype": args.dtype, "warmup_run": args.warmup, "pipeline_build_s": round(load_s, 3),
        "target": f"talking_head total_s <= {TARGET_S} for 20 s, 32 NFE, paper config, LivePortrait, H100 (issue 19)",
        "reference": "tts task (audio only) on the same text, model and length, same run" if args.reference else None,
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "host": platform.node(),
        **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
        "runs": runs,
    }


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    result = run(args)
    dtype = "" if args.dtype == "fp32" else f"-{args.dtype}"
    name = f"clip-e2e-{args.model}-{args.renderer}-{torch.device(args.device).type}{dtype}.json"
    out = args.out or ROOT / "benchmarks" / "results" / name
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    for clip in result["runs"]:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in clip["phases_s"].items())
        print(f"{clip['task']}: {clip['total_s']:.2f} s for {clip['audio_s']:.1f} s of speech (RTF {clip['rtf']:.2f}); "
              f"{phases}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
