"""Training throughput of the Accelerate trainer: optimizer steps/s, frames/s, peak memory (and MFU on GPU).

Runs the real loop (``mmflow.training.Trainer``) on a recipe config with checkpoints and sampling off, drops
the first ``--warmup`` steps, and times the rest. Frames are the valid frames of every stream in a step
(all micro-batches and processes): the "tokens" of an MMDiT (``tokens_per_second``). FLOPs per step are counted
from the config and the shapes of every forward the loop makes (``FLOPS_FORMULA``: per layer the projections,
the attention scores and the MLP, ×3 for forward + backward); MFU is achieved FLOP/s over ``--peak-tflops``, a
number the user gives for the device (dense, in the run's precision: H100 SXM and H200 SXM bf16 989.4; H100
PCIe bf16 756; there is no default, and none is made up for a CPU).

    python benchmarks/train.py                                          # CPU, examples/toy_gesture/mmflow_toy_gesture/configs/toy.yaml
    python benchmarks/train.py --device cuda --bf16 --batch-size 64 --peak-tflops 989.4   # GPU, MFU
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
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak dense TFLOP/s in the run's precision, for MFU (e.g. H100 SXM or "
                        "H200 SXM bf16: 989.4); no default: without it MFU is not reported")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="gradient_checkpointing: true (recompute each MMDiT layer step in backward)")
    parser.add_argument("--compare-checkpointing", action="store_true",
                        help="run without and with gradient checkpointing (one process each) and compare")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/train-<device>.json)")
    return parser.parse_args(argv)


F5_VOCAB_SIZE = 2545
"""Tokens of F5-TTS v1 Base's vocab.txt (only the text embedding's size depends on it)."""


FLOPS_FORMULA = (
    "training FLOPs per step = 3 × forward FLOPs (backward = 2 × forward); forward FLOPs = sum over the step's "
    "micro-batch forwards, streams s and layers of b × n_s × (8·d_s·a + 4·a·n_kv + 4·f_s·d_s²), where b is the "
    "batch, n_s the stream's padded frames, d_s its width, f_s its ff_mult, a = heads × dim_head, and n_kv the keys "
    "a query sees (n_s alone; the sum of all streams' n in a joint layer, counted dense whatever the mask). "
    "8·d·a: Q, K, V and output projections; 4·a·n_kv: scores and weighted values; 4·f·d²: the MLP's two matrices "
    "(one multiply-add = 2 FLOPs). Left out: AdaLN modulation (per sample), embeddings, text / conv encoders, "
    "norms, the optimizer; gradient checkpointing's recomputed forward is not counted (model FLOPs, not hardware)."
)


def layer_flops(n: int, n_kv: int, dim: int, inner: int, ff_mult: float) -> float:
    """Forward FLOPs of one DiT layer for one sample of ``n`` query frames (``FLOPS_FORMULA``)."""
    return n * (8 * dim * inner + 4 * inner * n_kv + 4 * ff_mult * dim * dim)


def forward_flops(model, frames: dict[str, int], batch: int) -> float:
    """Forward FLOPs of one MMDiT call on ``batch`` samples of ``frames`` padded frames per stream."""
    joint = set(model.joint_steps)
    total = 0.0
    for name, backbone in model.backbones.items():
        config = model.config["streams"][name].get("backbone_config", {})
        dim, ff_mult = config.get("dim", backbone.heads * backbone.dim_head), config.get("ff_mult", 2)
        inner = backbone.heads * backbone.dim_head
        for step in range(backbone.depth):
            n_kv = sum(frames.values()) if step in joint else frames[name]
            total += layer_flops(frames[name], n_kv, dim, inner, ff_mult)
    return batch * total


class FlopCounter:
    """Counts ``forward_flops`` of every call of an MMDiT (a forward hook: the shapes the loop really used)."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module, args, kwargs):
        x_t = args[0] if args else kwargs["x_t"]
        streams = {name: x.shape for name, x in x_t.items()}
        batch = next(iter(streams.values()))[0]
        self.calls.append(forward_flops(self.model, {name: shape[1] for name, shape in streams.items()}, batch))

    def training_flops(self, last_calls: int) -> float:
        """3 × the forward FLOPs of the last ``last_calls`` calls (the timed steps' micro-batches)."""
        return 3 * sum(self.calls[-last_calls:])


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
                 "--warmup", str(args.warmup)]
    forwarded += ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
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
        "tokens_per_second": {"without": without["tokens_per_second"], "with": with_["tokens_per_second"]},
        "flops_per_step": without["flops_per_step"], "flops_formula": without["flops_formula"],
        "peak_tflops": args.peak_tflops, "mfu": {"without": without["mfu"], "with": with_["mfu"]},
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
        counter = FlopCounter(model)
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
    # every process runs gradient_accumulation forwards per step; this one counted its own
    flops = counter.training_flops(len(history) * config.gradient_accumulation) * accelerator.num_processes
    achieved = flops / seconds
    result |= {"tokens_per_second": result["frames_per_second"], "tokens": "valid frames of every stream",
               "flops_per_step": flops / len(history), "flops_formula": FLOPS_FORMULA,
               "model_tflops_per_second": achieved / 1e12, "peak_tflops": args.peak_tflops,
               "mfu": achieved / (args.peak_tflops * 1e12) if args.peak_tflops else None}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"train-{args.device}.json")
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"{result['steps_per_second']:.2f} steps/s, {result['frames_per_second']:.0f} frames/s, "
          f"{result['samples_per_second']:.1f} samples/s, median step {result['median_step_ms']:.1f} ms, "
          f"peak memory {result['peak_memory_mib']:.0f} MiB, {result['model_tflops_per_second']:.4f} model TFLOP/s"
          + (f", MFU {result['mfu']:.2%}" if result["mfu"] is not None else ""))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
