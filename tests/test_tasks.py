import pytest
import torch

from mmflow import Guidance, TaskPreset, generate
from mmflow.tasks import apply_task, span_frames
from mmflow.testing import tiny_batches, tiny_model


def test_span_frames_use_each_streams_rate():
    model = tiny_model()
    assert span_frames(model.specs["fast"], 0.2, 0.6) == (10, 30)
    assert span_frames(model.specs["slow"], 0.2, 0.6) == (3, 9)
    with pytest.raises(ValueError, match="start < end"):
        span_frames(model.specs["fast"], 0.5, 0.5)


def test_cross_stream_task_and_span_editing_keep_the_rest_exactly():
    model = tiny_model()
    batches = tiny_batches(seconds=(1.0, 1.0))
    task = TaskPreset("slow_from_fast", "generate slow from fast", generate=("slow",), given=("fast",))
    conditioned = apply_task(batches, model.specs, task)
    assert conditioned["fast"].given.all() and not conditioned["slow"].given.any()

    edit = TaskPreset("edit", "regenerate a span of both", generate=("fast", "slow"))
    edited = apply_task(batches, model.specs, edit, spans={"fast": [(0.2, 0.6)], "slow": [(0.2, 0.6)]})
    assert (~edited["fast"].given).nonzero()[:, 1].unique().tolist() == list(range(10, 30))
    out = generate(model, edited, steps=3, guidance=Guidance({"fast": 2.0}), seeds=[0, 1])
    for name, batch in edited.items():
        assert torch.equal(out[name][batch.given], batch.latent[batch.given])  # outside the span: untouched
        assert not torch.equal(out[name][~batch.given], batch.latent[~batch.given])


def test_task_errors_name_the_stream():
    model = tiny_model()
    batches = tiny_batches()
    with pytest.raises(KeyError, match="'audio'"):
        apply_task(batches, model.specs, TaskPreset("tts", "", generate=("audio",)))
    with pytest.raises(ValueError, match="starts after the end"):
        apply_task(batches, model.specs, TaskPreset("e", "", generate=("fast",)), spans={"fast": [(5.0, 6.0)]})
