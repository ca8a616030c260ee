"""The training configuration: one YAML file, loaded into dataclasses and checked before any heavy work.

Unknown keys are errors (a typo must not silently fall back to a default), and so are values that cannot
work (a learning rate <= 0, a warm-up longer than the run, a stage that is not defined). Every error names
the key by its dotted path, the bad value and what is allowed.

A minimal file::

    model: {config: {...MMDiT constructor arguments...}}    # or {pretrained: path/to/saved/model}
    data: {source: "mmflow_toy_gesture.dataset:build_dataset"}
    total_steps: 1000
    output_dir: outputs/run
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MIXED_PRECISION = ("no", "bf16", "fp16")  # fp16 scales the loss (Accelerate's GradScaler); both are GPU-only
SCHEDULES = ("constant", "linear", "cosine")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive", "swanlab", "trackio")


class ConfigError(ValueError):
    """A training configuration key is unknown or its value cannot work."""


def _check(condition: bool, path: str, message: str):
    if not condition:
        raise ConfigError(f"{path}: {message}")


@dataclass
class ModelConfig:
    """What to train: a new MMDiT from ``config`` (its constructor arguments), or a saved one to fine-tune.

    Args:
        config: ``MMDiT`` constructor arguments (``streams``, ``joint_schedule``, ``mask_policy``...).
        pretrained: A folder written by ``MMDiT.save_pretrained`` (a previous run's ``model/`` export).
        length_buckets: The model's length bucketing (``mmflow.buckets``: ``time_aligned``, ``off`` or a
            ladder mapping), set on the new or saved model and exported with it; unset keeps the model's own.
    """

    config: dict | None = None
    pretrained: str | None = None
    length_buckets: Any = None

    def validate(self, path: str):
        _check((self.config is None) != (self.pretrained is None), path,
               "give exactly one of `config` (a new model's MMDiT arguments) or `pretrained` (a saved model folder)")
        _check_length_buckets(self, path)
        if self.pretrained is not None:
            _check(Path(self.pretrained, "config.json").is_file(), f"{path}.pretrained",
                   f"{self.pretrained!r} has no config.json; point it at a folder written by save_pretrained")


def _check_length_buckets(model: ModelConfig, path: str):
    """``length_buckets`` checked before anything is built (its stream names once the model is)."""
    from ..buckets import check_config

    stated = {f"{path}.length_buckets": model.length_buckets}
    if model.config is not None and "length_buckets" in model.config:
        stated[f"{path}.config.length_buckets"] = model.config["length_buckets"]
        _check(model.length_buckets is None, path, "give length_buckets once: in `config` or beside it, not both")
    for where, value in stated.items():
        try:
            check_config(value, where)
        except ValueError as error:
            raise ConfigError(str(error)) from None


@dataclass
class DataConfig:
    """Where the rows come from and how they are batched.

    Args:
        source: ``"module:function"`` returning a ``datasets.Dataset`` (called with ``kwargs``).
        path: A dataset folder written by ``Dataset.save_to_disk`` (instead of ``source``).
        kwargs: Keyword arguments for ``source``.
        columns: Per stream, ``{latent: col, cond: col, extras: {name: col}}``; default: the stream's name
            for the latent and ``<stream>_cond`` for the condition when such a column exists.
        bucket_batches: Batches formed together from one sorted pool; larger groups closer durations,
            smaller keeps batches more random (1 turns bucketing off).
        shuffle: Shuffle rows every epoch (off: batches in dataset order, for debugging).
        num_workers: DataLoader worker processes.
        streaming: Read the rows as a ``datasets.IterableDataset`` (``mmflow.training.streaming``): a saved folder
            through ``to_iterable_dataset``, or a ``source`` that returns ``load_dataset(..., streaming=True)``.
        shuffle_buffer: Rows in the streamed shuffle buffer (with ``shuffle``).
    """

    source: str | None = None
    path: str | None = None
    kwargs: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)
    bucket_batches: int = 32
    shuffle: bool = True
    num_workers: int = 0
    streaming: bool = False
    shuffle_buffer: int = 1000

    def validate(self, path: str):
        _check((self.source is None) != (self.path is None), path,
               "give exactly one of `source` ('module:function' building a datasets.Dataset) or `path` "
               "(a folder written by Dataset.save_to_disk)")
        if self.source is not None:
            _check(":" in self.source, f"{path}.source", f"write it as 'module:function', got {self.source!r}")
        if self.path is not None:
            _check(Path(self.path).is_dir(), f"{path}.path", f"{self.path!r} is not a folder")
        _check(self.bucket_batches >= 1, f"{path}.bucket_batches", f"must be >= 1, got {self.bucket_batches}")
        _check(self.num_workers >= 0, f"{path}.num_workers", f"must be >= 0, got {self.num_workers}")
        _check(self.shuffle_buffer >= 1, f"{path}.shuffle_buffer", f"must be >= 1, got {self.shuffle_buffer}")


@dataclass
class OptimizerConfig:
    """AdamW settings."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8

    def validate(self, path: str):
        _check(self.lr > 0, f"{path}.lr", f"must be > 0, got {self.lr}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{path}.betas",
               f"must be two numbers in [0, 1), got {list(self.betas)}")
        _check(self.weight_decay >= 0, f"{path}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.eps > 0, f"{path}.eps", f"must be > 0, got {self.eps}")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warm-up over ``warmup_steps`` optimizer steps, then ``name``."""

    name: str = "cosine"
    warmup_steps: int = 0

    def validate(self, path: str):
        _check(self.name in SCHEDULES, f"{path}.name", f"must be one of {SCHEDULES}, got {self.name!r}")
        _check(self.warmup_steps >= 0, f"{path}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable weights, updated every ``update_every`` optimizer steps."""

    decay: float = 0.999
    update_every: int = 1

    def validate(self, path: str):
        _check(0 < self.decay < 1, f"{path}.decay", f"must be in (0, 1), got {self.decay}")
        _check(self.update_every >= 1, f"{path}.update_every", f"must be >= 1, got {self.update_every}")


@dataclass
class ObjectiveConfig:
    """The inpainting flow-matching objective.

    Args:
        span_fraction: ``[low, high]``: per sample and stream, a random span covering this fraction of the
            valid frames is generated; the rest is given as context. A pair for every stream, or
            ``{stream: [low, high]}``.
        given_whole: ``{stream: p}``: probability that a sample's stream is given entirely (the model then
            learns to generate the other streams from it, e.g. gesture from signal).
        condition_dropout: ``{stream: p}``: probability that a sample's conditions of that stream are hidden
            (classifier-free guidance training).
        stream_weights: ``{stream: w}``: loss weight per stream (default 1).
    """

    span_fraction: Any = (0.7, 1.0)
    given_whole: dict = field(default_factory=dict)
    condition_dropout: dict = field(default_factory=dict)
    stream_weights: dict = field(default_factory=dict)

    def validate(self, path: str):
        fractions = self.span_fraction if isinstance(self.span_fraction, dict) else {"*": self.span_fraction}
        for name, pair in fractions.items():
            where = f"{path}.span_fraction" + ("" if name == "*" else f".{name}")
            _check(isinstance(pair, (list, tuple)) and len(pair) == 2 and 0 < pair[0] <= pair[1] <= 1, where,
                   f"must be [low, high] with 0 < low <= high <= 1, got {pair!r}")
        for key in ("given_whole", "condition_dropout"):
            for name, p in getattr(self, key).items():
                _check(0 <= p <= 1, f"{path}.{key}.{name}", f"must be a probability in [0, 1], got {p}")
        for name, w in self.stream_weights.items():
            _check(w >= 0, f"{path}.stream_weights.{name}", f"must be >= 0, got {w}")

    def span_for(self, stream: str) -> tuple[float, float]:
        if isinstance(self.span_fraction, dict):
            return tuple(self.span_fraction.get(stream, (0.7, 1.0)))
        return tuple(self.span_fraction)

    def stream_names(self) -> set[str]:
        """Every stream this section names (checked against the model's streams once it is built)."""
        names = set(self.given_whole) | set(self.condition_dropout) | set(self.stream_weights)
        return names | (set(self.span_fraction) if isinstance(self.span_fraction, dict) else set())


@dataclass
class CheckpointConfig:
    """Resumable checkpoints every ``every`` optimizer steps and at the end (0: none); the last
    ``keep_last`` are kept."""

    every: int = 1000
    keep_last: int = 2

    def validate(self, path: str):
        _check(self.every >= 0, f"{path}.every", f"must be >= 0 (0 turns checkpoints off), got {self.every}")
        _check(self.keep_last >= 1, f"{path}.keep_last", f"must be >= 1, got {self.keep_last}")


@dataclass
class SamplingConfig:
    """Periodic samples from the EMA weights on the first ``batch_size`` rows (0 ``every``: never)."""

    every: int = 0
    steps: int = 16
    batch_size: int = 4

    def validate(self, path: str):
        _check(self.every >= 0, f"{path}.every", f"must be >= 0 (0 turns sampling off), got {self.every}")
        _check(self.steps >= 1, f"{path}.steps", f"must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"{path}.batch_size", f"must be >= 1, got {self.batch_size}")


LORA_EXPORTS = ("merged", "adapter", "both")


@dataclass
class LoRAConfig:
    """LoRA fine-tuning (``mmflow.training.lora``): rank 0 trains the weights themselves.

    Args:
        rank: Rank r of the update (0: off).
        alpha: Scale numerator: the update is ``alpha / r · B A``.
        targets: Names (or name suffixes) of the linear layers to adapt.
        dropout: Dropout on the LoRA branch's input.
        export: ``merged`` (the model folder has the update merged in), ``adapter`` (the model folder keeps the
            base weights and ``lora/pytorch_lora_weights.safetensors`` the adapter, for ``load_lora_weights``)
            or ``both`` (merged model and adapter).
    """

    rank: int = 0
    alpha: float = 16.0
    targets: list = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    dropout: float = 0.0
    export: str = "merged"

    def validate(self, path: str):
        _check(self.rank >= 0, f"{path}.rank", f"must be >= 0 (0 turns LoRA off), got {self.rank}")
        _check(self.alpha > 0, f"{path}.alpha", f"must be > 0, got {self.alpha}")
        _check(bool(self.targets), f"{path}.targets", "name at least one linear layer, e.g. to_q")
        _check(0 <= self.dropout < 1, f"{path}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.export in LORA_EXPORTS, f"{path}.export", f"must be one of {LORA_EXPORTS}, got {self.export!r}")


@dataclass
class StageConfig:
    """One training stage: the streams whose backbones stay frozen (see ``mmflow.training.stages``)."""

    frozen: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class TrainingConfig:
    """Everything one training run needs. ``batch_size`` is per process and per micro-batch: the effective
    batch is ``batch_size × gradient_accumulation × processes``."""

    model: ModelConfig
    data: DataConfig
    total_steps: int
    output_dir: str
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False  # recompute each MMDiT layer step in backward: less memory, more time
    seed: int = 0
    log_every: int = 10
    tracker: str = "none"
    project: str = "mmflow"
    stage: str = "full"
    stages: dict[str, StageConfig] = field(default_factory=lambda: {"full": StageConfig([], "train everything")})

    def __post_init__(self):
        self.validate()

    def validate(self):
        for name in ("model", "data", "optimizer", "schedule", "ema", "objective", "checkpoint", "sampling", "lora"):
            getattr(self, name).validate(name)
        _check(self.total_steps >= 1, "total_steps", f"must be >= 1, got {self.total_steps}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.gradient_accumulation >= 1, "gradient_accumulation",
               f"must be >= 1, got {self.gradient_accumulation}")
        _check(self.max_grad_norm > 0, "max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        _check(self.schedule.warmup_steps <= self.total_steps, "schedule.warmup_steps",
               f"{self.schedule.warmup_steps} warm-up steps do not fit in total_steps={self.total_steps}")
        _check(self.mixed_precision in MIXED_PRECISION, "mixed_precision",
               f"must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _check(self.tracker in TRACKERS, "tracker", f"must be one of {TRACKERS}, got {self.tracker!r}")
        _check(bool(self.stages), "stages", "define at least one stage")
        _check(self.stage in self.stages, "stage", f"unknown stage {self.stage!r}; defined stages: {sorted(self.stages)}")

    @property
    def current_stage(self) -> StageConfig:
        return self.stages[self.stage]

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        return _build(cls, data, "config")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> TrainingConfig:
        """Load a YAML file; ``overrides`` (top-level keys) replace the file's values before validation."""
        path = Path(path)
        data = read_yaml_mapping(path, "training config")
        data.update(overrides or {})
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The top-level mapping of a YAML config file; a missing file, bad YAML or a non-mapping is a ConfigError
    that names ``what`` (e.g. "training config") and the path."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} must be a mapping of keys, got {type(data).__name__}")
    return data


def from_mapping(cls, data, path: str):
    """A config dataclass ``cls`` (nested dataclasses included) from a YAML mapping; unknown keys and wrong types
    raise a ``ConfigError`` naming the key under ``path`` (e.g. ``"pipeline"``). For recipes' own sections."""
    return _build(cls, data, path)


def _build(cls, data, path: str):
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclass fields; unknown keys raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{path}.{name}" if path != "config" else name)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from error


def _convert(hint, value, path: str):
    """Coerce a YAML value to a field's type: nested dataclasses, dicts of them, numbers, tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint, origin = options[0], typing.get_origin(options[0])
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is dict and value is not None:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        _, item = typing.get_args(hint) or (str, Any)
        return {key: _convert(item, v, f"{path}.{key}") for key, v in value.items()}
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        return origin(value)
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if hint is str and isinstance(value, bool):
        return "yes" if value else "no"  # YAML 1.1 reads an unquoted `no` as False
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{path}: expected int, got bool {value!r}")
    return value
