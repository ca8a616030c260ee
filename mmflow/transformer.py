"""MMDiT: one backbone per stream, coupled by a joint-attention schedule.

Each stream keeps its own norms, q/k/v/out projections and feed-forward (JAM-Flow appendix C). Layers are
paired by step: layer i of every stream runs at step i (a stream with fewer layers stops earlier). At a
joint step, the q/k/v of all streams present are concatenated and one attention runs over the joint
sequence under the compiled mask policy; at other steps every stream attends to itself alone.

Schedules: ``"half"`` (the earlier half of the pairable steps; the paper's choice), ``"full"``, ``"none"``,
or an explicit list of steps. Per-sample ``joint_view`` switches let a stream's queries ignore the other
streams (used by guidance), without changing the schedule.

Shape letters: ``b`` batch, ``n`` frames of one stream, ``N`` joint tokens, ``h`` heads, ``d`` head width.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from diffusers import ModelMixin  # noqa: F401  (diffusers looks this name up in the component's module)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from torch import nn

from .attention import attend, check_backend_name
from .backbone import protocol_problems
from .buckets import LengthBuckets, model_setting
from .masks import AttentionMask, MaskPolicy, StreamSegment, build_attention_mask
from .plugins import get_registry
from .positions import apply_rotary, rotary_table, stream_positions
from .streams import StreamBatch, StreamSpec, as_fraction, check_batches

logger = logging.getLogger(__name__)

SCHEDULES = ("half", "full", "none")
STREAM_KEYS = {"stream", "frame_rate", "channels", "cond_channels", "position", "backbone", "backbone_config"}
SPEC_KEYS = ("frame_rate", "channels", "cond_channels", "position")


def _ordered_streams(streams: Mapping[str, dict], order: Sequence[str] | None) -> dict[str, dict]:
    """``streams`` in ``order`` (the saved joint-sequence order), or as given when there is none."""
    if order is None:
        return dict(streams)
    if sorted(order) != sorted(streams):
        raise ValueError(f"stream_order {list(order)} must list exactly the configured streams {sorted(streams)}")
    return {name: streams[name] for name in order}


def stream_spec_from_config(name: str, stream: Mapping, registry) -> StreamSpec:
    """The ``StreamSpec`` of one stream config entry.

    An entry naming a registered stream (``{"stream": "motion", ...}``) takes its rate, channels and position
    policy from the registered spec; values it also states must agree with it. Other entries state their own.
    """
    kind = stream.get("stream")
    if kind is None:
        if "channels" not in stream:
            raise ValueError(f"stream {name!r} needs `channels` (or `stream: NAME` naming a registered stream)")
        return StreamSpec(
            name=name,
            frame_rate=stream.get("frame_rate"),
            channels=stream["channels"],
            cond_channels=stream.get("cond_channels", 0),
            position=stream.get("position", "scaled"),
        )
    registered = registry.stream(kind)
    expected = registered.to_config()
    stated = StreamSpec(name=name, **{**expected, **{k: stream[k] for k in SPEC_KEYS if k in stream}}).to_config()
    clashes = [f"{key}: config {stated[key]!r} vs registered {expected[key]!r}" for key in SPEC_KEYS
               if stated[key] != expected[key]]
    if clashes:
        owner = registry.owners.get(("streams", kind), "?")
        raise ValueError(
            f"stream {name!r} names the registered stream {kind!r} (plugin {owner!r}) but contradicts it ("
            + "; ".join(clashes) + "); drop those keys from the config or name another stream"
        )
    return StreamSpec(name=name, **expected)


def resolve_joint_schedule(schedule: str | Sequence[int], depths: Sequence[int]) -> tuple[int, ...]:
    """The steps at which streams attend jointly. Steps need at least two streams with a layer there."""
    pairable = sorted(depths)[-2] if len(depths) > 1 else 0
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"joint_schedule must be one of {SCHEDULES} or a list of layer steps, got {schedule!r}")
        if schedule == "none" or pairable == 0:
            return ()
        return tuple(range(pairable if schedule == "full" else max(1, pairable // 2)))
    steps = tuple(sorted(set(int(step) for step in schedule)))
    bad = [step for step in steps if not 0 <= step < pairable]
    if bad:
        raise ValueError(
            f"joint_schedule steps {bad} are out of range: with depths {list(depths)} only steps 0..{pairable - 1} "
            f"have layers in at least two streams"
        )
    return steps


def _as_per_sample(value, batch_size: int, device, name: str, default: bool) -> torch.Tensor:
    if value is None:
        value = default
    if isinstance(value, bool):
        return torch.full((batch_size,), value, dtype=torch.bool, device=device)
    value = torch.as_tensor(value, device=device)
    if value.shape != (batch_size,):
        raise ValueError(f"{name} must be a bool or a ({batch_size},) bool tensor, got shape {tuple(value.shape)}")
    return value.bool()


@dataclass
class ForwardPlan:
    """The step-invariant part of a forward pass over one set of batches: per-sample switches, rotary tables,
    padding, compiled attention masks and each backbone's prepared features. A sampler builds it once
    (``MMDiT.plan``) and reuses it at every step; a plain ``forward`` builds its own."""

    drops: dict[str, torch.Tensor]
    views: dict[str, torch.Tensor]
    tables: dict[str, tuple[torch.Tensor, torch.Tensor]]
    padding: dict[str, torch.Tensor | None]
    alone_masks: dict[str, AttentionMask]
    joint_masks: dict[tuple[str, ...], AttentionMask]
    prepared: dict[str, object] = field(default_factory=dict)
    active: tuple[str, ...] = ()


class MMDiT(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Multi-stream diffusion transformer with joint attention.

    LoRA adapters attach through peft as on diffusers' own transformers (``PeftAdapterMixin``: ``add_adapter``,
    ``set_adapters``, ``fuse_lora``, ...; pipelines load them with ``mmflow.lora_loading``).

    Args:
        streams: Per stream name: ``frame_rate`` (e.g. ``"375/4"``), ``channels``, ``cond_channels``,
            ``position`` (``index``/``scaled``/``seconds``), ``backbone`` (a registered backbone name) and
            ``backbone_config`` (its constructor arguments). Order matters: it is the joint sequence order.
        joint_schedule: ``"half"``, ``"full"``, ``"none"`` or a list of steps.
        mask_policy: A ``MaskPolicy`` config (``{"default": ..., "rules": [...]}``) or ``{"preset": name,
            **kwargs}`` for a registered preset; None lets every token see every token.
        attention_backend: ``"auto"``, ``"sdpa"``, ``"sdpa_masked"``, ``"flex"`` or ``"split"`` (``mmflow.attention``).
        mask_padding: Hide padding keys in attention (needed for batch results to equal one-by-one results).
        position_reference_rate: Reference rate of the ``seconds`` position policy (default: fastest stream).
        length_buckets: Pad attention to bucket lengths (``mmflow.buckets``): ``"time_aligned"``, a
            ``LengthBuckets.to_config()`` mapping, or None (off).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True  # enable_gradient_checkpointing(): each layer step is recomputed

    @register_to_config
    def __init__(
        self,
        streams: dict,
        joint_schedule: str | list[int] = "half",
        mask_policy: dict | None = None,
        attention_backend: str = "auto",
        mask_padding: bool = True,
        position_reference_rate: str | float | None = None,
        stream_order: list[str] | None = None,
        length_buckets: dict | str | None = None,
    ):
        super().__init__()
        self.gradient_checkpointing = False
        if not streams:
            raise ValueError("an MMDiT needs at least one stream in `streams`")
        streams = _ordered_streams(streams, stream_order)
        # diffusers writes configs with sorted keys: the joint-sequence order is kept in its own entry
        self.register_to_config(stream_order=list(streams))
        registry = get_registry()
        self.specs: dict[str, StreamSpec] = {}
        self.stream_kinds: dict[str, str] = {}
        backbones = {}
        for name, stream in streams.items():
            unknown = sorted(set(stream) - STREAM_KEYS)
            if unknown:
                raise ValueError(f"stream {name!r} config has unknown keys {unknown}; allowed: {sorted(STREAM_KEYS)}")
            spec = stream_spec_from_config(name, stream, registry)
            self.specs[name] = spec
            self.stream_kinds[name] = stream.get("stream", name)
            cls = registry.backbone(stream.get("backbone", "dit"))
            try:
                backbones[name] = cls(
                    channels=spec.channels, cond_channels=spec.cond_channels, **stream.get("backbone_config", {})
                )
            except TypeError as error:
                raise ValueError(f"bad backbone_config for stream {name!r} ({cls.__name__}): {error}") from error
            missing = protocol_problems(backbones[name])
            if missing:
                raise TypeError(f"backbone {cls.__name__} of stream {name!r} lacks {missing} of "
                                f"mmflow.backbone.BackboneProtocol (docs/plugins.md)")
        self.backbones = nn.ModuleDict(backbones)
        self.stream_names = list(self.specs)
        depths = [backbone.depth for backbone in self.backbones.values()]
        self.num_steps = max(depths)
        self.joint_steps = resolve_joint_schedule(joint_schedule, depths)
        if self.joint_steps:
            layouts = {name: (b.heads, b.dim_head) for name, b in self.backbones.items()}
            if len(set(layouts.values())) > 1:
                raise ValueError(
                    f"streams attending jointly must share heads and head width; got (heads, dim_head) = {layouts}"
                )
        self.mask_policy = self._resolve_policy(mask_policy, registry)
        self.mask_policy.validate(self.stream_names)
        self.attention_backend = check_backend_name(attention_backend)
        self.length_buckets = length_buckets  # resolved against the streams' rates and kept in the config
        self.reference_rate = (
            as_fraction(position_reference_rate, "position_reference_rate") if position_reference_rate else None
        )

    @staticmethod
    def _resolve_policy(config, registry) -> MaskPolicy:
        if config is not None and "preset" in config:
            kwargs = {k: v for k, v in config.items() if k != "preset"}
            try:
                return registry.mask_preset(config["preset"])(**kwargs)
            except TypeError as error:
                raise ValueError(f"bad arguments {kwargs} for mask preset {config['preset']!r}: {error}") from error
        return MaskPolicy.from_config(config)

    # ---------------------------------------------------------------------------------------------- helpers

    def _per_stream(self, value, batch_size, device, what, default) -> dict[str, torch.Tensor]:
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(self.specs))
            if unknown:
                raise KeyError(f"{what} names unknown stream(s) {unknown}; streams are {self.stream_names}")
            return {n: _as_per_sample(value.get(n), batch_size, device, f"{what}[{n!r}]", default) for n in self.specs}
        return {n: _as_per_sample(value, batch_size, device, what, default) for n in self.specs}

    def _segments(self, names, batches) -> list[StreamSegment]:
        segments, offset = [], 0
        for name in names:
            length = batches[name].num_frames
            segments.append(StreamSegment(name, self.specs[name].frame_rate, offset, length))
            offset += length
        return segments

    def _masks(self, batches, joint_view, active) -> tuple[dict, dict]:
        """Compile the attention masks of this forward pass once: per stream, and per set of joint streams."""
        alone = {}
        for name in active:
            valid = batches[name].valid if self.config.mask_padding else None
            alone[name] = build_attention_mask(MaskPolicy(), self._segments([name], batches), key_valid=valid)
        joint = {}
        for step in self.joint_steps:
            names = tuple(n for n in active if self.backbones[n].depth > step)
            if len(names) < 2 or names in joint:
                continue
            valid = torch.cat([batches[n].valid for n in names], dim=1) if self.config.mask_padding else None
            view = torch.stack([joint_view[n] for n in names], dim=1)
            joint[names] = build_attention_mask(self.mask_policy, self._segments(names, batches), valid, view)
        return alone, joint

    @property
    def length_buckets(self) -> LengthBuckets | None:
        """The ladder attention pads to (None: off). Setting it (a ``LengthBuckets``, its JSON form, ``"off"``
        or None) also sets the config entry, so ``save_pretrained`` keeps it."""
        return self._length_buckets

    @length_buckets.setter
    def length_buckets(self, value) -> None:
        self._length_buckets, saved = model_setting(value, self.stream_rates)
        self.register_to_config(length_buckets=saved)

    def _attend(self, q, k, v, mask: AttentionMask):
        return attend(q, k, v, mask, self.attention_backend, self.length_buckets)

    # ---------------------------------------------------------------------------------------------- forward

    @torch.no_grad()
    def plan(
        self,
        batches: Mapping[str, StreamBatch],
        drop: Mapping[str, torch.Tensor | bool] | torch.Tensor | bool | None = None,
        joint_view: Mapping[str, torch.Tensor | bool] | torch.Tensor | bool | None = None,
        absent: Sequence[str] = (),
    ) -> ForwardPlan:
        """Everything of a forward pass that does not change between sampling steps (see ``ForwardPlan``)."""
        return self._plan(batches, drop, joint_view, absent)

    def _plan(self, batches, drop, joint_view, absent=()) -> ForwardPlan:
        check_batches(self.specs, batches)
        unknown = sorted(set(absent) - set(self.specs))
        if unknown:
            raise KeyError(f"absent names unknown stream(s) {unknown}; streams are {self.stream_names}")
        active = tuple(n for n in self.stream_names if n not in absent)
        if not active:
            raise ValueError("every stream is absent; at least one must be computed")
        first = batches[self.stream_names[0]]
        b, device = first.batch_size, first.latent.device
        drops = self._per_stream(drop, b, device, "drop", False)
        views = self._per_stream(joint_view, b, device, "joint_view", True)
        positions = stream_positions(
            self.specs,
            {n: batches[n].lengths for n in self.stream_names},
            {n: batches[n].num_frames for n in self.stream_names},
            self.reference_rate,
        )
        tables = {}
        for name in self.stream_names:
            pos = positions[name]
            if pos.shape[0] > 1 and bool((pos == pos[:1]).all()):
                pos = pos[:1]  # every sample has the same positions: one table for all
            tables[name] = rotary_table(self.backbones[name].rotary_embed(pos))
        # None when nothing is padded, so the blocks skip masking (checked once here, not in every layer)
        padding = {n: None if bool(batches[n].valid.all()) else batches[n].valid for n in self.stream_names}
        alone_masks, joint_masks = self._masks(batches, views, active)
        prepared = {n: self.backbones[n].prepare(batches[n], drops[n]) for n in active}
        return ForwardPlan(drops, views, tables, padding, alone_masks, joint_masks, prepared, active)

    def forward(
        self,
        x_t: Mapping[str, torch.Tensor],
        t: torch.Tensor | float | Mapping[str, torch.Tensor],
        batches: Mapping[str, StreamBatch],
        drop: Mapping[str, torch.Tensor | bool] | torch.Tensor | bool | None = None,
        joint_view: Mapping[str, torch.Tensor | bool] | torch.Tensor | bool | None = None,
        plan: ForwardPlan | None = None,
        absent: Sequence[str] = (),
    ) -> dict[str, torch.Tensor]:
        """Velocity of every stream.

        Args:
            x_t: Noisy latents ``(b, n, c)`` per stream.
            t: Flow time ``(b,)`` (or a float, or one per stream).
            batches: ``StreamBatch`` per stream (context, masks, conditions).
            drop: Per stream, per sample: hide that stream's conditions (classifier-free guidance).
            joint_view: Per stream, per sample: False makes the stream's queries ignore the other streams.
            plan: A ``ForwardPlan`` from ``plan(batches, drop, joint_view, absent)`` (then ``drop``,
                ``joint_view`` and ``absent`` are taken from it); built here when None.
            absent: Streams left out of the computation (a task that does not involve them): no other stream
                attends to them and their velocity is zero. Their lengths still set the other streams' positions.
        """
        if plan is None:
            plan = self._plan(batches, drop, joint_view, absent)
        active = plan.active
        first = batches[self.stream_names[0]]
        b, device = first.batch_size, first.latent.device
        times = {}
        for name in active:
            t_n = t[name] if isinstance(t, Mapping) else t
            t_n = torch.as_tensor(t_n, device=device, dtype=x_t[name].dtype)
            times[name] = t_n.expand(b) if t_n.ndim == 0 else t_n

        hidden, conditioning = {}, {}
        for name in active:
            hidden[name], conditioning[name] = self.backbones[name].embed(
                x_t[name], times[name], batches[name], plan.drops[name], prepared=plan.prepared.get(name)
            )
        for step in range(self.num_steps):
            if self.gradient_checkpointing and torch.is_grad_enabled():  # recompute the step in backward
                hidden = self._gradient_checkpointing_func(self._block_step, step, hidden, conditioning, plan, batches)
            else:
                hidden = self._block_step(step, hidden, conditioning, plan, batches)

        return {
            name: self.backbones[name].output(hidden[name], conditioning[name], batches[name]) if name in active
            else torch.zeros_like(x_t[name])
            for name in self.stream_names
        }

    def _block_step(self, step: int, hidden: dict, conditioning: dict, plan: ForwardPlan, batches) -> dict:
        """Layer ``step`` of every stream that has one: jointly at a joint step, each alone otherwise."""
        hidden = dict(hidden)
        present = tuple(n for n in plan.active if self.backbones[n].depth > step)
        inputs = {}
        for name in present:
            backbone = self.backbones[name]
            block = backbone.transformer_blocks[step]
            (q, k, v), modulation = block.attention_inputs(hidden[name], conditioning[name])
            q = apply_rotary(q, plan.tables[name], backbone.rope_heads)
            k = apply_rotary(k, plan.tables[name], backbone.rope_heads)
            inputs[name] = (q, k, v, modulation)
        if step in self.joint_steps and len(present) > 1:
            q, k, v = (torch.cat([inputs[n][i] for n in present], dim=2) for i in range(3))
            attended = self._attend(q, k, v, plan.joint_masks[present])
            sizes = [batches[n].num_frames for n in present]
            outputs = dict(zip(present, attended.split(sizes, dim=2), strict=True))
        else:
            outputs = {n: self._attend(*inputs[n][:3], plan.alone_masks[n]) for n in present}
        for name in present:
            block = self.backbones[name].transformer_blocks[step]
            hidden[name] = block.finish(hidden[name], outputs[name], inputs[name][3], plan.padding[name])
        return hidden

    # ---------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """diffusers loading, made strict: missing, unexpected or mismatched weights raise instead of warning."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = {key: info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        problems = {key: value for key, value in problems.items() if value}
        if problems:
            raise ValueError(
                f"checkpoint at {pretrained_model_name_or_path} does not match its config: "
                + "; ".join(f"{key}: {list(value)[:10]}" for key, value in problems.items())
                + ". Was it saved by another model or edited by hand?"
                + (" It was saved with LoRA adapters attached: bake them in first (fuse_lora(), then unload_lora()), or "
                   "save only the adapters (save_lora_adapter) and load them onto the base model"
                   if any(".lora_" in key or ".base_layer." in key for key in problems.get("unexpected_keys", ())) else "")
            )
        return (model, info) if want_info else model

    def stream_spec(self, name: str) -> StreamSpec:
        if name not in self.specs:
            raise KeyError(f"unknown stream {name!r}; this model has streams {self.stream_names}")
        return self.specs[name]

    @property
    def stream_rates(self) -> dict[str, Fraction]:
        return {name: spec.frame_rate for name, spec in self.specs.items()}
