"""The JAM-Flow recipe's own YAML sections, checked up front: ``jamflow`` (how to build a new model) and
``pipeline`` (what the exported pipeline needs besides the weights).

An unknown key or a bad value is an error naming it before any data is built or any step is trained; a scheduler
the export could not build fails here, not after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmflow import FlowMatchingScheduler
from mmflow.training.config import ConfigError, from_mapping
from mmflow.validation import WINDOW, InputRangeError

TOKENIZER_KINDS = ("phonemes", "f5")


@dataclass
class JamflowSection:
    """``jamflow:``. ``audio``: an F5-TTS architecture name or its DiT arguments (``text_conditioning: aligned``
    for phoneme-aligned text); the rest: ``mmflow_jamflow.model.jamflow_config``."""

    audio: Any = "F5TTS_v1_Base"
    motion_dim: int = 512
    motion_ff_mult: float = 2
    window_seconds: str = "0.25"
    joint_schedule: Any = "half"
    mask_padding: bool = True

    def __post_init__(self):
        if not isinstance(self.audio, str | dict):
            raise ConfigError(f"jamflow.audio: an F5-TTS architecture name or a mapping of its arguments, got "
                              f"{self.audio!r}")
        if not isinstance(self.joint_schedule, str | list):
            raise ConfigError(f"jamflow.joint_schedule: 'half', 'full', 'none' or a list of layer steps, got "
                              f"{self.joint_schedule!r}")

    def options(self) -> dict:
        """The keyword arguments of ``jamflow_model_config`` besides ``audio``."""
        return {"motion_dim": self.motion_dim, "motion_ff_mult": self.motion_ff_mult,
                "window_seconds": self.window_seconds, "joint_schedule": self.joint_schedule,
                "mask_padding": self.mask_padding}


@dataclass
class PipelineSection:
    """``pipeline:``. ``tokenizer``: ``{kind: phonemes, voice, rate, pitch}`` or ``{kind: f5, vocab, mode}``;
    ``normalizer``: ``pilot`` or a saved ``MotionNormalizer`` folder; ``scheduler``: ``FlowMatchingScheduler``
    arguments; ``max_seconds``: the longest window the model samples at once."""

    tokenizer: dict = field(default_factory=lambda: {"kind": "phonemes"})
    normalizer: str = "pilot"
    scheduler: dict = field(default_factory=dict)
    max_seconds: float = 30.0

    def __post_init__(self):
        kind = self.tokenizer.get("kind", "phonemes")
        if kind not in TOKENIZER_KINDS:
            raise ConfigError(f"pipeline.tokenizer.kind: one of {TOKENIZER_KINDS}, got {kind!r}")
        try:
            FlowMatchingScheduler(**self.scheduler)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"pipeline.scheduler: {error}") from None
        try:
            WINDOW.check("pipeline.max_seconds", self.max_seconds)
        except InputRangeError as error:
            raise ConfigError(str(error)) from None


def read_sections(raw: dict) -> tuple[JamflowSection | None, PipelineSection]:
    """Pop and check the recipe's sections from a loaded YAML mapping (the rest is a ``TrainingConfig``)."""
    jamflow = raw.pop("jamflow", None)
    pipeline = raw.pop("pipeline", None) or {}
    return (None if jamflow is None else from_mapping(JamflowSection, jamflow, "jamflow"),
            from_mapping(PipelineSection, pipeline, "pipeline"))
