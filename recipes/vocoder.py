"""Train a small Vocos on espeak-ng speech of the synthetic corpus (``mmflow_audio_f5tts.vocoder_recipe``).

    accelerate launch recipes/vocoder.py --config recipes/configs/vocoder_small.yaml
    python recipes/vocoder.py --config recipes/configs/vocoder_small.yaml --total-steps 200 --output-dir /tmp/voc
"""

from mmflow_audio_f5tts.vocoder_recipe import main

from mmflow.cli import exit_without_teardown

if __name__ == "__main__":
    exit_without_teardown(main())  # no abort in gloo's threads during teardown (mmflow/training/process_group.py)
