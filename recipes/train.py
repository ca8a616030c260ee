"""Train an MMDiT from a YAML config (see docs/training.md): ``mmflow train``, as a script for ``accelerate launch``.

    accelerate launch recipes/train.py --config examples/toy_gesture/mmflow_toy_gesture/configs/toy.yaml
    accelerate launch recipes/train.py --config examples/toy_gesture/mmflow_toy_gesture/configs/toy.yaml --stage stage1
    accelerate launch recipes/train.py --config examples/toy_gesture/mmflow_toy_gesture/configs/toy.yaml --stage stage2 \
        --pretrained outputs/toy-stage1/model --output-dir outputs/toy-stage2

The same as ``mmflow train`` (or ``accelerate launch -m mmflow.cli train``): the run writes checkpoints, ``model/``
and a ready ``pipeline/`` into ``output_dir``.
"""

from __future__ import annotations

import argparse
import logging

from mmflow.cli import exit_without_teardown
from mmflow.training import command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train an mmflow MMDiT with Accelerate.")
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command.run(args)
    except ValueError as error:  # a bad config or a checkpoint that is missing, damaged or not plain data
        logging.getLogger("recipes.train").error(str(error))
        return 2


if __name__ == "__main__":
    exit_without_teardown(main())  # no abort in gloo's threads during teardown (mmflow/training/process_group.py)
