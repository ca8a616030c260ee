"""Training stages as data: which streams' backbones are frozen.

JAM-Flow trains in two stages (paper §4.6). Stage 1 freezes the pretrained audio DiT and trains the motion
DiT "with joint attention layers inserted"; stage 2 trains both. In an ``MMDiT`` a joint attention layer has
no parameters of its own: at a joint step each stream's own q/k/v/out projections
(``backbones.<stream>.transformer_blocks.<step>.attn``) feed one attention over the concatenated streams.
Freezing a stream therefore means freezing everything under ``backbones.<stream>.``, its projections at
joint steps included. What stays trainable in stage 1 is the other streams' backbones, whose projections
at joint steps are the trainable half of every joint layer. The frozen stream still shapes the loss: its
output depends on the trainable streams through joint attention, so its loss trains them.

A stage is applied once, before the model is wrapped for data parallelism: DDP fixes the set of
parameters it synchronises when it wraps the model, so a run trains one stage; the next stage is a new run
that starts from the previous run's export (``model: {pretrained: ...}``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Stage:
    """A training stage: its name and the streams whose backbone parameters stay frozen."""

    name: str
    frozen: tuple[str, ...] = ()
    description: str = ""


def apply_stage(model: nn.Module, stage: Stage) -> dict[str, list[str]]:
    """Freeze the backbones of ``stage.frozen`` and unfreeze every other parameter of ``model``.

    Returns the parameter names by status (``{"trainable": [...], "frozen": [...]}``) so a run can log
    exactly what it trains. Raises ``ValueError`` naming the stage when it freezes an unknown stream or
    leaves nothing to train.
    """
    streams = list(getattr(model, "stream_names", []))
    unknown = sorted(set(stage.frozen) - set(streams))
    if unknown:
        raise ValueError(
            f"stage {stage.name!r} freezes unknown stream(s) {unknown}; this model has streams {streams}"
        )
    prefixes = tuple(f"backbones.{name}." for name in stage.frozen)
    status = {"trainable": [], "frozen": []}
    for name, parameter in model.named_parameters():
        frozen = name.startswith(prefixes)
        parameter.requires_grad_(not frozen)
        status["frozen" if frozen else "trainable"].append(name)
    if not status["trainable"]:
        raise ValueError(f"stage {stage.name!r} freezes every parameter (streams {list(stage.frozen)}); nothing to train")
    return status


def trainable_parameters(model: nn.Module) -> Iterable[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs the optimizer and the EMA should see."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]
