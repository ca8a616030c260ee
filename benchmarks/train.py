"""Training throughput of the Accelerate trainer: optimizer steps/s, frames/s, peak memory (and MFU on GPU).

Runs the real loop (``mmflow.training.Trainer``) on a recipe config with checkpoints and sampling off, drops
the first ``--warmup`` steps, and times the rest. Frames are the valid frames of every stream in a step
(all micro-batches and processes): the "tokens" of an MMDiT. MFU counts 6 × parameters FLOPs per frame
(forward + backward of every linear layer; attention scores are left out, so it under-counts long clips).

    python benchmarks/train.py                                          # CPU, recipes/configs/toy.yaml
    python benchmarks/train.py --device cuda --bf16 --batch-size 64     # GPU, MFU against --peak-tflops

Prints the configuration and a summary and writes JSON (default benchmarks/results/train-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import tempfile
from pathlib import Path

import torch
import yaml

from mmflow.io import write_text_atomic
from mmflow.training import Trainer, TrainingConfig, build_dataset, build_model, make_accelerator

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "toy.yaml"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first")
    parser.add_argument("--batch-size", type=int, help="override batch_size (per process)")
    parser.add_argument("--num-clips", type=int, help="override data.kwargs.num_clips (toy source)")
    parser.add_argument("--bf16", action="store_true", help="mixed_precision: bf16 (GPU only)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="peak dense TFLOP/s of the device for MFU (default: H100 SXM bf16)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/train-<device>.json)")
    return parser.parse_args(argv)


F5_VOCAB_SIZE = 2545
"""Tokens of F5-TTS v1 Base's vocab.txt (only the text embedding's size depends on it)."""


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the process high-water mark


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = yaml.safe_load(Path(args.config).read_text())
    jamflow = data.pop("jamflow", None)
    data.pop("pipeline", None)
    if jamflow is not None:  # a recipes/jamflow.py config: build its MMDiT arguments as the recipe does
        import runpy

        from mmflow_audio_f5tts.phonemes import PhonemeVocab

        model_config = runpy.run_path(str(ROOT / "recipes" / "jamflow.py"))["model_config"]
        aligned = isinstance(jamflow.get("audio"), dict) and jamflow["audio"].get("text_conditioning") == "aligned"
        vocab_size = len(PhonemeVocab()) if aligned else F5_VOCAB_SIZE
        data["model"] = {"config": model_config(jamflow, vocab_size)}
    with tempfile.TemporaryDirectory() as out:
        data.update(output_dir=out, total_steps=args.warmup + args.steps, tracker="none",
                    checkpoint={"every": 0}, sampling={"every": 0}, mixed_precision="bf16" if args.bf16 else "no")
        data["schedule"] = {**data.get("schedule", {}), "warmup_steps": 0}
        if args.batch_size:
            data["batch_size"] = args.batch_size
        if args.num_clips:
            data["data"]["kwargs"] = {**data["data"].get("kwargs", {}), "num_clips": args.num_clips}
        config = TrainingConfig.from_dict(data)
        accelerator = make_accelerator(config, cpu=args.device == "cpu")
        model = build_model(config.model, config.seed)
        trainer = Trainer(config, model, build_dataset(config), accelerator=accelerator)
        parameters = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        setup = {"config": args.config, "device": str(accelerator.device), "processes": accelerator.num_processes,
                 "batch_size": config.batch_size, "gradient_accumulation": config.gradient_accumulation,
                 "mixed_precision": config.mixed_precision, "stage": config.stage, "parameters": parameters,
                 "trainable_parameters": trainable, "warmup_steps": args.warmup, "timed_steps": args.steps,
                 "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                 "host": platform.node(), "processor": platform.processor() or platform.machine()}
        if args.device == "cuda":
            setup["gpu"] = torch.cuda.get_device_name()
            torch.cuda.reset_peak_memory_stats()
        print("configuration:", json.dumps(setup, indent=2))
        history = trainer.fit(resume_from=None)[args.warmup:]
        accelerator.end_training()

    seconds = sum(h["step_seconds"] for h in history)
    frames = sum(h["frames"] for h in history)
    result = {
        **setup,
        "steps_per_second": len(history) / seconds,
        "median_step_ms": statistics.median(h["step_seconds"] for h in history) * 1000,
        "frames_per_second": frames / seconds,
        "samples_per_second": len(history) * config.batch_size * config.gradient_accumulation
        * accelerator.num_processes / seconds,
        "peak_memory_mib": peak_memory_mib(args.device),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "process max RSS",
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
