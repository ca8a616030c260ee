"""Benchmark: F5-TTS sampling through mmflow vs the ``f5-tts`` reference package, same weights and input.

Both sides sample the same random-weight model (official key layout, N(0, 0.02²) weights) on the same
workload: one reference mel + text, ``steps`` Euler NFEs with batched CFG 2 and sway −1, no vocoder. Each side
runs in its own subprocess so that peak memory and thread settings do not leak between them.

Default workload (``performance-anchors.md``): 5 s reference + 10 s generated (1406 frames), 225 text tokens,
32 NFE. ``--quick``: 1 s + 2 s, 60 tokens, 8 NFE.

    python benchmarks/tts.py --config small --quick
    python benchmarks/tts.py --config F5TTS_v1_Base --gen-seconds 1 --ref-seconds 1 --steps 4

Reports ms per NFE, RTF (sampling time / generated seconds), peak memory of sampling (growth over the state
after setup, with weights and inputs resident; CPU: the process's peak RSS, reset after setup through
``/proc/self/clear_refs``; CUDA: ``torch.cuda.max_memory_allocated``) and the ratios ours / reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALIASES = {"small": "F5TTS_v1_Small", "base": "F5TTS_v1_Base"}
TINY = {
    "dim": 256,
    "depth": 4,
    "heads": 4,
    "ff_mult": 2,
    "text_dim": 128,
    "conv_layers": 2,
    "text_mask_padding": True,
    "rope_heads": None,
}
VOCAB_SIZE = 2545
FRAME_RATE = 93.75
logger = logging.getLogger("benchmarks.tts")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        default="F5TTS_v1_Base",
        help="F5TTS_v1_Base, F5TTS_Base, F5TTS_v1_Small, F5TTS_Small, small, tiny",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile each side's transformer")
    parser.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile mode (reduce-overhead: CUDA graphs)")
    parser.add_argument("--quick", action="store_true", help="1 s + 2 s, 60 tokens, 8 NFE")
    parser.add_argument("--ref-seconds", type=float)
    parser.add_argument("--gen-seconds", type=float)
    parser.add_argument("--text-tokens", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs per side and round (the fastest counts)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternate the sides this many times (fresh processes; the fastest counts), so that "
        "load from other processes hits both sides alike",
    )
    parser.add_argument("--only", choices=["both", "ours", "reference"], default="both")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/tts-....json)")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = {"ref_seconds": 1.0, "gen_seconds": 2.0, "text_tokens": 60, "steps": 8}
    full = {"ref_seconds": 5.0, "gen_seconds": 10.0, "text_tokens": 225, "steps": 32}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if (
        args.steps < 1
        or args.repeats < 1
        or args.rounds < 1
        or args.ref_seconds <= 0
        or args.gen_seconds <= 0
    ):
        parser.error("steps, repeats, ref/gen seconds must be positive")
    return args


def backbone_config(name: str) -> dict:
    from mmflow_audio_f5tts.backbone import f5tts_config

    if name == "tiny":
        return dict(TINY)
    return f5tts_config(ALIASES.get(name, name))


def workload(args) -> dict:
    """Frames and token counts of the run (the same for both sides)."""
    cond = round(args.ref_seconds * FRAME_RATE)
    total = round((args.ref_seconds + args.gen_seconds) * FRAME_RATE)
    return {"cond_frames": cond, "total_frames": total, "text_tokens": args.text_tokens, "steps": args.steps}


def random_state(config: dict):
    """Seeded N(0, 0.02²) weights in the official key layout (identical for both sides)."""
    import torch
    from mmflow_audio_f5tts.backbone import F5TTSBackbone

    with torch.device("meta"):
        shapes = F5TTSBackbone(**config, text_num_embeds=VOCAB_SIZE).state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key in sorted(shapes):
        if key == "rotary_embed.inv_freq":
            state[key] = 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64))
        else:
            state[key] = torch.randn(shapes[key].shape, generator=generator) * 0.02
    return state


def inputs(work: dict):
    import torch

    generator = torch.Generator().manual_seed(1)
    cond = torch.randn(1, work["cond_frames"], 100, generator=generator)
    text = torch.randint(0, VOCAB_SIZE, (1, work["text_tokens"]), generator=generator)
    return cond, text


def _rss_reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def build_sampler(side: str, config: dict, work: dict, args):
    """A zero-argument function that runs one full sampling on ``side``'s implementation."""
    import torch

    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    state = random_state(config)
    cond, text = inputs(work)
    cond = cond.to(device, dtype)
    text = text.to(device)
    if side == "reference":
        sys.path.insert(0, str(REPO / "plugins/audio_f5tts/tests"))
        import reference as stand_ins  # stand-in modules for the reference's unused imports (wandb, librosa)

        stand_ins._install_stand_ins()
        from f5_tts.model import CFM, DiT

        ref_config = {k: v for k, v in config.items() if k != "rope_heads"}
        dit = DiT(**ref_config, pe_attn_head=config["rope_heads"], text_num_embeds=VOCAB_SIZE, mel_dim=100)
        dit.load_state_dict(state)
        cfm = CFM(transformer=dit).to(device, dtype).eval()
        if args.compile:
            cfm.transformer = torch.compile(cfm.transformer, mode=args.compile_mode)

        def run():
            with torch.inference_mode():
                return cfm.sample(
                    cond,
                    text,
                    work["total_frames"],
                    steps=work["steps"],
                    cfg_strength=args.cfg,
                    sway_sampling_coef=-1.0,
                    seed=0,
                )[0]

        return run

    from mmflow_audio_f5tts.checkpoint import build_f5tts_mmdit

    from mmflow import Guidance, StreamBatch, generate

    model = build_f5tts_mmdit(config, VOCAB_SIZE, mask_padding=False).eval()
    model.backbones["audio"].load_state_dict(state)
    model.to(device, dtype)
    forward = torch.compile(model, mode=args.compile_mode) if args.compile else model
    n = work["total_frames"]
    latent = torch.zeros(1, n, 100, device=device, dtype=dtype)
    latent[:, : cond.shape[1]] = cond
    given = torch.zeros(1, n, dtype=torch.bool, device=device)
    given[:, : cond.shape[1]] = True
    batch = StreamBatch.from_lengths(latent, [n], given=given, extras={"text": text})
    torch.manual_seed(0)
    noise = torch.randn(1, n, 100).to(device, dtype)
    guidance = Guidance(scales={"audio": args.cfg}) if args.cfg else None

    def run():
        with torch.inference_mode():
            return generate(
                forward,
                {"audio": batch},
                steps=work["steps"],
                sway=-1.0,
                guidance=guidance,
                noise={"audio": noise},
            )["audio"]

    return run


def worker(args) -> dict:
    """Time one side; print its result as JSON on the last stdout line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    config, work = backbone_config(args.config), workload(args)
    run = build_sampler(args.worker, config, work, args)
    cuda = args.device.startswith("cuda")
    # Memory of sampling itself: growth over the state after setup (weights and inputs already resident).
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset = _rss_reset_peak()
        base = _rss_kib("VmRSS") * 1024
    warm_start = time.perf_counter()
    run()  # warm-up (and compilation)
    warmup_s = time.perf_counter() - warm_start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        mel = run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        top = _rss_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = top * 1024 - base
    best = min(times)
    return {
        "side": args.worker,
        "seconds": best,
        "ms_per_nfe": 1000 * best / work["steps"],
        "rtf": best / args.gen_seconds,
        "peak_mib": peak / 2**20,
        "warmup_s": warmup_s,
        "threads": torch.get_num_threads(),
        "mel_checksum": float(mel.float().abs().mean()),
    }


def run_side(side: str, argv: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", side]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{side} run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = workload(args)
    sides = ["reference", "ours"] if args.only == "both" else [args.only]
    results = {}
    for round_index in range(args.rounds):
        for side in sides:
            logger.info("round %d/%d: %s ...", round_index + 1, args.rounds, side)
            result = run_side(side, argv)
            rounds = results.get(side, {}).get("round_seconds", []) + [result["seconds"]]
            if side not in results or result["seconds"] < results[side]["seconds"]:
                results[side] = result
            results[side]["round_seconds"] = rounds
    report = {
        "config": args.config,
        "device": args.device,
        "dtype": args.dtype,
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "workload": {
            **work,
            "ref_seconds": args.ref_seconds,
            "gen_seconds": args.gen_seconds,
            "cfg": args.cfg,
            "sway": -1.0,
        },
        "results": results,
    }
    if len(results) == 2:
        ours, ref = results["ours"], results["reference"]
        report["ratio_ours_over_reference"] = {
            "time": ours["seconds"] / ref["seconds"],
            "peak_memory": ours["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] else None,
        }
    print_table(report)
    from mmflow.io import write_text_atomic

    quick = "-quick" if args.quick else ""
    out = (
        args.out
        or REPO / "benchmarks" / "results" / f"tts-{args.config}-{args.device}-{args.dtype}{quick}.json"
    )
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s", out)
    return 0


def print_table(report: dict) -> None:
    work = report["workload"]
    print(
        f"\nF5-TTS sampling, {report['config']} on {report['device']} ({report['dtype']}"
        f"{', compiled' if report['compile'] else ''}): {work['ref_seconds']:g} s reference + "
        f"{work['gen_seconds']:g} s generated = {work['total_frames']} frames, {work['text_tokens']} tokens, "
        f"{work['steps']} NFE, CFG {work['cfg']:g}"
    )
    print(f"{'side':<10} {'ms/NFE':>10} {'total s':>9} {'RTF':>8} {'peak MiB':>9} {'threads':>7}")
    for side, r in report["results"].items():
        print(
            f"{side:<10} {r['ms_per_nfe']:>10.1f} {r['seconds']:>9.2f} {r['rtf']:>8.3f} {r['peak_mib']:>9.1f} "
            f"{r['threads']:>7}"
        )
    ratio = report.get("ratio_ours_over_reference")
    if ratio:
        memory = f"{ratio['peak_memory']:.2f}" if ratio["peak_memory"] else "n/a"
        print(f"ours / reference: time {ratio['time']:.3f}, peak memory {memory}")


if __name__ == "__main__":
    sys.exit(main())
