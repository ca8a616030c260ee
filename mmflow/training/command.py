"""``mmflow train``: train any MMDiT from a YAML config with Accelerate, then export a ready pipeline.

    mmflow train --config examples/toy_gesture/mmflow_toy_gesture/configs/toy.yaml
    accelerate launch -m mmflow.cli train --config CONFIG.yaml          # several processes / GPUs

The run writes checkpoints and ``model/`` (the EMA weights) to ``output_dir`` like the Trainer always has, and
``pipeline/``: an ``MMFlowPipeline`` folder (the model, a scheduler with ``sampling.steps`` steps) that
``mmflow generate --model OUTPUT/pipeline --task NAME`` and ``MMFlowPipeline.from_pretrained`` load.
Overrides on the command line replace the config's values for short runs (``--total-steps``, ``--warmup-steps``...).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config YAML (docs/training.md)")
    parser.add_argument("--stage", help="stage to train (overrides `stage`)")
    parser.add_argument("--output-dir", help="overrides `output_dir`")
    parser.add_argument("--total-steps", type=int, help="overrides `total_steps`")
    parser.add_argument("--warmup-steps", type=int, help="overrides `schedule.warmup_steps`")
    parser.add_argument("--batch-size", type=int, help="overrides `batch_size`")
    parser.add_argument("--lr", type=float, help="overrides `optimizer.lr` (the peak learning rate)")
    parser.add_argument("--seed", type=int, help="overrides `seed`")
    parser.add_argument("--pretrained", help="fine-tune this saved model folder instead of `model` in the config")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (newest checkpoint in output_dir, if any), 'none', or a checkpoint folder")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="longest window the exported pipeline samples at once (default 30, range 1-120)")


def config_overrides(args: argparse.Namespace, data: dict) -> dict:
    """The config's top-level sections with the command line's overrides applied (nested keys merged)."""
    flat = {"stage": args.stage, "output_dir": args.output_dir, "total_steps": args.total_steps,
            "batch_size": args.batch_size, "seed": args.seed}
    overrides = {key: value for key, value in flat.items() if value is not None}
    nested = {("schedule", "warmup_steps"): args.warmup_steps, ("optimizer", "lr"): args.lr}
    for (section, key), value in nested.items():
        if value is not None:
            current = data.get(section) if isinstance(data.get(section), dict) else {}
            overrides[section] = {**current, **overrides.get(section, {}), key: value}
    if args.pretrained:  # a saved model replaces the config's architecture (its length_buckets stays)
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        overrides["model"] = {"pretrained": args.pretrained,
                              **{k: v for k, v in model.items() if k == "length_buckets"}}
    return overrides


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_path
    from ..pipeline import MMFlowPipeline
    from ..scheduler import FlowMatchingScheduler
    from ..transformer import MMDiT
    from ..validation import WINDOW
    from . import CheckpointError, ConfigError, Trainer, TrainingConfig, build_dataset, build_model
    from .config import read_yaml_mapping
    from .trainer import check_tracker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    WINDOW.check("--max-seconds (the exported pipeline's window)", args.max_seconds)
    try:
        data = read_yaml_mapping(args.config, "training config")
        config = TrainingConfig.from_yaml(args.config, config_overrides(args, data))
        check_tracker(config.tracker)  # before the data build, which can take hours
        trainer = Trainer(config, build_model(config.model, config.seed), build_dataset(config))
        trainer.fit(resume_from=None if args.resume == "none" else args.resume)
    except (ConfigError, CheckpointError) as error:
        raise ValueError(str(error)) from None
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        model = MMDiT.from_pretrained(Path(config.output_dir) / "model")
        scheduler = FlowMatchingScheduler(num_inference_steps=config.sampling.steps)
        target = Path(config.output_dir) / "pipeline"
        with atomic_path(target) as tmp:
            MMFlowPipeline(model, scheduler, max_seconds=args.max_seconds).save_pretrained(tmp)
        logger.info("exported a ready pipeline to %s (mmflow generate --model %s --task ...)", target, target)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def add_train(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config (Accelerate) and export a pipeline",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run)
