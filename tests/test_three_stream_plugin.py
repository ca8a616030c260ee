"""A third-party plugin with three streams at three rates (``examples/tri_stream``, installed from its own folder)
gets training, a saved pipeline, ``mmflow generate`` and every one of its tasks from mmflow, with no sampling code
of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmflow.codecs import InputError
from mmflow.pipeline import MMFlowPipeline

tri = pytest.importorskip("mmflow_tri_stream.plugin", reason="install examples/tri_stream (scripts/setup.sh does)")


@pytest.fixture(scope="module")
def trained(tri_stream_pipeline):
    """Trained with ``mmflow train`` from the plugin's own YAML and dataset source (tests/conftest.py)."""
    return tri_stream_pipeline


@pytest.fixture(scope="module")
def pipe(trained):
    return MMFlowPipeline.from_pretrained(trained)


def _clip(seconds=1.0, seed=0):
    from mmflow_tri_stream.data import clip

    return clip(seconds, np.random.default_rng(seed))


def test_training_exports_a_pipeline_that_keeps_the_stream_order(trained, pipe):
    index = json.loads((trained / "model_index.json").read_text())
    assert index["_class_name"] == "MMFlowPipeline"
    config = json.loads((trained / "transformer" / "config.json").read_text())
    assert config["stream_order"] == ["beat", "pose", "glow"]  # the JSON itself is written with sorted keys
    assert pipe.transformer.stream_names == ["beat", "pose", "glow"]
    assert {n: float(s.frame_rate) for n, s in pipe.transformer.specs.items()} == {"beat": 40, "pose": 10, "glow": 8}
    assert sorted(pipe.tasks) == ["glow_from_beat_and_pose", "pose_from_beat", "tri_edit", "tri_joint"]


def test_every_task_runs_and_keeps_given_streams_exactly(pipe):
    clip = _clip()
    common = {"num_inference_steps": 2, "progress": False}
    joint = pipe("tri_joint", duration=1.5, **common).outputs[0]
    assert {k: v.shape for k, v in joint.items()} == {"beat": (60, 2), "pose": (15, 3), "glow": (12, 1)}

    pose = pipe("pose_from_beat", beat=clip["beat"], **common)
    assert set(pose.outputs[0]) == {"beat", "pose"}  # glow is absent: nothing sampled, nothing returned
    np.testing.assert_array_equal(pose.outputs[0]["beat"], clip["beat"])
    assert pose.outputs[0]["pose"].shape == (10, 3)

    glow = pipe("glow_from_beat_and_pose", beat=clip["beat"], pose=clip["pose"], **common).outputs[0]
    np.testing.assert_array_equal(glow["pose"], clip["pose"])
    assert glow["glow"].shape == (8, 1) and np.isfinite(glow["glow"]).all()

    edited = pipe("tri_edit", beat=clip["beat"], pose=clip["pose"], glow=clip["glow"],
                  spans={"beat": [(0.25, 0.5)], "pose": [(0.5, 0.8)]}, **common).outputs[0]
    outside = np.ones(40, bool)
    outside[10:20] = False
    np.testing.assert_array_equal(edited["beat"][outside], clip["beat"][outside])
    assert not np.array_equal(edited["beat"][10:20], clip["beat"][10:20])
    np.testing.assert_array_equal(edited["pose"][:5], clip["pose"][:5])
    np.testing.assert_array_equal(edited["glow"], clip["glow"])


def test_an_absent_stream_is_seen_by_no_other_stream(pipe):
    """With glow absent, pose only depends on beat: whatever glow holds does not change it."""
    from mmflow import generate
    from mmflow.codecs import TensorCodec
    from mmflow.long_form import batch_tracks

    clip = _clip()
    batches = {}
    for name, spec in pipe.transformer.specs.items():
        track = TensorCodec(spec).fit(TensorCodec(spec).encode({name: clip[name]}, "given"), 0, len(clip[name]))
        track.given[:] = name != "pose"
        batches[name] = batch_tracks([track])
    first = generate(pipe.transformer, batches, steps=2, seeds=[0], absent=("glow",))
    batches["glow"] = batches["glow"].replace(latent=batches["glow"].latent + 5.0)
    second = generate(pipe.transformer, batches, steps=2, seeds=[0], absent=("glow",))
    torch.testing.assert_close(first["pose"], second["pose"], rtol=0, atol=0)
    present = generate(pipe.transformer, batches, steps=2, seeds=[0])
    assert not torch.equal(present["pose"], second["pose"])  # present, glow does reach pose


def test_batches_equal_one_by_one_and_bad_inputs_name_the_task_inputs(pipe):
    clips = [_clip(1.0, 1), _clip(1.5, 2)]
    both = pipe("pose_from_beat", beat=[c["beat"] for c in clips], seed=7, num_inference_steps=2, progress=False)
    alone = pipe("pose_from_beat", beat=clips[1]["beat"], seed=8, num_inference_steps=2, progress=False)
    np.testing.assert_allclose(both.outputs[1]["pose"], alone.outputs[0]["pose"], atol=1e-5)
    with pytest.raises(InputError, match=r"needs beat= \(the beat stream, an array \(frames, 2\)"):
        pipe("pose_from_beat", progress=False)
    with pytest.raises(InputError, match=r"takes no glow="):
        pipe("pose_from_beat", beat=clips[0]["beat"], glow=clips[0]["glow"], progress=False)
    with pytest.raises(InputError, match="cannot tell how long"):
        pipe("tri_joint", progress=False)
    with pytest.raises(InputError, match="spans= are for editing tasks"):
        pipe("pose_from_beat", beat=clips[0]["beat"], spans={"pose": [(0, 1)]}, progress=False)
    with pytest.raises(InputError, match=r"must be an array \(frames, 2\)"):
        pipe("pose_from_beat", beat=np.zeros((10, 3), np.float32), progress=False)


@pytest.mark.parametrize(("task", "extra", "written"), [
    ("pose_from_beat", ["--input", "beat={beat}"], {"beat": (40, 2), "pose": (10, 3)}),
    ("tri_joint", ["--duration", "1.5"], {"beat": (60, 2), "pose": (15, 3), "glow": (12, 1)}),
    ("glow_from_beat_and_pose", ["--input", "beat={beat}", "--input", "pose={pose}"],
     {"beat": (40, 2), "pose": (10, 3), "glow": (8, 1)}),
    ("tri_edit", ["--input", "beat={beat}", "--input", "pose={pose}", "--input", "glow={glow}",
                  "--span", "beat:0.25:0.5"], {"beat": (40, 2), "pose": (10, 3), "glow": (8, 1)}),
])
def test_mmflow_generate_runs_every_task_of_a_saved_model_in_a_fresh_process(trained, tmp_path, task, extra, written):
    clip = _clip()
    for name, values in clip.items():
        np.save(tmp_path / f"{name}.npy", values)
    files = {name: tmp_path / f"{name}.npy" for name in clip}
    command = [sys.executable, "-m", "mmflow.cli", "generate", "--model", str(trained), "--task", task, "--steps", "2",
               "--out", str(tmp_path / "out"), *(arg.format(**files) for arg in extra)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, shape in written.items():
        values = np.load(tmp_path / "out" / f"sample.{name}.npy")
        assert values.shape == shape and np.isfinite(values).all(), name
    if task == "glow_from_beat_and_pose":
        np.testing.assert_array_equal(np.load(tmp_path / "out" / "sample.pose.npy"), clip["pose"])


def test_mmflow_generate_lists_the_model_tasks_and_refuses_bad_inputs(trained, tmp_path):
    np.save(tmp_path / "beat.npy", _clip()["beat"])
    command = [sys.executable, "-m", "mmflow.cli", "generate", "--model", str(trained), "--task", "pose_from_beat",
               "--input", f"beat={tmp_path / 'beat.npy'}", "--steps", "2", "--out", str(tmp_path / "out")]
    listing = subprocess.run([sys.executable, "-m", "mmflow.cli", "generate", "--model", str(trained), "--help"],
                             capture_output=True, text=True, timeout=240)
    assert "pose_from_beat" in listing.stdout and "beat: the beat stream" in listing.stdout
    bad = subprocess.run(command[:-2] + ["--out", str(tmp_path / "bad"), "--input", "pose=x.npy"],
                         capture_output=True, text=True, timeout=240)
    assert bad.returncode == 2 and "takes no pose=" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_diffusers_call_conventions(pipe):
    """generator= instead of seed=, return_dict=False, and set_progress_bar_config(disable=True) honoured."""
    clip = _clip()
    common = {"beat": clip["beat"], "num_inference_steps": 2, "progress": True}
    first = pipe("pose_from_beat", generator=torch.Generator().manual_seed(5), **common).outputs[0]["pose"]
    again = pipe("pose_from_beat", generator=torch.Generator().manual_seed(5), **common).outputs[0]["pose"]
    other = pipe("pose_from_beat", generator=torch.Generator().manual_seed(6), **common).outputs[0]["pose"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    outputs, latents = pipe("pose_from_beat", seed=1, return_dict=False, **common)
    assert outputs[0]["pose"].shape == (10, 3) and latents[0]["pose"].shape == (10, 3)
    with pytest.raises(InputError, match="generator has 2 entries but there are 1 prompts"):
        pipe("pose_from_beat", generator=[torch.Generator(), torch.Generator()], **common)


def test_progress_bars_follow_set_progress_bar_config(trained, capfd):
    pipe = MMFlowPipeline.from_pretrained(trained)
    pipe.set_progress_bar_config(disable=True)
    pipe("pose_from_beat", beat=_clip()["beat"], num_inference_steps=2)
    assert "sampling" not in capfd.readouterr().err
    pipe.set_progress_bar_config(disable=False)
    pipe("pose_from_beat", beat=_clip()["beat"], num_inference_steps=2)
    assert "sampling" in capfd.readouterr().err
