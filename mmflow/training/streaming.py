"""Streamed training data (``data: {streaming: true}``): rows read as a ``datasets.IterableDataset``, never all
at once, shuffled through a buffer, dealt to processes, grouped by duration in a bucketing buffer.

Why a second path: ``LengthBucketSampler`` needs every row's length and random access, so the whole Arrow table
is opened (memory-mapped) and indexed; a corpus that is read once per epoch from many files, or from
``load_dataset(..., streaming=True)``, has neither. The map-style path stays as it is for everything else.

Per epoch, on every process: ``shuffle(seed, buffer_size)`` + ``set_epoch(epoch)`` (the same order on every
rank), ``split_dataset_by_node`` (this rank's rows), then pools of ``bucket_batches × batch_size`` rows sorted by
duration and cut into full batches, the batches of a pool shuffled by a generator seeded with (seed, epoch,
rank). The last, incomplete batch of a rank is dropped, and all ranks stop at the first rank's end of data, so
every rank takes the same number of steps.

Resume is exact: the order above depends only on the seed, the epoch and the number of processes, so a resumed
run re-reads its epoch from the start and skips the batches already used (``skip``), as the map-style path's
``skip_first_batches`` does. ``IterableDataset.state_dict()`` is not used: it does not restore the content of a
shuffle buffer, so the resumed order would differ. The price is reading the skipped rows again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch


def as_iterable(dataset, num_readers: int):
    """``dataset`` as a ``datasets.IterableDataset``. A map-style one is cut into one shard per reader (process ×
    worker), so every reader gets as many rows as the others (±1): ``split_dataset_by_node`` deals whole shards,
    and the rows a rank has beyond the others' are dropped at the end of each epoch (``lockstep``)."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        return dataset
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    return dataset.to_iterable_dataset(num_shards=max(1, min(len(dataset), num_readers)))


def column_names(dataset) -> list[str]:
    """The columns of an IterableDataset (from its features, or its first row when they are unknown)."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)
    if first is None:
        raise ValueError("the streamed dataset yields no rows")
    return list(first)


def bucketed(rows: Iterator[Mapping], batch_size: int, bucket_batches: int, length: Callable[[Mapping], int],
             generator: np.random.Generator) -> Iterator[list[Mapping]]:
    """Full batches of rows of similar length: pools of ``bucket_batches × batch_size`` rows sorted by
    ``length``, cut into batches that are yielded in a shuffled order (``bucket_batches=1``: stream order)."""
    pool_size = bucket_batches * batch_size
    pool: list[Mapping] = []
    for row in rows:
        pool.append(row)
        if len(pool) == pool_size:
            yield from _cut(pool, batch_size, length, generator)
            pool = []
    yield from _cut(pool, batch_size, length, generator)


def _cut(pool: list[Mapping], batch_size: int, length, generator: np.random.Generator) -> Iterator[list[Mapping]]:
    order = sorted(range(len(pool)), key=lambda i: length(pool[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    for b in generator.permutation(len(batches)) if len(batches) > 1 else range(len(batches)):
        yield [pool[i] for i in batches[b]]


class StreamedBatches(torch.utils.data.IterableDataset):
    """Collated batches of one rank's share of a streamed dataset, for a ``DataLoader(batch_size=None)``.

    Args:
        dataset: The ``datasets.IterableDataset`` (all rows).
        collate: Rows → batch (``MultiStreamCollator``).
        length_column: The column whose first dimension is a row's length (the first stream's latent).
        batch_size / bucket_batches: As for ``LengthBucketSampler``.
        seed: The run's seed; ``shuffle_buffer``: rows in the shuffle buffer (0: no shuffling).
        rank / world_size: This process and the number of processes.
    """

    def __init__(self, dataset, collate: Callable[[Sequence[Mapping]], Any], length_column: str, batch_size: int,
                 bucket_batches: int, seed: int, shuffle_buffer: int, rank: int, world_size: int):
        from datasets.distributed import split_dataset_by_node

        super().__init__()
        self.collate, self.length_column = collate, length_column
        self.batch_size, self.bucket_batches, self.seed, self.rank = batch_size, bucket_batches, seed, rank
        if shuffle_buffer:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
        self.shuffled = bool(shuffle_buffer)
        self.rows = split_dataset_by_node(dataset, rank=rank, world_size=world_size).with_format("torch")
        self.epoch = 0

    def set_epoch(self, epoch: int):
        """Select the epoch whose order the next iteration yields."""
        self.epoch = epoch
        self.rows.set_epoch(epoch)

    def _length(self, row: Mapping) -> int:
        return len(row[self.length_column])

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        generator = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        for rows in bucketed(iter(self.rows), self.batch_size, self.bucket_batches, self._length, generator):
            yield self.collate(rows)


def lockstep(batches: Iterator, skip: int, device: torch.device, accelerator) -> Iterator:
    """``batches`` moved to ``device``, without the first ``skip``, ending on every process as soon as one
    process has no batch left (so no rank waits forever in a collective for a step the others never take)."""
    iterator = iter(batches)
    index = 0
    while True:
        batch = next(iterator, None)
        more = torch.tensor([batch is not None], dtype=torch.int32, device=device)
        if accelerator.num_processes > 1:
            more = accelerator.gather(more).min()
        if not bool(more):
            return
        if index >= skip:
            yield {name: b.to(device) for name, b in batch.items()}
        index += 1
