"""One JAM-Flow NFE (audio + motion streams, joint attention under the JAM mask) vs the audio stream alone.

The model is the paper config (``recipes/configs/jamflow_paper.yaml``: F5-TTS v1 Base audio stream, a Motion-DiT of
the same depth and heads, joint attention in the earlier half of the layers, the JAM-Flow mask), built through
``mmflow_jamflow.model.jamflow_model_config`` as ``build_jamflow`` and the recipe build it, with seeded N(0, 0.02²)
random weights in its official layouts (cost does not depend on the values, so no checkpoint is needed).

One NFE is one call of the guided velocity the sampler integrates (``mmflow.flow.GuidedVelocity``): cond and
uncond in one batch of 2 (CFG 2 on every generated stream), as the pipeline's ``talking_head`` / ``tts`` tasks
run it. Variants, timed in turns (round robin) in one process so that machine load hits them alike:

* ``joint``: both streams, motion generated with the non-mouth keypoints as its condition (``talking_head``);
* ``audio_absent``: the same model with the motion stream absent (what the ``tts`` task runs): the reference;
* ``f5_alone``: an audio-only ``MMDiT`` (``build_f5tts_mmdit``) with the same audio weights: what F5-TTS costs
  in mmflow without any motion stream (it checks that an absent stream is free).

The ratio joint / audio_absent is issue 19's measure (target ≤ 1.35 on GPU). Per clip length the JSON holds
median ms per NFE of each variant, the ratios, the frames and the first call's cost (plan + NFE, cold), and the
process CPU time per NFE (all threads: on a shared CPU machine it moves less with other jobs' load than wall time).

    python benchmarks/joint_nfe.py --seconds 5 10                         # CPU, fp32
    python benchmarks/joint_nfe.py --device cuda --dtype bf16 --repeats 20   # 5 / 10 / 20 s

Writes benchmarks/results/joint-nfe-<device>-<dtype>[-<backend>].json (or --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

from mmflow import Guidance, MMDiT, StreamBatch
from mmflow.attention import BACKEND_CHOICES
from mmflow.flow import GuidedVelocity
from mmflow.io import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "recipes" / "configs" / "jamflow_paper.yaml"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
F5_VOCAB_SIZE = 2545
"""Tokens of F5-TTS v1 Base's vocab.txt (only the text embedding's size depends on it)."""
TEXT_TOKENS_PER_SECOND = 15
"""Filler-text tokens per second of speech (225 tokens for 15 s, as benchmarks/tts.py's default workload)."""
REFERENCE = "audio_absent"
TARGET_RATIO = 1.35
logger = logging.getLogger("benchmarks.joint_nfe")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=PAPER_CONFIG, help="a recipes/jamflow.py YAML (its jamflow:)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 20.0], help="clip lengths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="attention backend of the models")
    parser.add_argument("--repeats", type=int, default=3, help="timed NFEs per variant and clip (the median counts)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed NFEs per variant and clip first")
    parser.add_argument("--cfg", type=float, default=2.0, help="guidance scale of every generated stream")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (warm-up compiles)")
    parser.add_argument("--depth", type=int, help="override the depth of both streams (small CPU runs, tests)")
    parser.add_argument("--dim", type=int, help="override the audio stream's width (small CPU runs, tests)")
    parser.add_argument("--no-f5-alone", action="store_true", help="skip the audio-only MMDiT variant")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or any(s <= 0 for s in args.seconds):
        parser.error("--repeats must be >= 1, --warmup >= 0 and every --seconds > 0")
    if args.dtype != "fp32" and not args.device.startswith("cuda"):
        parser.error(f"--dtype {args.dtype} is for --device cuda; the CPU runs fp32")
    return args


def paper_model_config(path: Path, depth: int | None = None, dim: int | None = None) -> dict:
    """The ``MMDiT`` arguments of a JAM-Flow recipe YAML, as ``recipes/jamflow.py`` builds them."""
    from mmflow_audio_f5tts.backbone import f5tts_config
    from mmflow_jamflow.model import jamflow_model_config
    from mmflow_jamflow.recipe_config import read_sections

    jamflow, _ = read_sections(yaml.safe_load(path.read_text()))
    if jamflow is None:
        raise ValueError(f"{path} has no jamflow: section; pass a JAM-Flow recipe config (e.g. {PAPER_CONFIG})")
    audio = jamflow.audio
    if depth or dim:  # a smaller copy of the same architecture
        audio = {**(f5tts_config(audio) if isinstance(audio, str) else audio),
                 **({"depth": depth} if depth else {}), **({"dim": dim} if dim else {})}
    return jamflow_model_config(audio, F5_VOCAB_SIZE, **jamflow.options())


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded N(0, 0.02²) parameters (buffers such as rotary frequencies kept), in the model's own layout."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


def clip_batches(model: MMDiT, seconds: float, device, dtype) -> dict[str, StreamBatch]:
    """One clip's stream records: text-conditioned audio, motion with its non-mouth keypoints as condition."""
    generator = torch.Generator().manual_seed(1)
    audio_spec, motion_spec = model.specs["audio"], model.specs["motion"]
    n_audio, n_motion = audio_spec.num_frames(seconds), motion_spec.num_frames(seconds)
    tokens = max(1, round(seconds * TEXT_TOKENS_PER_SECOND))
    text = torch.randint(1, F5_VOCAB_SIZE, (1, tokens), generator=generator)
    return {
        "audio": StreamBatch.from_lengths(torch.zeros(1, n_audio, audio_spec.channels, dtype=dtype, device=device),
                                          extras={"text": text.to(device)}),
        "motion": StreamBatch.from_lengths(
            torch.zeros(1, n_motion, motion_spec.channels, dtype=dtype, device=device),
            cond=torch.randn(1, n_motion, motion_spec.cond_channels, generator=generator).to(device, dtype)),
    }


def velocity(model, batches: dict, streams: tuple[str, ...], cfg: float, absent: tuple[str, ...] = ()):
    """A one-NFE callable: the guided velocity (cond + uncond in one batch) at t = 0.5 on fixed noise."""
    guidance = Guidance(scales={name: cfg for name in streams}) if cfg else None
    used = {name: batches[name] for name in model.stream_names}
    generator = torch.Generator().manual_seed(2)
    x = {name: torch.randn(batch.latent.shape, generator=generator).to(batch.latent)
         for name, batch in used.items()}
    t = torch.tensor([0.5], device=next(iter(used.values())).latent.device)
    holder = {}

    def nfe():
        if "fn" not in holder:  # the plan (masks, rotary tables, text) is built once per integration
            holder["fn"] = GuidedVelocity(model, used, guidance, absent=absent)
        with torch.inference_mode():
            return holder["fn"](x, t)

    return nfe


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(fns: dict, device: torch.device, repeats: int, warmup: int) -> tuple[dict, dict, dict]:
    """(median wall ms, first call ms, median process CPU ms) of each one-NFE callable; variants take turns in
    every repeat. The CPU time (all threads) is what a shared machine's load changes least."""
    first = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        sync(device)
        first[name] = (time.perf_counter() - start) * 1000
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict = {name: [] for name in fns}
    cpu: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1000)
            cpu[name].append((time.process_time() - cpu_start) * 1000)
    median = {name: statistics.median(values) for name, values in times.items()}
    return median, first, {name: statistics.median(values) for name, values in cpu.items()}


def placed(model: MMDiT, device, dtype) -> MMDiT:
    """``model`` on ``device`` in ``dtype``, eval mode (a cast only when needed: diffusers warns about any)."""
    model = model.to(device).eval()
    return model if dtype == torch.float32 else model.to(dtype)


def build_models(args, device, dtype) -> dict[str, MMDiT]:
    from mmflow_audio_f5tts.checkpoint import build_f5tts_mmdit

    config = paper_model_config(args.config, args.depth, args.dim)
    joint = placed(randomize(MMDiT(**config, attention_backend=args.backend)), device, dtype)
    models = {"joint": joint}
    if not args.no_f5_alone:
        audio_stream = config["streams"]["audio"]
        alone = build_f5tts_mmdit(audio_stream["backbone_config"], F5_VOCAB_SIZE,
                                  mask_padding=config.get("mask_padding", True))
        alone.backbones["audio"].load_state_dict(joint.backbones["audio"].state_dict())
        alone.attention_backend = args.backend
        models["f5_alone"] = placed(alone, device, dtype)
    if args.compile:
        models = {name: torch.compile(model) for name, model in models.items()}
    return models


def run(args) -> dict:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    models = build_models(args, device, dtype)
    joint = getattr(models["joint"], "_orig_mod", models["joint"])
    parameters = {stream: sum(p.numel() for p in joint.backbones[stream].parameters()) for stream in joint.stream_names}
    rows = []
    for seconds in args.seconds:
        batches = clip_batches(joint, seconds, device, dtype)
        fns = {"joint": velocity(models["joint"], batches, ("audio", "motion"), args.cfg),
               REFERENCE: velocity(models["joint"], batches, ("audio",), args.cfg, absent=("motion",))}
        if "f5_alone" in models:
            fns["f5_alone"] = velocity(models["f5_alone"], batches, ("audio",), args.cfg)
        median, first, cpu = time_variants(fns, device, args.repeats, args.warmup)
        row = {"seconds": seconds, "audio_frames": batches["audio"].num_frames,
               "motion_frames": batches["motion"].num_frames, "text_tokens": batches["audio"].extras["text"].shape[1],
               "cfg_batch": 2 if args.cfg else 1, "ms_per_nfe": median, "first_call_ms": first,
               "ratio_joint_over_audio": median["joint"] / median[REFERENCE],
               "process_cpu_ms_per_nfe": cpu, "cpu_time_ratio_joint_over_audio": cpu["joint"] / cpu[REFERENCE]}
        if "f5_alone" in median:
            row["ratio_audio_absent_over_f5_alone"] = median[REFERENCE] / median["f5_alone"]
        rows.append(row)
        logger.info("%.0f s: joint %.1f ms, audio alone (motion absent) %.1f ms per NFE: x%.3f", seconds,
                    median["joint"], median[REFERENCE], row["ratio_joint_over_audio"])
    return {
        "benchmark": "JAM-Flow NFE (paper config) vs the audio stream alone (benchmarks/joint_nfe.py)",
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "overrides": {"depth": args.depth, "dim": args.dim},
        "weights": "random N(0, 0.02^2), seed 0, the official layouts",
        "joint_steps": list(joint.joint_steps), "depth": joint.num_steps, "parameters": parameters,
        "device": str(device), "dtype": args.dtype, "backend": args.backend, "compile": args.compile,
        "repeats": args.repeats, "warmup": args.warmup, "cfg": args.cfg,
        "reference": f"{REFERENCE}: the same model with the motion stream absent (the tts task), same run",
        "target": f"ratio_joint_over_audio <= {TARGET_RATIO} (issue 19, GPU)",
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "host": platform.node(),
        **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),  # a shared machine: others' load hits all variants
        "rows": rows,
    }


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    result = run(args)
    backend = "" if args.backend == "auto" else f"-{args.backend}"
    device = torch.device(args.device).type
    out = args.out or ROOT / "benchmarks" / "results" / f"joint-nfe-{device}-{args.dtype}{backend}.json"
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    for row in result["rows"]:
        cells = "  ".join(f"{name} {ms:8.1f}" for name, ms in row["ms_per_nfe"].items())
        print(f"{row['seconds']:5.1f} s  ms/NFE: {cells}  joint/audio x{row['ratio_joint_over_audio']:.3f} "
              f"(process CPU time x{row['cpu_time_ratio_joint_over_audio']:.3f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
