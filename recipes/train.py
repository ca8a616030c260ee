"""Train an MMDiT from a YAML config (see docs/training.md).

    accelerate launch recipes/train.py --config recipes/configs/toy.yaml
    accelerate launch recipes/train.py --config recipes/configs/toy.yaml --stage stage1
    accelerate launch recipes/train.py --config recipes/configs/toy.yaml --stage stage2 \
        --pretrained outputs/toy-stage1/model --output-dir outputs/toy-stage2
"""

from __future__ import annotations

import argparse
import logging
import sys

from mmflow.training import CheckpointError, ConfigError, Trainer, TrainingConfig, build_dataset, build_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train an mmflow MMDiT with Accelerate.")
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--stage", help="stage to train (overrides `stage`)")
    parser.add_argument("--output-dir", help="overrides `output_dir`")
    parser.add_argument("--total-steps", type=int, help="overrides `total_steps`")
    parser.add_argument("--pretrained", help="fine-tune this saved model folder instead of `model` in the config")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (newest checkpoint in output_dir, if any), 'none', or a checkpoint folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"stage": args.stage, "output_dir": args.output_dir, "total_steps": args.total_steps,
                 "model": {"pretrained": args.pretrained} if args.pretrained else None}
    try:
        config = TrainingConfig.from_yaml(args.config, {k: v for k, v in overrides.items() if v is not None})
        trainer = Trainer(config, build_model(config.model, config.seed), build_dataset(config))
    except ConfigError as error:
        logging.getLogger("recipes.train").error(str(error))
        return 2
    try:
        trainer.fit(resume_from=None if args.resume == "none" else args.resume)
    except CheckpointError as error:  # a checkpoint file missing, damaged or not plain data: named, nothing run
        logging.getLogger("recipes.train").error(str(error))
        return 2
    trainer.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
