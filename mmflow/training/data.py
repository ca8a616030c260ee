"""From a ``datasets.Dataset`` of per-stream arrays to padded multi-stream batches, grouped by duration.

A row holds, per stream, a time-major latent ``(T, C)`` (stored as ``Array2D(shape=(None, C))``, the only
variable-length array layout ``datasets`` supports), optionally a per-frame condition ``(T, K)`` and extras
(token ids, speaker vectors...). ``MultiStreamCollator`` pads them into one ``StreamBatch`` per stream;
``LengthBucketSampler`` forms batches of similar durations so little of each batch is padding.

Distributed runs: the sampler yields the *global* list of batches of an epoch, the same on every rank (it
is seeded, not random), with a batch count that is a multiple of the number of processes. Accelerate's
``prepare`` deals batch i to rank ``i % processes``; outside Accelerate, ``rank=`` makes the sampler deal its
own share. Resuming: ``set_epoch`` picks the epoch's order and the trainer skips the batches already used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Sampler

from ..streams import StreamBatch, StreamSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamColumns:
    """The dataset columns of one stream: its latent ``(T, C)``, its condition ``(T, K)`` and its extras."""

    latent: str
    cond: str | None = None
    extras: dict[str, str] = field(default_factory=dict)


def resolve_columns(
    specs: Mapping[str, StreamSpec], column_names: Sequence[str], overrides: Mapping[str, Mapping] | None = None
) -> dict[str, StreamColumns]:
    """Each stream's columns: the stream's name for the latent, ``<stream>_cond`` for the condition (when the
    stream takes one), unless ``overrides[stream]`` says otherwise. Raises naming any column that is missing."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise ValueError(f"data.columns names unknown stream(s) {unknown}; the model has streams {sorted(specs)}")
    resolved = {}
    for name, spec in specs.items():
        given = dict(overrides.get(name, {}))
        bad = sorted(set(given) - {"latent", "cond", "extras"})
        if bad:
            raise ValueError(f"data.columns.{name} has unknown key(s) {bad}; allowed: ['cond', 'extras', 'latent']")
        default_cond = f"{name}_cond" if spec.cond_channels else None
        columns = StreamColumns(given.get("latent", name), given.get("cond", default_cond), dict(given.get("extras", {})))
        needed = [columns.latent, *([columns.cond] if columns.cond else []), *columns.extras.values()]
        missing = [c for c in needed if c not in column_names]
        if missing:
            raise ValueError(
                f"stream {name!r} needs dataset column(s) {missing}, but the dataset has {sorted(column_names)}; "
                f"rename the columns or map them in data.columns.{name}"
            )
        if spec.cond_channels and not columns.cond:
            raise ValueError(f"stream {name!r} takes a {spec.cond_channels}-channel condition; set data.columns.{name}.cond")
        resolved[name] = columns
    return resolved


def row_frames(dataset, column: str) -> np.ndarray:
    """Frames of every row's time-major array in ``column``, read from the Arrow lengths (no decoding)."""
    import pyarrow.compute as pc  # here, not at the top: `mmflow generate` lists `train` but needs no Arrow

    array = dataset.data.column(column).combine_chunks()
    storage = getattr(array, "storage", array)  # Array2D is an extension type over nested lists
    lengths = pc.list_value_length(storage).to_numpy(zero_copy_only=False)
    if dataset._indices is not None:  # a selected/shuffled view of the table
        lengths = lengths[dataset._indices.column(0).to_numpy()]
    return lengths.astype(np.int64)


def row_seconds(dataset, columns: Mapping[str, StreamColumns], specs: Mapping[str, StreamSpec]) -> np.ndarray:
    """Duration of every row in seconds, from the first stream's frame count and rate."""
    name = next(iter(specs))
    return row_frames(dataset, columns[name].latent) / float(specs[name].frame_rate)


def _pad(arrays: list[torch.Tensor], value: float | int = 0) -> torch.Tensor:
    """Stack ``(T_i, ...)`` tensors into ``(b, max T, ...)``, padding after each with ``value``."""
    longest = max(a.shape[0] for a in arrays)
    out = arrays[0].new_full((len(arrays), longest, *arrays[0].shape[1:]), value)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


class MultiStreamCollator:
    """``collate_fn``: rows → ``{stream: StreamBatch}`` with nothing given (the objective draws the context).

    Latents and conditions are zero-padded after each sample's last frame and ``valid`` marks real frames.
    Extras that vary in length (token ids) are padded with ``pad_id`` (F5-TTS's text filler is -1); extras of
    one shape are stacked.

    Args:
        specs: The model's stream specs.
        columns: Each stream's columns (``resolve_columns``).
        pad_id: Fill value for integer extras of different lengths.
    """

    def __init__(self, specs: Mapping[str, StreamSpec], columns: Mapping[str, StreamColumns], pad_id: int = -1):
        self.specs, self.columns, self.pad_id = dict(specs), dict(columns), pad_id

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, StreamBatch]:
        out = {}
        for name, spec in self.specs.items():
            cols = self.columns[name]
            latents = [torch.as_tensor(row[cols.latent], dtype=torch.float32) for row in rows]
            for i, latent in enumerate(latents):
                if latent.ndim != 2 or latent.shape[1] != spec.channels:
                    raise ValueError(
                        f"row {i} of the batch: column {cols.latent!r} of stream {name!r} has shape "
                        f"{tuple(latent.shape)}; expected time-major (frames, {spec.channels})"
                    )
            cond = None
            if cols.cond:
                cond = _pad([torch.as_tensor(row[cols.cond], dtype=torch.float32) for row in rows])
            extras = {}
            for key, column in cols.extras.items():
                values = [torch.as_tensor(row[column]) for row in rows]
                if len({tuple(v.shape) for v in values}) == 1:
                    extras[key] = torch.stack(values)
                else:
                    extras[key] = _pad(values, self.pad_id if not values[0].is_floating_point() else 0.0)
            lengths = [latent.shape[0] for latent in latents]
            out[name] = StreamBatch.from_lengths(_pad(latents), lengths, cond=cond, extras=extras)
        return out


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` rows of similar duration, in a seeded order that changes every epoch.

    Each epoch: shuffle the rows, cut them into pools of ``bucket_batches × batch_size``, sort each pool by
    duration, cut it into batches, shuffle the batches. Every batch is full (the rows left over by an epoch
    are dropped, a different few each epoch) and the batch count is a multiple of ``num_replicas``, so
    every rank gets the same number of batches.

    Args:
        lengths: Duration (or frames) of every row.
        batch_size: Rows per batch (per rank).
        num_replicas: Number of ranks the batches are dealt to.
        rank: With None, yield every batch (Accelerate deals them to ranks); with a rank, only its share.
        seed: Base seed; the epoch is added to it.
        bucket_batches: Batches per sorted pool (1: no bucketing).
        shuffle: Off: rows in dataset order, no sorting (debugging).
    """

    drop_last = True  # read by Accelerate: never pad a short final batch

    def __init__(
        self,
        lengths: Sequence[float],
        batch_size: int,
        num_replicas: int = 1,
        rank: int | None = None,
        seed: int = 0,
        bucket_batches: int = 32,
        shuffle: bool = True,
    ):
        if batch_size < 1 or num_replicas < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size, num_replicas and bucket_batches must be >= 1, got "
                             f"{batch_size}, {num_replicas}, {bucket_batches}")
        if rank is not None and not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size, self.num_replicas, self.rank = batch_size, num_replicas, rank
        self.seed, self.bucket_batches, self.shuffle = seed, bucket_batches, shuffle
        self.epoch = 0
        if self.num_global_batches == 0:
            raise ValueError(
                f"{len(self.lengths)} rows cannot fill one batch of {batch_size} on each of {num_replicas} "
                f"process(es); lower batch_size or add data"
            )

    @property
    def num_global_batches(self) -> int:
        per_epoch = len(self.lengths) // self.batch_size
        return per_epoch - per_epoch % self.num_replicas

    def __len__(self) -> int:
        return self.num_global_batches if self.rank is None else self.num_global_batches // self.num_replicas

    def set_epoch(self, epoch: int):
        """Select the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches for all ranks, in order."""
        if not self.shuffle:
            order = np.arange(len(self.lengths))
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            return [b.tolist() for b in batches[: self.num_global_batches]]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        pool = self.bucket_batches * self.batch_size
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        full = [full[i] for i in rng.permutation(len(full))]
        return [b.tolist() for b in full[: self.num_global_batches]]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        if self.rank is not None:
            batches = batches[self.rank :: self.num_replicas]
        return iter(batches)
