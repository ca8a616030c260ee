"""LoRA fine-tuning of an ``MMDiT`` through peft: low-rank updates on chosen linear layers, exported merged
(an ordinary ``MMDiT`` folder) or as an adapter file a pipeline loads with ``load_lora_weights``.

Fine-tuning a large pretrained model on a few hours of one speaker's clips overfits and needs the optimizer
state of every weight; LoRA trains ``W + (alpha / r) · B A`` with ``A`` (r × in) and ``B`` (out × r, zero at the
start, so training starts from the pretrained model exactly) and leaves ``W`` frozen. The layers are peft's
(``MMDiT.add_adapter``), so the trained adapter is the same object diffusers users load, switch and fuse.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..lora_loading import save_transformer_adapter

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections of every DiT block (self and joint attention share them)."""

ADAPTER_NAME = "default"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(
    model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS, dropout: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Attach a peft LoRA adapter to every ``nn.Linear`` whose name ends in one of ``targets`` and whose weight
    is trainable (frozen streams stay untouched); then freeze everything but the LoRA factors. Returns the
    adapted module names.

    The ``A`` factors are drawn from ``seed`` on a forked generator: the same run gets the same adapter whatever
    ran before in the process (a resume depends on it), and the caller's random state is left as it was."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    chosen = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _matches(name, targets) and module.weight.requires_grad
    ]
    if not chosen:
        raise ValueError(f"LoRA targets {list(targets)} match no trainable linear layer of the model; use names "
                         f"such as {list(DEFAULT_TARGETS)}")
    # full module names: the adapter covers exactly the trainable layers, whatever a stage froze
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen, init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):  # peft initialises A on the CPU generator, before moving it
        torch.manual_seed(seed)
        model.add_adapter(config, adapter_name=ADAPTER_NAME)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    return chosen


def _lora_layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, attribute, layer)`` of every peft LoRA layer of ``model``."""
    from peft.tuners.lora import LoraLayer

    found = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            found.append((model.get_submodule(parent_name) if parent_name else model, child, module))
    return found


@torch.no_grad()
def _merged_linear(layer) -> nn.Linear:
    """A plain ``nn.Linear``: the layer's base weight plus the update of each of its active adapters (none when
    adapters are disabled), computed aside so the base weight itself is never touched."""
    base = layer.get_base_layer()
    linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                       device=base.weight.device, dtype=base.weight.dtype)
    weight = base.weight.detach().clone()
    if not layer.disable_adapters:
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A and adapter not in layer.merged_adapters:
                weight += layer.get_delta_weight(adapter).to(weight.dtype)
    linear.weight.copy_(weight)
    if base.bias is not None:
        linear.bias.copy_(base.bias)
    return linear


@contextlib.contextmanager
def lora_merged(model: nn.Module, merge: bool = True):
    """Within the block, ``model`` has plain linears with the adapters' updates merged in (``merge=False``: the
    base weights alone), so ``state_dict``/``save_pretrained`` give an ordinary ``MMDiT``; afterwards the peft
    layers are back, unmerged and unchanged. A model without adapters is left as it is."""
    swapped = _lora_layers(model)
    try:
        for parent, child, layer in swapped:
            setattr(parent, child, _merged_linear(layer) if merge else layer.get_base_layer())
        yield model
    finally:
        for parent, child, layer in swapped:
            setattr(parent, child, layer)


def save_adapter(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Save the trained adapter unmerged as ``folder/pytorch_lora_weights.safetensors`` (diffusers' LoRA format,
    its ``LoraConfig`` in the metadata): ``pipe.load_lora_weights(folder)`` puts it on the base model."""
    return save_transformer_adapter(model, folder, ADAPTER_NAME)
