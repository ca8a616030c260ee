"""An exponential moving average of a model's trainable weights.

Small on purpose (diffusers' ``EMAModel`` tracks every parameter, frozen ones included, and warms its decay
up; a frozen 300 M-parameter audio backbone in stage 1 would double its memory for nothing). The shadow
weights are float32, keyed by parameter name; the trainer saves them with every checkpoint as a safetensors
file (not through ``Accelerator.register_for_checkpointing``, whose loader unpickles in full).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class EMA:
    """``shadow = decay · shadow + (1 − decay) · weight`` every ``update_every`` calls of ``step``.

    Args:
        model: The model (unwrapped) whose parameters with ``requires_grad`` are tracked.
        decay: Weight of the past in (0, 1).
        update_every: Update on every n-th optimizer step (the first update is at step ``update_every``).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, update_every: int = 1):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if update_every < 1:
            raise ValueError(f"EMA update_every must be >= 1, got {update_every}")
        self.decay, self.update_every = decay, update_every
        self.shadow = {
            name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad
        }
        self.num_updates = 0

    @torch.no_grad()
    def step(self, model: nn.Module, optimizer_step: int) -> bool:
        """Call after optimizer step number ``optimizer_step`` (1-based); returns whether it updated."""
        if optimizer_step % self.update_every:
            return False
        params = dict(model.named_parameters())
        for name, shadow in self.shadow.items():
            shadow.lerp_(params[name].detach().float(), 1 - self.decay)
        self.num_updates += 1
        return True

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module):
        """Run the block with the EMA weights in ``model``; the training weights come back exactly after."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        try:
            with torch.no_grad():
                for name, shadow in self.shadow.items():
                    params[name].copy_(shadow)
            yield model
        finally:
            with torch.no_grad():
                for name, saved in backup.items():
                    params[name].copy_(saved)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "update_every": self.update_every, "num_updates": self.num_updates,
                "shadow": {name: t.cpu() for name, t in self.shadow.items()}}

    def load_state_dict(self, state: dict):
        missing, unexpected = set(self.shadow) - set(state["shadow"]), set(state["shadow"]) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not match the trainable parameters (missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}); was the checkpoint written by another stage or model?"
            )
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.num_updates = int(state["num_updates"])
