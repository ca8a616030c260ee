"""Modality streams: what a stream is (``StreamSpec``) and what one batch of it holds (``StreamBatch``).

Every length in mmflow follows from a duration in seconds and a stream's frame rate; nothing assumes a fixed
ratio between two streams. Frame rates are exact fractions (93.75 Hz is ``Fraction(375, 4)``) so that
cross-stream arithmetic (which audio frame lies inside which motion frame) is done on integers.

Shape letters: ``b`` batch, ``n`` frames of one stream, ``c`` generated channels, ``k`` condition channels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import torch

POSITION_POLICIES = ("index", "scaled", "seconds")


def as_fraction(value: Fraction | int | float | str, what: str = "frame rate") -> Fraction:
    """Parse a rate or a duration exactly: ``"375/4"``, ``"93.75"``, ``93.75`` and ``Fraction(375, 4)`` agree.

    Floats go through ``str`` so that ``93.75`` and ``0.1`` become the decimal a human wrote, not the binary
    approximation.
    """
    if isinstance(value, Fraction):
        result = value
    elif isinstance(value, bool):
        raise TypeError(f"{what} must be a number or a string like '375/4', got {value!r}")
    elif isinstance(value, int):
        result = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be finite, got {value!r}")
        result = Fraction(str(value))
    elif isinstance(value, str):
        try:
            result = Fraction(value.strip())
        except (ValueError, ZeroDivisionError) as error:
            raise ValueError(f"{what} {value!r} is not a number; write it like '93.75' or '375/4'") from error
    else:
        raise TypeError(f"{what} must be a number or a string like '375/4', got {type(value).__name__}")
    return result


@dataclass(frozen=True)
class StreamSpec:
    """A modality stream: its name, frame rate, channel layout and rotary-position policy.

    Args:
        name: Stream name, unique in a model (``"audio"``, ``"motion"``, ``"gesture"``).
        frame_rate: Frames per second, exact (``Fraction(375, 4)`` for 24 kHz audio with hop 256).
        channels: Channels the flow generates per frame (100 mel bins, 12 mouth-keypoint coordinates...).
        cond_channels: Channels of the per-frame condition the stream is given (0 when none).
        position: How the stream's frames get rotary positions: ``"index"`` (0, 1, 2...), ``"scaled"``
            (p / L · L_ref, the JAM-Flow rule) or ``"seconds"`` (time × a reference rate).
    """

    name: str
    frame_rate: Fraction
    channels: int
    cond_channels: int = 0
    position: str = "scaled"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"stream name must be an identifier like 'audio', got {self.name!r}")
        rate = as_fraction(self.frame_rate, f"frame rate of stream {self.name!r}")
        if rate <= 0:
            raise ValueError(f"frame rate of stream {self.name!r} must be positive, got {rate}")
        object.__setattr__(self, "frame_rate", rate)
        if int(self.channels) < 1:
            raise ValueError(f"stream {self.name!r} needs at least one channel, got {self.channels}")
        if int(self.cond_channels) < 0:
            raise ValueError(f"cond_channels of stream {self.name!r} must be >= 0, got {self.cond_channels}")
        if self.position not in POSITION_POLICIES:
            raise ValueError(
                f"position policy of stream {self.name!r} must be one of {POSITION_POLICIES}, got {self.position!r}"
            )

    def num_frames(self, seconds: float | Fraction | str) -> int:
        """Frames covering ``seconds`` of signal, rounded to the nearest frame (halves round up)."""
        duration = as_fraction(seconds, "duration")
        if duration < 0:
            raise ValueError(f"duration must be >= 0 seconds, got {duration}")
        return math.floor(duration * self.frame_rate + Fraction(1, 2))

    def seconds(self, frames: int) -> float:
        """Duration of ``frames`` frames in seconds."""
        return float(Fraction(frames) / self.frame_rate)

    def frame_times(self, frames: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Start time of each frame in seconds, shape ``(frames,)``."""
        return torch.arange(frames, device=device, dtype=torch.float64).div(float(self.frame_rate)).float()

    def to_config(self) -> dict:
        """JSON-friendly form (the rate as an exact ``"num/den"`` string)."""
        return {
            "frame_rate": f"{self.frame_rate.numerator}/{self.frame_rate.denominator}",
            "channels": int(self.channels),
            "cond_channels": int(self.cond_channels),
            "position": self.position,
        }


@dataclass
class StreamBatch:
    """One stream's share of a batch. Every tensor has the batch first and frames second.

    Fields:
        latent: ``(b, n, c)`` clean data (training) or the known values of given frames (inference);
            values at generated frames are ignored by the model.
        given: ``(b, n)`` bool, True where a frame is given as context (inpainting condition).
        valid: ``(b, n)`` bool, True for real frames, False for batch padding.
        cond: ``(b, n, k)`` per-frame condition features, or None.
        extras: stream-specific conditioning the stream's backbone understands (e.g. text token ids);
            tensors with the batch first.
    """

    latent: torch.Tensor
    given: torch.Tensor
    valid: torch.Tensor
    cond: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if self.latent.ndim != 3:
            raise ValueError(f"latent must be (batch, frames, channels), got shape {tuple(self.latent.shape)}")
        b, n, _ = self.latent.shape
        for name in ("given", "valid"):
            value = getattr(self, name)
            if value.shape != (b, n):
                raise ValueError(f"{name} must have shape {(b, n)} like the latent, got {tuple(value.shape)}")
            if value.dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor, got {value.dtype}")
        if self.cond is not None and self.cond.shape[:2] != (b, n):
            raise ValueError(f"cond must start with {(b, n)} like the latent, got {tuple(self.cond.shape)}")
        for key, value in self.extras.items():
            if not isinstance(value, torch.Tensor) or value.shape[:1] != (b,):
                raise ValueError(f"extras[{key!r}] must be a tensor with batch size {b} first")

    @classmethod
    def from_lengths(
        cls,
        latent: torch.Tensor,
        lengths: torch.Tensor | list[int] | None = None,
        given: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> StreamBatch:
        """Build a record from per-sample lengths (padding after them); nothing given unless ``given`` says."""
        b, n, _ = latent.shape
        if lengths is None:
            valid = torch.ones(b, n, dtype=torch.bool, device=latent.device)
        else:
            lengths = torch.as_tensor(lengths, device=latent.device)
            if lengths.shape != (b,) or bool((lengths < 1).any()) or bool((lengths > n).any()):
                raise ValueError(f"lengths must be {b} values in [1, {n}], got {lengths.tolist()}")
            valid = torch.arange(n, device=latent.device)[None, :] < lengths[:, None]
        if given is None:
            given = torch.zeros(b, n, dtype=torch.bool, device=latent.device)
        return cls(latent=latent, given=given & valid, valid=valid, cond=cond, extras=dict(extras or {}))

    @property
    def batch_size(self) -> int:
        return self.latent.shape[0]

    @property
    def num_frames(self) -> int:
        return self.latent.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """Valid frames per sample, ``(b,)`` int64."""
        return self.valid.sum(dim=1)

    @property
    def generated(self) -> torch.Tensor:
        """``(b, n)`` bool: the frames the flow must generate (valid and not given)."""
        return self.valid & ~self.given

    def context(self) -> torch.Tensor:
        """The inpainting context: the latent at given frames, zero elsewhere. ``(b, n, c)``."""
        return self.latent * self.given.unsqueeze(-1).to(self.latent.dtype)

    def frame_times(self, spec: StreamSpec) -> torch.Tensor:
        """Start time of each frame in seconds, ``(b, n)``."""
        return spec.frame_times(self.num_frames, self.latent.device).expand(self.batch_size, -1)

    def _tensors(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def map(self, fn) -> StreamBatch:
        """Apply ``fn`` to every tensor (cond and extras included) and return a new record."""
        out = {}
        for name, value in self._tensors().items():
            if value is None:
                out[name] = None
            elif isinstance(value, dict):
                out[name] = {key: fn(item) for key, item in value.items()}
            else:
                out[name] = fn(value)
        return StreamBatch(**out)

    def to(self, *args, **kwargs) -> StreamBatch:
        """Move every tensor; float tensors take a dtype argument, bool and int tensors keep theirs."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point():
                return t.to(*args, **kwargs)
            device = kwargs.get("device", next((a for a in args if not isinstance(a, torch.dtype)), None))
            return t.to(device) if device is not None else t

        return self.map(move)

    def replace(self, **changes) -> StreamBatch:
        return dataclasses.replace(self, **changes)

    def repeat(self, times: int) -> StreamBatch:
        """Stack ``times`` copies along the batch (used to run cond and uncond passes in one batch)."""
        return self.map(lambda t: torch.cat([t] * times, dim=0))

    def select(self, index: torch.Tensor | slice) -> StreamBatch:
        """Rows of the batch."""
        return self.map(lambda t: t[index])


def check_batches(specs: Mapping[str, StreamSpec], batches: Mapping[str, StreamBatch], tolerance_frames: int = 1):
    """Validate a multi-stream batch against its specs; raise with the stream and the fix on any mismatch.

    Checks names, channel counts, one batch size, and that per-sample durations agree across streams to
    ``tolerance_frames`` frames of the slower stream.
    """
    unknown = sorted(set(batches) - set(specs))
    if unknown:
        raise KeyError(f"unknown stream(s) {unknown}; this model has streams {sorted(specs)}")
    missing = sorted(set(specs) - set(batches))
    if missing:
        raise KeyError(f"missing stream(s) {missing}; pass a StreamBatch for each of {sorted(specs)}")
    sizes = {name: batch.batch_size for name, batch in batches.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"streams disagree on batch size: {sizes}")
    for name, batch in batches.items():
        spec = specs[name]
        if batch.latent.shape[-1] != spec.channels:
            raise ValueError(
                f"stream {name!r} expects {spec.channels} channels, got latent of shape {tuple(batch.latent.shape)}"
            )
        if spec.cond_channels and (batch.cond is None or batch.cond.shape[-1] != spec.cond_channels):
            got = None if batch.cond is None else tuple(batch.cond.shape)
            raise ValueError(f"stream {name!r} expects a (b, n, {spec.cond_channels}) cond, got {got}")
    if len(batches) > 1:
        durations = {
            name: [Fraction(int(n)) / specs[name].frame_rate for n in batch.lengths.tolist()]
            for name, batch in batches.items()
        }
        slowest = min(spec.frame_rate for spec in specs.values())
        limit = Fraction(tolerance_frames) / slowest
        names = list(durations)
        for i in range(len(next(iter(durations.values())))):
            values = {name: durations[name][i] for name in names}
            if max(values.values()) - min(values.values()) > limit:
                pretty = {name: f"{float(v):.3f}s" for name, v in values.items()}
                raise ValueError(
                    f"sample {i}: streams have different durations {pretty} (more than {tolerance_frames} "
                    f"frame(s) of the slowest stream apart); make every stream cover the same time span"
                )
