"""LoRA fine-tuning of an ``MMDiT``: low-rank updates on chosen linear layers, merged back for export.

Fine-tuning a large pretrained model on a few hours of one speaker's clips overfits and needs the optimizer
state of every weight; LoRA trains ``W + (alpha / r) · B A`` with ``A`` (r × in) and ``B`` (out × r, zero at the
start, so training starts from the pretrained model exactly) and leaves ``W`` frozen. Exported models have the
update merged in, so they load as ordinary ``MMDiT`` folders.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections of every DiT block (self and joint attention share them)."""


class LoRALinear(nn.Module):
    """``base(x) + scale · up(down(dropout(x)))`` with ``base`` frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base, self.scale = base, alpha / rank
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device,
                                   dtype=base.weight.dtype)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device,
                                 dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.dropout = nn.Dropout(dropout)
        base.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_up(self.lora_down(self.dropout(x))) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the low-rank update folded into its weight."""
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        linear.weight.copy_(self.base.weight + self.scale * self.lora_up.weight @ self.lora_down.weight)
        if self.base.bias is not None:
            linear.bias.copy_(self.base.bias)
        return linear


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(
    model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS, dropout: float = 0.0
) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends in one of ``targets`` and whose weight is trainable (frozen
    streams stay untouched); then freeze everything but the LoRA factors. Returns the wrapped module names."""
    chosen = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _matches(name, targets) and module.weight.requires_grad
    ]
    if not chosen:
        raise ValueError(f"LoRA targets {list(targets)} match no trainable linear layer of the model; use names "
                         f"such as {list(DEFAULT_TARGETS)}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    return chosen


def _lora_modules(model: nn.Module) -> Iterator[tuple[nn.Module, str, LoRALinear]]:
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            yield (model.get_submodule(parent_name) if parent_name else model), child, module


@contextlib.contextmanager
def lora_merged(model: nn.Module):
    """Within the block, ``model`` has plain merged linears (for ``save_pretrained``); restored after."""
    swapped = [(parent, child, module) for parent, child, module in _lora_modules(model)]
    try:
        for parent, child, module in swapped:
            setattr(parent, child, module.merged())
        yield model
    finally:
        for parent, child, module in swapped:
            setattr(parent, child, module)
