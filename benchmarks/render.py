"""LivePortrait rendering cost per frame: each network (F, M, W, G, stitching S) and the whole render, ours vs the
reference implementation (mimic-head's copy of the official modules) in the same run, with the same weights.

Full-size networks with random weights (the official files are not needed: cost does not depend on the values).
"Render" is what a driven frame costs once the source is prepared: stitching + W + G (+ paste-back into a 512²
frame for ours, through ``LivePortraitRenderer``); F runs once per source portrait, M once per driving frame when
motion is extracted from a video. Published anchor: 12.8 ms/frame on an RTX 4090 (fp16, torch.compile).

    python benchmarks/render.py                                  # CPU, fp32, 2 timed frames
    python benchmarks/render.py --device cuda --dtype fp16 --frames 20

Prints a table and writes JSON (default benchmarks/results/render-<device>-<dtype>.json).
"""

from __future__ import annotations

import argparse
import copy
import importlib.resources
import json
import platform
import statistics
import time

import numpy as np
import torch
import yaml
from mmflow_motion_liveportrait import networks
from mmflow_motion_liveportrait.face import FaceCrop, resize_matrix
from mmflow_motion_liveportrait.render import (
    DrivingMotion,
    LivePortraitNetworks,
    LivePortraitRenderer,
    move,
    stitch,
)

from mmflow.io import write_text_atomic

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ANCHOR_MS_PER_FRAME = 12.8  # LivePortrait paper, RTX 4090


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict, device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Median wall time in milliseconds of each callable in ``fns``.

    The callables take turns within each repeat, so a change of machine load (shared CPUs) hits all of them
    alike instead of biasing whichever ran last.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def reference_modules() -> dict:
    """mimic-head's LivePortrait modules at the official (models.yaml) sizes, random weights, eval mode."""
    from mimic_head.modules.appearance_feature_extractor import AppearanceFeatureExtractor
    from mimic_head.modules.motion_extractor import MotionExtractor
    from mimic_head.modules.spade_generator import SPADEDecoder
    from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork
    from mimic_head.modules.warping_network import WarpingNetwork

    text = importlib.resources.files("mimic_head").joinpath("config/models.yaml").read_text()
    params = copy.deepcopy(yaml.safe_load(text)["model_params"])
    return {
        "F": AppearanceFeatureExtractor(**params["appearance_feature_extractor_params"]).eval(),
        "M": MotionExtractor(**params["motion_extractor_params"]).eval(),
        "W": WarpingNetwork(**params["warping_module_params"]).eval(),
        "G": SPADEDecoder(**params["spade_generator_params"]).eval(),
        "S": StitchingRetargetingNetwork(**params["stitching_retargeting_module_params"]["stitching"]).eval(),
    }


def our_networks(reference: dict | None) -> LivePortraitNetworks:
    """Our full-size networks; with the reference's weights when it is there (strict load, as in the tests)."""
    ours = LivePortraitNetworks(
        appearance_feature_extractor=networks.AppearanceFeatureExtractor(),
        motion_extractor=networks.MotionExtractor(),
        warping_module=networks.WarpingNetwork(),
        spade_generator=networks.SPADEDecoder(),
        stitching=networks.StitchingRetargetingNetwork.from_official_config("stitching"),
    )
    if reference is not None:
        for key, model in zip("FMWGS", vars(ours).values(), strict=True):
            model.load_state_dict(reference[key].state_dict(), strict=True)
    return ours


def synthetic_source(size: int = 512) -> tuple[np.ndarray, FaceCrop]:
    """A random 512² frame whose face crop is the whole frame at 256² (no face detection in the timing)."""
    frame = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    crop = frame.reshape(256, size // 256, 256, size // 256, 3).mean(axis=(1, 3)).astype(np.uint8)
    face = FaceCrop(crop, resize_matrix(size, 256), (size, size), np.zeros((68, 2), np.float32))
    return frame, face


def module_calls(models: dict, image, kp_s, kp_d) -> dict:
    """Zero-argument calls of F, M, W, G, S on batch 1 (``models`` maps F/M/W/G/S to callables)."""
    feature = models["F"](image)
    warped_out = models["W"](feature, kp_d, kp_s)["out"]
    stitch_input = torch.cat([kp_s.reshape(1, -1), kp_d.reshape(1, -1)], dim=1).float()
    return {
        "F": lambda: models["F"](image),
        "M": lambda: models["M"](image),
        "W": lambda: models["W"](feature, kp_d, kp_s),
        "G": lambda: models["G"](warped_out),
        "S": lambda: models["S"](stitch_input),
        "render": lambda: models["G"](models["W"](feature, stitch(models["S"], kp_s.float(), kp_d.float())
                                                  .to(kp_d.dtype), kp_s)["out"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--frames", type=int, default=2, help="timed frames (calls) per measurement, after 1 warm-up")
    parser.add_argument("--skip-reference", action="store_true", help="time only our networks")
    parser.add_argument("--autocast", action="store_true",
                        help="keep fp32 weights and run under autocast to --dtype (LivePortrait's own GPU mode)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/render-<device>-<dtype>.json)")
    args = parser.parse_args(argv)
    device, compute_dtype = torch.device(args.device), DTYPES[args.dtype]
    dtype = torch.float32 if args.autocast else compute_dtype  # weights and inputs
    torch.manual_seed(0)

    reference = None
    if not args.skip_reference:
        try:
            reference = reference_modules()
        except ImportError as error:
            print(f"reference (mimic-head) unavailable: {error}; timing ours only")
    ours = our_networks(reference).to(device, dtype)

    frame, face = synthetic_source()
    image = face.tensor().to(device, dtype)  # 1×3×256×256
    generator = torch.Generator().manual_seed(1)
    kp_s = (0.3 * torch.randn(1, 21, 3, generator=generator)).to(device, dtype)
    kp_d = kp_s + (0.02 * torch.randn(1, 21, 3, generator=generator)).to(device, dtype)

    our_models = {
        "F": ours.appearance_feature_extractor,
        "M": ours.motion_extractor,
        "W": lambda f, d, s: ours.warping_module(f, kp_driving=d, kp_source=s),
        "G": ours.spade_generator,
        "S": ours.stitching,
    }
    renderer = LivePortraitRenderer(ours, frame, face=face, device=device, dtype=dtype, batch_size=1)
    motion = DrivingMotion(exp=renderer.source_info.exp.cpu())  # one frame: the source's own expression
    calls = {}
    autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=args.autocast)
    with torch.no_grad(), autocast:
        for key, call in module_calls(our_models, image, kp_s, kp_d).items():
            calls[("ours", key)] = call
        calls[("ours", "render+paste")] = lambda: renderer.render(motion, progress=False)
        reference_error = None
        if reference is not None:
            for model in reference.values():
                move(model, device, torch.float32 if model is reference["S"] else dtype)
            try:
                for key, call in module_calls(reference, image, kp_s, kp_d).items():
                    calls[("reference", key)] = call
            except RuntimeError as error:  # e.g. mimic-head's warping module in fp16/bf16 (a missing dtype cast)
                reference_error = f"{type(error).__name__}: {error}"
        # Interleave ours and the reference module by module.
        rows: dict = {"ours": {}, "reference": {"error": reference_error} if reference_error else {}}
        for key in ["F", "M", "W", "G", "S", "render", "render+paste"]:
            group = {who: calls[(who, key)] for who in ("ours", "reference") if (who, key) in calls}
            for who, ms in timed(group, device, args.frames).items():
                rows[who][key] = ms
    if reference is None:
        del rows["reference"]

    keys = ["F", "M", "W", "G", "S", "render"]
    print(f"LivePortrait per-frame cost (ms), batch 1, {args.dtype}, {device}, {args.frames} timed frames")
    print(f"{'':>10}" + "".join(f"{k:>10}" for k in keys) + f"{'render+paste':>14}")
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:>10}  failed: {row['error']}")
            continue
        print(f"{name:>10}" + "".join(f"{row[k]:>10.1f}" for k in keys)
              + (f"{row['render+paste']:>14.1f}" if "render+paste" in row else ""))
    if "error" not in rows.get("reference", {"error": ""}):
        print(f"{'ours/ref':>10}" + "".join(f"{rows['ours'][k] / rows['reference'][k]:>10.2f}" for k in keys))
    print(f"anchor: {ANCHOR_MS_PER_FRAME} ms/frame on an RTX 4090 (fp16, torch.compile); ours here: "
          f"{rows['ours']['render+paste']:.1f} ms/frame (stitching + W + G + paste-back; M not included)")

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report = {
        "benchmark": "liveportrait_render",
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "autocast": args.autocast,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "unit": "ms per frame, batch 1, median over the timed frames",
        "render": "stitching + W + G per driven frame; render+paste: LivePortraitRenderer.render of one frame "
        "(+ paste-back into a 512² frame, uint8). F runs once per source, M once per extracted driving frame",
        "anchor_ms_per_frame": {"rtx4090_fp16_compiled": ANCHOR_MS_PER_FRAME},
        "rows": rows,
    }
    out = args.out or f"benchmarks/results/render-{device.type}-{args.dtype}.json"
    write_text_atomic(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
