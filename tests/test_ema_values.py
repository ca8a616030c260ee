"""mmflow.training.ema beyond the arithmetic pinned in test_maths_pinned.py: argument checks, float32 shadows of
low-precision weights, and a state that belongs to other parameters refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmflow.training.ema import EMA


def _model(dtype=torch.float32):
    model = nn.Linear(3, 2).to(dtype)
    model.bias.requires_grad_(False)
    return model


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(_model(), decay=decay)


def test_update_every_must_be_positive():
    with pytest.raises(ValueError, match="update_every"):
        EMA(_model(), decay=0.9, update_every=0)
    assert EMA(_model(), decay=0.9, update_every=1).update_every == 1
    default = EMA(_model())
    assert default.decay == 0.999 and default.update_every == 1 and default.num_updates == 0


def test_shadow_is_float32_copy_of_trainable_low_precision_weights():
    model = _model(torch.bfloat16)
    ema = EMA(model, decay=0.5)
    assert set(ema.shadow) == {"weight"} and ema.shadow["weight"].dtype == torch.float32
    assert torch.equal(ema.shadow["weight"], model.weight.detach().float())
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(ema.shadow["weight"], model.weight.detach().float())  # a copy, not a view
    ema.step(model, 1)
    assert ema.shadow["weight"].dtype == torch.float32


def test_state_of_other_parameters_is_refused():
    ema = EMA(_model(), decay=0.9)
    state = ema.state_dict()
    assert set(state) == {"decay", "update_every", "num_updates", "shadow"}
    assert all(t.device.type == "cpu" for t in state["shadow"].values())
    for shadow in ({}, {**state["shadow"], "bias": torch.zeros(2)}):
        with pytest.raises(ValueError, match="does not match the trainable parameters"):
            ema.load_state_dict({**state, "shadow": shadow})


def test_load_copies_into_the_existing_shadow_and_restores_the_count():
    model = _model()
    ema = EMA(model, decay=0.9)
    before = ema.shadow["weight"]
    state = {"decay": 0.9, "update_every": 1, "num_updates": 7, "shadow": {"weight": torch.full((2, 3), 2.5)}}
    ema.load_state_dict(state)
    assert ema.shadow["weight"] is before and (before == 2.5).all() and ema.num_updates == 7
