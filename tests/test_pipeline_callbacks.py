"""diffusers' call conventions on ``MMFlowPipeline``: ``callback_on_step_end`` (+ tensor inputs), ``latents=``,
``prepare_latents``, and the diffusers knobs mmflow refuses by name instead of ignoring (issue 14, item 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmflow import FlowMatchingScheduler, MMDiT
from mmflow.codecs import InputError
from mmflow.pipeline import MMFlowPipeline

CALL = {"duration": 1.0, "num_inference_steps": 3, "output_type": "latent", "progress": False}
DEFAULT_MODEL = Path(__file__).parents[1] / "plugins/jamflow/mmflow_jamflow/default_model"


def _tri_stream(max_seconds: float = 30.0) -> MMFlowPipeline:
    """The three-stream example's model (``examples/tri_stream``) with seeded random weights: sampling arithmetic is
    what these tests compare, so no training is needed."""
    import yaml

    tri = pytest.importorskip("mmflow_tri_stream.plugin", reason="install examples/tri_stream (scripts/setup.sh does)")
    config = yaml.safe_load(Path(tri.config_path()).read_text())["model"]["config"]
    torch.manual_seed(0)
    return MMFlowPipeline(MMDiT(**config), FlowMatchingScheduler(), max_seconds=max_seconds)


@pytest.fixture(scope="module")
def pipe():
    return _tri_stream()


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _beat(seconds: float = 1.0) -> np.ndarray:
    from mmflow_tri_stream.data import clip

    return clip(seconds, np.random.default_rng(0))["beat"]


def test_a_callback_sees_every_step_at_the_scheduler_timesteps_and_changes_nothing_by_itself(pipe):
    seen = []

    def record(p, step_index, timestep, callback_kwargs):
        assert p is pipe and set(callback_kwargs) == {"latents"}
        seen.append((p.window_index, step_index, float(timestep),
                     {n: tuple(v.shape) for n, v in callback_kwargs["latents"].items()}))
        return callback_kwargs

    out = pipe("tri_joint", seed=4, callback_on_step_end=record, **CALL)
    scheduler = FlowMatchingScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(3)
    assert [(w, i, t) for w, i, t, _ in seen] == [(0, i, float(t)) for i, t in enumerate(scheduler.timesteps)]
    assert pipe.num_timesteps == 3
    assert seen[0][3] == {"beat": (1, 40, 2), "pose": (1, 10, 3), "glow": (1, 8, 1)}
    assert _equal(out.latents[0], pipe("tri_joint", seed=4, **CALL).latents[0])


def test_latents_changed_by_a_callback_change_the_output_as_the_loop_predicts(pipe):
    base = pipe("tri_joint", seed=1, **CALL).latents[0]
    shifted = pipe("tri_joint", seed=1, callback_on_step_end=lambda p, i, t, kw: {
        "latents": {n: v + 1 for n, v in kw["latents"].items()} if i == 2 else kw["latents"]}, **CALL).latents[0]
    assert _equal(shifted, {n: v + 1 for n, v in base.items()})  # the last step's state is the output

    after_first = {}

    def keep(p, i, t, kw):
        if i == 0:
            after_first.update({n: v.clone() for n, v in kw["latents"].items()})
        return kw

    def swap(p, i, t, kw):
        return {"latents": after_first} if i == 0 else kw

    reference = pipe("tri_joint", seed=1, callback_on_step_end=keep, **CALL).latents[0]
    swapped = pipe("tri_joint", seed=2, callback_on_step_end=swap, **CALL).latents[0]
    assert _equal(swapped, reference)  # seed 2 continued from seed 1's state after step 0 is seed 1's run
    assert not _equal(pipe("tri_joint", seed=2, **CALL).latents[0], reference)


@pytest.mark.parametrize("task, inputs", [("tri_joint", {}), ("pose_from_beat", {"beat": _beat})])
def test_latents_equal_to_a_seeds_noise_give_that_seeds_output_bit_for_bit(pipe, task, inputs):
    inputs = {k: v() for k, v in inputs.items()}
    noise = pipe.prepare_latents(task, seed=7, duration=1.0, **inputs)
    assert len(noise) == 1 and set(noise[0]) == {n for n in pipe.stream_names if pipe.task(task).role(n) != "absent"}
    seeded = pipe(task, seed=7, **CALL, **inputs).latents[0]
    assert _equal(pipe(task, seed=123, latents=noise[0], **CALL, **inputs).latents[0], seeded)
    other = {n: v.flip(0) for n, v in noise[0].items()}
    assert not _equal(pipe(task, latents=other, **CALL, **inputs).latents[0], seeded)


def test_batched_latents_per_prompt_or_as_tensors(pipe):
    beats = [_beat(), _beat() * 0.5]
    noise = pipe.prepare_latents("pose_from_beat", seed=[3, 9], beat=beats)
    seeded = pipe("pose_from_beat", seed=[3, 9], beat=beats, **CALL).latents
    as_list = pipe("pose_from_beat", latents=noise, beat=beats, **CALL).latents
    stacked = pipe("pose_from_beat", latents={n: torch.stack([x[n] for x in noise]) for n in noise[0]}, beat=beats,
                   **CALL).latents
    assert all(_equal(a, b) and _equal(a, c) for a, b, c in zip(seeded, as_list, stacked, strict=True))


def test_long_timelines_run_every_window_and_take_each_windows_frames_of_latents():
    pipe = _tri_stream(max_seconds=1.0)
    call = {**CALL, "duration": 2.0, "num_inference_steps": 2}
    seen = []
    pipe("tri_joint", callback_on_step_end=lambda p, i, t, kw: seen.append((p.window_index, i)) or kw, **call)
    windows = sorted({w for w, _ in seen})
    assert len(windows) > 1 and seen == [(w, i) for w in windows for i in range(2)]
    noise = pipe.prepare_latents("tri_joint", seed=2, duration=2.0)[0]
    late = {n: torch.cat([v[: len(v) // 2], -v[len(v) // 2:]]) for n, v in noise.items()}  # only the later frames
    a, b = pipe("tri_joint", latents=noise, **call).latents[0], pipe("tri_joint", latents=late, **call).latents[0]
    assert torch.equal(a["pose"][:5], b["pose"][:5]) and not torch.equal(a["pose"][10:], b["pose"][10:])


def test_bad_callbacks_latents_and_unsupported_knobs_are_refused_by_name(pipe):
    with pytest.raises(InputError, match=r"callback_on_step_end_tensor_inputs names \['prompt_embeds'\]; this "
                                         r"pipeline passes \['latents'\]"):
        pipe("tri_joint", callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["prompt_embeds"],
             **CALL)
    with pytest.raises(TypeError, match="callback_on_step_end must return a dict"):
        pipe("tri_joint", callback_on_step_end=lambda *a: None, **CALL)
    with pytest.raises(InputError, match="returned latents that are not the given streams"):
        pipe("tri_joint", callback_on_step_end=lambda p, i, t, kw: {"latents": {"pose": kw["latents"]["pose"]}},
             **CALL)
    noise = pipe.prepare_latents("tri_joint", duration=1.0)[0]
    with pytest.raises(InputError, match=r"latents\['pose'\] for prompt 0 has shape \(9, 3\); expected \(10, 3\): "
                                         r"\(frames, channels\) over the timeline"):
        pipe("tri_joint", latents={**noise, "pose": noise["pose"][:9]}, **CALL)
    with pytest.raises(InputError, match=r"must map each stream the task samples, \['beat', 'pose', 'glow'\]"):
        pipe("tri_joint", latents={"pose": noise["pose"]}, **CALL)
    with pytest.raises(InputError, match="latents has 1 entries but there are 2 prompts"):
        pipe("pose_from_beat", latents=[noise], beat=[_beat(), _beat()], **CALL)
    with pytest.raises(InputError, match=r"num_images_per_prompt=: not supported; give the inputs as lists"):
        pipe("tri_joint", num_images_per_prompt=2, **CALL)
    with pytest.raises(NotImplementedError, match="enable_attention_slicing: mmflow's attention"):
        pipe.enable_attention_slicing()
    with pytest.raises(NotImplementedError, match="xformers is not used"):
        pipe.enable_xformers_memory_efficient_attention()
    pipe.disable_attention_slicing()  # nothing is sliced: nothing to undo


def test_jamflow_takes_callbacks_and_latents():
    jamflow = pytest.importorskip("mmflow_jamflow.pipeline")
    pipe = jamflow.JAMFlowPipeline.from_pretrained(DEFAULT_MODEL)
    call = {"num_inference_steps": 2, "output_type": "latent", "progress": False}
    steps = []
    seeded = pipe("tts", "hi.", seed=5, callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw, **call)
    assert steps == [0, 1]
    noise = pipe.prepare_latents("tts", text="hi.", seed=5)[0]
    assert set(noise) == {"audio"}
    again = pipe("tts", "hi.", seed=0, latents=noise, **call)
    np.testing.assert_array_equal(again.mels[0], seeded.mels[0])
