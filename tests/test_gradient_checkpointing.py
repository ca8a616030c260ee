"""Gradient checkpointing on MMDiT recomputes each layer step in backward and changes no loss or gradient."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mmflow import MMDiT
from mmflow.flow import FlowMatchingObjective
from mmflow.testing import randomize, tiny_batches, tiny_config


def _model(dropout: float) -> MMDiT:
    config = tiny_config(depth_a=3, depth_b=2)
    for stream in config["streams"].values():
        stream["backbone_config"]["dropout"] = dropout
    return randomize(MMDiT(**config)).train()


def _loss_and_grads(model: MMDiT):
    objective = FlowMatchingObjective(condition_dropout={"slow": 0.5})
    torch.manual_seed(3)  # dropout draws from the global generator
    loss = objective(model, tiny_batches(), generator=torch.Generator().manual_seed(1))
    loss.total.backward()
    return loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_checkpointing_leaves_losses_and_gradients_unchanged(dropout):
    """fp32 on the CPU: recomputation replays the same operations (and the same dropout draws, since
    checkpointing restores the RNG state), so losses and gradients are equal exactly (tolerance 0)."""
    plain = _model(dropout)
    checkpointed = copy.deepcopy(plain)
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.is_gradient_checkpointing and not plain.is_gradient_checkpointing

    calls = []
    block = checkpointed.backbones["fast"].transformer_blocks[1]
    block.ff.register_forward_hook(lambda *args: calls.append(torch.is_grad_enabled()))

    expected_loss, expected_grads = _loss_and_grads(plain)
    loss, grads = _loss_and_grads(checkpointed)
    assert len(calls) == 2  # the forward pass, then its recomputation in backward: checkpointing is on
    assert torch.equal(loss.total, expected_loss.total)
    assert all(torch.equal(loss.per_stream[n], expected_loss.per_stream[n]) for n in expected_loss.per_stream)
    assert sorted(grads) == sorted(expected_grads) and len(grads) > 0
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=0, msg=name)


def test_checkpointing_is_off_without_gradients_and_can_be_disabled():
    model = _model(0.0).eval()
    batches = tiny_batches()
    x = {n: torch.randn(b.latent.shape) for n, b in batches.items()}
    t = torch.full((2,), 0.4)
    with torch.no_grad():
        expected = model(x, t, batches)
        model.enable_gradient_checkpointing()
        got = model(x, t, batches)  # inference: no checkpointing, the same outputs
    assert all(torch.equal(got[n], expected[n]) for n in expected)
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


def test_training_config_switch_turns_it_on_in_the_trainer(tmp_path):
    yaml = pytest.importorskip("yaml")
    from accelerate.state import AcceleratorState, GradientState

    from mmflow.training import ConfigError, Trainer, TrainingConfig, build_dataset, build_model

    toy = Path(__file__).parents[1] / "examples" / "toy_gesture" / "mmflow_toy_gesture" / "configs" / "toy.yaml"
    data = yaml.safe_load(toy.read_text())
    data.update(output_dir=str(tmp_path / "run"), total_steps=4, gradient_checkpointing=True)
    data["data"]["kwargs"] = {"num_clips": 4, "min_seconds": 0.6, "max_seconds": 1.0, "seed": 0}
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        TrainingConfig.from_dict({**data, "gradient_checkpointing": "yes"})
    config = TrainingConfig.from_dict(data)
    try:
        trainer = Trainer(config, build_model(config.model, config.seed), build_dataset(config))
        assert trainer.unwrapped.is_gradient_checkpointing
    finally:  # accelerate keeps process-wide state; other tests build their own
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert not TrainingConfig.from_dict({**data, "gradient_checkpointing": False}).gradient_checkpointing
