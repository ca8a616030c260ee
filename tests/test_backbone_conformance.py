"""The generic ``dit`` backbone passes the conformance checks ``mmflow.testing`` offers third-party backbones, and a
backbone that breaks the protocol is refused by name when a model is built."""

from __future__ import annotations

import pytest
from torch import nn

from mmflow import MMDiT, hookimpl
from mmflow.plugins import build_registry
from mmflow.testing import TINY_BACKBONE, BackboneConformance, random_batches, randomize, streams_config


class TestDiTBackbone(BackboneConformance):
    stream = {"frame_rate": "25", "channels": 2, "cond_channels": 3}


def test_a_model_of_any_number_of_streams_runs():
    model = randomize(MMDiT(**streams_config({"a": 40, "b": 10, "c": 8, "d": "93.75"}, {"b": 3})))
    assert model.stream_names == ["a", "b", "c", "d"] and model.specs["d"].frame_rate == 375 / 4
    batches = random_batches(model)
    assert batches["b"].latent.shape[-1] == 3 and batches["d"].num_frames == 94


def test_a_backbone_without_the_protocol_is_refused(monkeypatch):
    class Broken(nn.Module):
        def __init__(self, channels, cond_channels=0, **config):
            super().__init__()
            self.transformer_blocks = nn.ModuleList([nn.Linear(2, 2)])

    class Plugin:
        @hookimpl
        def mmflow_backbones(self):
            return {"broken": Broken}

    registry = build_registry(extra_plugins={"broken": Plugin()}, load_entry_points=False)
    monkeypatch.setattr("mmflow.transformer.get_registry", lambda: registry)
    with pytest.raises(TypeError, match=r"Broken of stream 's' lacks \['rotary_embed'.*'embed', 'output', "
                                        r"'transformer_blocks\[0\].attention_inputs'"):
        MMDiT(streams={"s": {"frame_rate": "25", "channels": 1, "backbone": "broken", "backbone_config": TINY_BACKBONE}})
