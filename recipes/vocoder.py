"""Train a small Vocos on espeak-ng speech of the synthetic corpus (``mmflow_audio_f5tts.vocoder_recipe``).

    accelerate launch recipes/vocoder.py --config recipes/configs/vocoder_small.yaml
    python recipes/vocoder.py --config recipes/configs/vocoder_small.yaml --total-steps 200 --output-dir /tmp/voc
"""

import sys

from mmflow_audio_f5tts.vocoder_recipe import main

if __name__ == "__main__":
    sys.exit(main())
