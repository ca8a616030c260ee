"""Train JAM-Flow with Accelerate and export a ``JAMFlowPipeline`` folder (``mmflow_jamflow.recipe``).

    accelerate launch recipes/jamflow.py --config recipes/configs/jamflow_tiny.yaml
    accelerate launch recipes/jamflow.py --config recipes/configs/jamflow_paper.yaml --stage stage1 \
        --f5tts-checkpoint ckpts/model_1250000.safetensors --vocab ckpts/vocab.txt
    accelerate launch recipes/jamflow.py --config ... --stage stage2 --pretrained-pipeline outputs/stage1/pipeline
"""

from mmflow_jamflow.recipe import main

from mmflow.cli import exit_without_teardown

if __name__ == "__main__":
    exit_without_teardown(main())  # no abort in gloo's threads during teardown (mmflow/training/process_group.py)
