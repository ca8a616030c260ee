"""JAM-Flow outputs for every task equal the previous release's for the same seeds (embedded default model).

``capture(pipe)`` runs the six tasks (and a batch) with small step counts and returns their mel and motion arrays
(the audio is the vocoder's function of the mel). The stored copy, ``data/release_outputs.npz``, was captured with
the release before the pipeline became generic (commit c2eb143) by running this file as a script:
``python plugins/jamflow/tests/test_release_outputs.py OUT.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).parent / "data" / "release_outputs.npz"
TEXT = "Open the window, please."
STEPS = 4


def capture(pipe) -> dict[str, np.ndarray]:
    """Arrays of every task's outputs (mel and motion; the audio is the vocoder's function of the mel) for fixed seeds."""
    out: dict[str, np.ndarray] = {}

    def keep(task, result):
        for i, mel in enumerate(result.mels or []):
            out[f"{task}/mel{i}"] = np.asarray(mel)
        for i, motion in enumerate(result.motions or []):
            out[f"{task}/motion{i}"] = np.asarray(motion)

    # idle="off": the release conditioned motion without given motion on the frozen mean face; the natural idle
    # track (the default since) changes talking_head, audio_to_motion and batch, and the tasks fed their motion.
    common = {"num_inference_steps": STEPS, "progress": False, "idle": "off"}
    base = pipe("talking_head", TEXT, seed=3, **common)
    keep("talking_head", base)
    keep("tts", pipe("tts", "Good morning.", seed=4, **common))
    speech, motion = base.audios[0], base.motions[0]
    keep("audio_to_motion", pipe("audio_to_motion", audio=speech, seed=5, **common))
    keep("dubbing", pipe("dubbing", "Close the door, thanks.", motion=motion, seed=6, **common))
    keep("video_to_video", pipe("video_to_video", "Close the door, thanks.", motion=motion, seed=7, **common))
    keep("edit", pipe("edit", TEXT, audio=speech, motion=motion, spans={"audio": [(0.4, 0.9)],
                                                                           "motion": [(0.4, 0.9)]}, seed=8, **common))
    keep("batch", pipe("talking_head", ["Yes.", "See you tomorrow."], seed=9, **common))
    return out



def test_every_task_reproduces_the_previous_release():
    pytest.importorskip("espeakng_loader")
    from mmflow_jamflow import JAMFlowPipeline
    from mmflow_jamflow.default_model import default_model_path

    expected = dict(np.load(REFERENCE))
    got = capture(JAMFlowPipeline.from_pretrained(default_model_path()))
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


if __name__ == "__main__":
    from mmflow_jamflow import JAMFlowPipeline
    from mmflow_jamflow.default_model import default_model_path

    arrays = capture(JAMFlowPipeline.from_pretrained(default_model_path()))
    np.savez_compressed(sys.argv[1], **arrays)
    print({k: v.shape for k, v in arrays.items()})
