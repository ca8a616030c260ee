"""Training throughput of the Accelerate trainer: optimizer steps/s, frames/s, peak memory (and MFU on GPU).

Runs the real loop (``mmflow.training.Trainer``) on a recipe config with checkpoints and sampling off, drops
the first ``--warmup`` steps, and times the rest. Frames are the valid frames of every stream in a step
(all micro-batches and processes): the "tokens" of an MMDiT. MFU counts 6 × parameters FLOPs per frame
(forward + backward of every linear layer; attention scores are left out, so it under-counts long clips).

    python benchmarks/train.py                                          # CPU, examples/toy_gesture/mmflow_toy_gesture/configs/toy.yaml
    python benchmarks/train.py --device cuda --bf16 --batch-size 64     # GPU, MFU against --peak-tflops
    python benchmarks/train.py --compare-checkpointing --batch-size 32  # peak memory without/with checkpointing

Prints the configuration and a summary and writes JSON (default benchmarks/results/train-<device>.json, or
train-<device>-checkpointing.json for the comparison). Peak memory is measured over the training loop only:
``torch.cuda.max_memory_allocated`` after a reset on GPU; on CPU the process's peak RSS (VmHWM) after
resetting it through /proc/self/clear_refs, so model building and data loading before the loop do not count.
The comparison runs each setting in its own process (a peak RSS cannot be reset between runs in one process).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from mmflow.io import write_text_atomic
from mmflow.training import Trainer, TrainingConfig, build_dataset, build_model, make_accelerator

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "toy_gesture" / "mmflow_toy_gesture" / "configs" / "toy.yaml"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first")
    parser.add_argument("--batch-size", type=int, help="override batch_size (per process)")
    parser.add_argument("--num-clips", type=int, help="override data.kwargs.num_clips (toy source)")
    parser.add_argument("--depth", type=int, help="override every stream backbone's depth (model.config configs)")
    parser.add_argument("--dim", type=int, help="override every stream backbone's width (model.config configs)")
    parser.add_argument("--bf16", action="store_true", help="mixed_precision: bf16 (GPU only)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="peak dense TFLOP/s of the device for MFU (default: H100 SXM bf16)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="gradient_checkpointing: true (recompute each MMDiT layer step in backward)")
    parser.add_argument("--compare-checkpointing", action="store_true",
                        help="run without and with gradient checkpointing (one process each) and compare")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/train-<device>.json)")
    return parser.parse_args(argv)


F5_VOCAB_SIZE = 2545
"""Tokens of F5-TTS v1 Base's vocab.txt (only the text embedding's size depends on it)."""


def reset_peak_memory(device: str) -> str:
    """Start the peak-memory count here; returns how the peak is measured."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return "torch.cuda.max_memory_allocated"
    try:  # Linux: "5" resets the process's peak RSS (VmHWM) to its current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return "process peak RSS (VmHWM) during the training loop"
    except OSError:
        return "process max RSS (ru_maxrss), including setup"


def _proc_status_mib(key: str) -> float | None:
    """A memory line of /proc/self/status (Linux) in MiB, or None elsewhere."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024  # kB
    return None


def memory_now_mib(device: str) -> float | None:
    """Memory in use at the start of the loop (model, optimizer, data): the peak's baseline."""
    return torch.cuda.memory_allocated() / 2**20 if device == "cuda" else _proc_status_mib("VmRSS")


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    peak = _proc_status_mib("VmHWM")
    # KiB on Linux: the process high-water mark
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare_checkpointing(args) -> int:
    """Run this benchmark without and with gradient checkpointing, each in a fresh process, and compare."""
    forwarded = ["--config", args.config, "--device", args.device, "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--peak-tflops", str(args.peak_tflops)]
    forwarded += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    forwarded += ["--num-clips", str(args.num_clips)] if args.num_clips else []
    forwarded += ["--depth", str(args.depth)] if args.depth else []
    forwarded += ["--dim", str(args.dim)] if args.dim else []
    forwarded += ["--bf16"] if args.bf16 else []
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, flags in (("without", []), ("with", ["--gradient-checkpointing"])):
            path = Path(folder, f"{name}.json")
            subprocess.run([sys.executable, __file__, *forwarded, *flags, "--out", str(path)], check=True)
            runs[name] = json.loads(path.read_text())
    without, with_ = runs["without"], runs["with"]
    result = {
        "config": without["config"], "device": without["device"], "batch_size": without["batch_size"],
        "parameters": without["parameters"], "backbone_overrides": {"depth": args.depth, "dim": args.dim},
        "peak_memory_kind": without["peak_memory_kind"],
        "peak_memory_mib": {"without": without["peak_memory_mib"], "with": with_["peak_memory_mib"]},
        "peak_memory_ratio_with_over_without": with_["peak_memory_mib"] / without["peak_memory_mib"],
        "peak_memory_over_loop_start_mib": {"without": without["peak_memory_over_loop_start_mib"],
                                            "with": with_["peak_memory_over_loop_start_mib"]},
        "steps_per_second": {"without": without["steps_per_second"], "with": with_["steps_per_second"]},
        "time_ratio_with_over_without": without["steps_per_second"] / with_["steps_per_second"],
        "runs": runs,
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"train-{args.device}-checkpointing.json")
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    growth = result["peak_memory_over_loop_start_mib"]
    print(f"peak memory {without['peak_memory_mib']:.0f} MiB without, {with_['peak_memory_mib']:.0f} MiB with "
          f"gradient checkpointing (x{result['peak_memory_ratio_with_over_without']:.2f}; above the loop's start: "
          f"{growth['without']} vs {growth['with']} MiB); step time x{result['time_ratio_with_over_without']:.2f}")
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare_checkpointing:
        return compare_checkpointing(args)
    logging.basicConfig(level=logging.WARNING)
    data = yaml.safe_load(Path(args.config).read_text())
    if "jamflow" in data:  # a recipes/jamflow.py config: build its MMDiT arguments as the recipe does
        from mmflow_audio_f5tts.phonemes import PhonemeVocab
        from mmflow_jamflow.model import jamflow_model_config
        from mmflow_jamflow.recipe_config import read_sections

        jamflow, _ = read_sections(data)
        aligned = isinstance(jamflow.audio, dict) and jamflow.audio.get("text_conditioning") == "aligned"
        vocab_size = len(PhonemeVocab()) if aligned else F5_VOCAB_SIZE
        data["model"] = {"config": jamflow_model_config(jamflow.audio, vocab_size, **jamflow.options())}
    data.pop("pipeline", None)
    with tempfile.TemporaryDirectory() as out:
        data.update(output_dir=out, total_steps=args.warmup + args.steps, tracker="none",
                    checkpoint={"every": 0}, sampling={"every": 0}, mixed_precision="bf16" if args.bf16 else "no",
                    gradient_checkpointing=args.gradient_checkpointing)
        data["schedule"] = {**data.get("schedule", {}), "warmup_steps": 0}
        if args.batch_size:
            data["batch_size"] = args.batch_size
        if args.num_clips:
            data["data"]["kwargs"] = {**data["data"].get("kwargs", {}), "num_clips": args.num_clips}
        sizes = {key: value for key, value in (("depth", args.depth), ("dim", args.dim)) if value}
        for stream in data["model"].get("config", {}).get("streams", {}).values() if sizes else ():
            stream["backbone_config"] = {**stream.get("backbone_config", {}), **sizes}
        config = TrainingConfig.from_dict(data)
        accelerator = make_accelerator(config, cpu=args.device == "cpu")
        model = build_model(config.model, config.seed)
        trainer = Trainer(config, model, build_dataset(config), accelerator=accelerator)
        parameters = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        setup = {"config": args.config, "backbone_overrides": {"depth": args.depth, "dim": args.dim},
                 "device": str(accelerator.device), "processes": accelerator.num_processes,
                 "batch_size": config.batch_size, "gradient_accumulation": config.gradient_accumulation,
                 "mixed_precision": config.mixed_precision, "gradient_checkpointing": config.gradient_checkpointing,
                 "stage": config.stage, "parameters": parameters,
                 "trainable_parameters": trainable, "warmup_steps": args.warmup, "timed_steps": args.steps,
                 "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                 "host": platform.node(), "processor": platform.processor() or platform.machine()}
        if args.device == "cuda":
            setup["gpu"] = torch.cuda.get_device_name()
        print("configuration:", json.dumps(setup, indent=2))
        memory_kind = reset_peak_memory(args.device)
        loop_start_mib = memory_now_mib(args.device)
        history = trainer.fit(resume_from=None)[args.warmup:]
        accelerator.end_training()

    seconds = sum(h["step_seconds"] for h in history)
    frames = sum(h["frames"] for h in history)
    peak = peak_memory_mib(args.device)
    result = {
        **setup,
        "steps_per_second": len(history) / seconds,
        "median_step_ms": statistics.median(h["step_seconds"] for h in history) * 1000,
        "frames_per_second": frames / seconds,
        "samples_per_second": len(history) * config.batch_size * config.gradient_accumulation
        * accelerator.num_processes / seconds,
        "peak_memory_mib": peak,
        "peak_memory_kind": memory_kind,
        "memory_at_loop_start_mib": loop_start_mib,
        "peak_memory_over_loop_start_mib": None if loop_start_mib is None else peak - loop_start_mib,
        "final_loss": history[-1]["loss"],
    }
    if args.device == "cuda":
        achieved = 6 * parameters * result["frames_per_second"]
        result |= {"model_tflops_per_second": achieved / 1e12, "peak_tflops": args.peak_tflops,
                   "mfu": achieved / (args.peak_tflops * 1e12)}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"train-{args.device}.json")
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"{result['steps_per_second']:.2f} steps/s, {result['frames_per_second']:.0f} frames/s, "
          f"{result['samples_per_second']:.1f} samples/s, median step {result['median_step_ms']:.1f} ms, "
          f"peak memory {result['peak_memory_mib']:.0f} MiB" + (f", MFU {result['mfu']:.2%}" if "mfu" in result else ""))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
