"""The Accelerate-driven training loop for any MMDiT: one stage, the inpainting objective, exact resume.

One optimizer step is ``gradient_accumulation`` micro-batches of ``batch_size`` rows on every process.
Per micro-batch, every stream gets a random span to generate (``random_span_mask``; the rest of the stream
is given as context), some streams are given whole, some samples' conditions are dropped, and
``FlowMatchingObjective`` computes the loss on the generated frames.

Resuming is exact: a checkpoint holds the model, optimizer, LR scheduler, EMA, every rank's RNG states and
objective generator, and the data position (epoch, batches used in it), so a resumed run produces the same
losses and weights, bit for bit on the CPU, as one that never stopped. Nothing outside that state may draw
from the global generators (dropout uses them): the data loader draws its worker seeds from its own
generator, seeded per epoch. A resume reads the checkpoint without running code from it (``resume.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.tracking import get_available_trackers
from accelerate.utils import DistributedType, GradientAccumulationPlugin, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..buckets import model_setting
from ..checkpoints import state_dict_problems
from ..flow import FlowMatchingObjective, generate, masked_mse, random_span_mask
from ..io import atomic_path
from ..streams import StreamBatch
from ..transformer import MMDiT
from . import fsdp_cpu, streaming
from .checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from .config import ConfigError, ModelConfig, TrainingConfig
from .data import LengthBucketSampler, MultiStreamCollator, resolve_columns, row_seconds
from .ema import EMA
from .lora import apply_lora, lora_merged, save_adapter
from .process_group import end_process_group_at_exit
from .resume import (
    FSDP_MODEL_FILE,
    CheckpointError,
    load_plain,
    load_tensors,
    restore_accelerator_state,
    tensor_shapes,
)
from .stages import Stage, apply_stage, trainable_parameters

logger = get_logger(__name__)

EMA_FILE = "ema.safetensors"
LEGACY_EMA_FILE = "custom_checkpoint_0.pkl"  # Accelerate's file for registered objects, in older checkpoints
SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def build_model(config: ModelConfig, seed: int = 0) -> MMDiT:
    """A new MMDiT from ``config.config`` (initialised from ``seed``, the same on every rank) or a saved one."""
    if config.pretrained is not None:
        model = MMDiT.from_pretrained(config.pretrained)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MMDiT(**config.config)
    if config.length_buckets is not None:
        try:  # checked against the model's streams (a ladder may name one it lacks), the error naming the key
            model.length_buckets = model_setting(config.length_buckets, model.stream_rates, "model.length_buckets")[0]
        except ValueError as error:
            raise ConfigError(str(error)) from None
    return model


def build_dataset(config):
    """The ``datasets.Dataset`` of ``config.data``: ``source`` called with ``kwargs``, or loaded from ``path``.
    With ``data.streaming`` the source may also return a ``datasets.IterableDataset``."""
    import datasets

    data = config.data
    if data.path is not None:
        return datasets.load_from_disk(data.path)
    module_name, _, function_name = data.source.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"data.source: cannot import {data.source!r} ({error}); is its package installed?") from error
    dataset = function(**data.kwargs)
    if isinstance(dataset, datasets.IterableDataset) and not data.streaming:
        raise ConfigError(f"data.source: {data.source!r} returned a datasets.IterableDataset; set data.streaming: "
                          f"true to train on it streamed")
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise ConfigError(f"data.source: {data.source!r} returned {type(dataset).__name__}, not a datasets.Dataset")
    return dataset


def _rank_seed(seed: int, rank: int, *more: int) -> int:
    """A distinct, reproducible seed per (run seed, rank, anything else such as the epoch)."""
    return int(np.random.SeedSequence([seed, rank, *more]).generate_state(1)[0])


def check_tracker(tracker: str) -> None:
    """Refuse a configured ``tracker`` that is not installed, in one line; run it before any data or model work,
    so a typo'd environment fails in a second, not after the dataset build inside Accelerate's traceback."""
    if tracker != "none" and tracker not in [str(getattr(t, "value", t)) for t in get_available_trackers()]:
        raise ConfigError(f"tracker: {tracker!r} is not installed (pip install {tracker}), or set tracker: none")


def make_accelerator(config: TrainingConfig, cpu: bool = False) -> Accelerator:
    """The ``Accelerator`` a run of ``config`` needs (``cpu=True`` forces the CPU even where a GPU exists)."""
    check_tracker(config.tracker)
    tracker = None if config.tracker == "none" else config.tracker
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation, sync_with_dataloader=False
        ),
        step_scheduler_with_optimizer=False,  # the schedule counts optimizer steps, whatever the world size
        log_with=tracker,
        project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=config.output_dir),
    )
    fsdp_cpu.enable(accelerator)  # an FSDP launch on CPU processes: FSDP, not Accelerate's DDP fallback
    return accelerator


class Trainer:
    """Train ``model`` on ``dataset`` as ``config`` says.

    Args:
        config: The run's ``TrainingConfig``.
        model: The model to train (``build_model``); the stage's freezing is applied here.
        dataset: A ``datasets.Dataset`` with one time-major array column per stream (``data.py``).
        accelerator: Built from the config when None (tests pass their own).
    """

    def __init__(self, config: TrainingConfig, model: MMDiT, dataset, accelerator: Accelerator | None = None):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = accelerator or make_accelerator(config)
        end_process_group_at_exit()  # whatever way the process ends, no abort at exit from gloo's threads
        acc = self.accelerator
        if config.mixed_precision != "no" and acc.device.type == "cpu":
            raise ConfigError(
                f"mixed_precision: {config.mixed_precision} is for GPUs; on CPU it is slower than fp32 and changes "
                f"the numbers (fp16 is not even applied there). Set mixed_precision: 'no' for CPU runs"
            )
        self._check_streams(model)
        self.fsdp = acc.distributed_type == DistributedType.FSDP
        if self.fsdp:
            self._check_fsdp()
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()

        stage_config = config.current_stage
        self.stage = Stage(config.stage, tuple(stage_config.frozen), stage_config.description)
        status = apply_stage(model, self.stage)
        if config.lora.rank:
            wrapped = apply_lora(model, config.lora.rank, config.lora.alpha, config.lora.targets, config.lora.dropout)
            logger.info(f"LoRA rank {config.lora.rank} on {len(wrapped)} linear layers; other weights frozen")
            status = {"trainable": [n for n, p in model.named_parameters() if p.requires_grad],
                      "frozen": [n for n, p in model.named_parameters() if not p.requires_grad]}
        trainable = sum(p.numel() for _, p in trainable_parameters(model))
        frozen = sum(p.numel() for p in model.parameters()) - trainable
        logger.info(f"{acc.num_processes} process(es) ({acc.distributed_type}, {acc.device}); stage "
                    f"{self.stage.name!r}: training {trainable:,} parameters, {frozen:,} frozen "
                    f"(frozen streams: {list(self.stage.frozen) or 'none'})")
        self.parameter_status = status
        self.ema = EMA(model, config.ema.decay, config.ema.update_every)

        self.specs = dict(model.specs)
        self.streaming = config.data.streaming
        if self.streaming:
            dataset = streaming.as_iterable(dataset, acc.num_processes * max(1, config.data.num_workers))
        names = streaming.column_names(dataset) if self.streaming else dataset.column_names
        self.columns = resolve_columns(self.specs, names, config.data.columns)
        self.collate = MultiStreamCollator(self.specs, self.columns)
        self.dataset = dataset.with_format("torch")
        # Every new iterator draws its workers' base seed; from the global generator, that draw would shift
        # dropout by one number after a resume (a new iterator mid-epoch), so it gets a generator of its own.
        self.loader_generator = torch.Generator()
        if self.streaming:  # dealt to ranks by split_dataset_by_node, not by Accelerate: the loader is not prepared
            self.sampler = streaming.StreamedBatches(
                dataset, self.collate, self.columns[next(iter(self.specs))].latent, config.batch_size,
                config.data.bucket_batches, config.seed, config.data.shuffle_buffer if config.data.shuffle else 0,
                acc.process_index, acc.num_processes)
            self.stream_loader = DataLoader(self.sampler, batch_size=None, num_workers=config.data.num_workers,
                                            generator=self.loader_generator)
            loader = None
        else:
            self.sampler = LengthBucketSampler(
                row_seconds(dataset, self.columns, self.specs), config.batch_size, num_replicas=acc.num_processes,
                seed=config.seed, bucket_batches=config.data.bucket_batches, shuffle=config.data.shuffle,
            )
            loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collate,
                                num_workers=config.data.num_workers, generator=self.loader_generator)
        optimizer = torch.optim.AdamW(
            [p for _, p in trainable_parameters(model)], lr=config.optimizer.lr, betas=tuple(config.optimizer.betas),
            weight_decay=config.optimizer.weight_decay, eps=config.optimizer.eps,
        )
        scheduler = get_scheduler(SCHEDULER_NAMES[config.schedule.name], optimizer,
                                  num_warmup_steps=config.schedule.warmup_steps, num_training_steps=config.total_steps)
        # the model's tensors as saved (FSDP shards them once prepared), to check a checkpoint against
        self.saved_shapes = {key: torch.empty(t.shape, dtype=t.dtype, device="meta")
                             for key, t in model.state_dict().items()}
        if self.streaming:
            self.loader = None
            self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        else:
            self.model, self.optimizer, self.loader, self.scheduler = acc.prepare(model, optimizer, loader, scheduler)
        if self.fsdp:
            held = sum(p.numel() for p in self.model.parameters())
            logger.info(f"FSDP: rank {acc.process_index} holds {held:,} of {trainable + frozen:,} parameters",
                        main_process_only=False)

        self.objective = FlowMatchingObjective(dict(config.objective.condition_dropout),
                                               dict(config.objective.stream_weights))
        self.generator = torch.Generator().manual_seed(_rank_seed(config.seed, acc.process_index))
        set_seed(_rank_seed(config.seed + 1, acc.process_index))  # dropout and anything else on the global RNG
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.history: list[dict] = []

    # ---------------------------------------------------------------------------------------------- setup

    def _check_streams(self, model: MMDiT):
        unknown = sorted(self.config.objective.stream_names() - set(model.stream_names))
        if unknown:
            raise ConfigError(f"objective names unknown stream(s) {unknown}; the model has streams {model.stream_names}")

    def _check_fsdp(self):
        """What mmflow's FSDP path supports: the MMDiT as one FSDP unit, checkpoints as full state dicts (read
        without running code), no sampling during training (it runs on the main process only)."""
        plugin = self.accelerator.state.fsdp_plugin
        if plugin.fsdp_version != 1:
            raise ConfigError("FSDP: mmflow trains with FSDP1 (fsdp_version: 1 in the accelerate config)")
        if not plugin.use_orig_params:
            raise ConfigError("FSDP: set fsdp_use_orig_params: true in the accelerate config (the EMA reads the "
                              "MMDiT's own parameters)")
        if plugin.auto_wrap_policy is not None:
            raise ConfigError("FSDP: set fsdp_auto_wrap_policy: NO_WRAP in the accelerate config (the MMDiT is one "
                              "FSDP unit: its EMA and export read the parameters by their own names)")
        if self.config.sampling.every:
            raise ConfigError("sampling.every: samples run on the main process only, which FSDP's sharded forward "
                              "cannot; set sampling.every: 0 and sample from the exported model")

    def _full_params(self):
        """Under FSDP: every rank gathers the whole parameters (read-only) for the block; otherwise nothing."""
        if not self.fsdp:
            return contextlib.nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(self.model, writeback=False)

    @property
    def unwrapped(self) -> MMDiT:
        return self.accelerator.unwrap_model(self.model)

    # ---------------------------------------------------------------------------------------------- one step

    def inpainting_batches(self, batches: Mapping[str, StreamBatch]) -> dict[str, StreamBatch]:
        """Draw the context of every stream: a random span is generated, the rest given; some streams whole."""
        out = {}
        for name, batch in batches.items():
            span = random_span_mask(batch.lengths, batch.num_frames, self.config.objective.span_for(name),
                                    generator=self.generator)
            given = batch.valid & ~span
            p = self.config.objective.given_whole.get(name, 0.0)
            if p:
                whole = (torch.rand(batch.batch_size, generator=self.generator) < p).to(given.device)
                given = torch.where(whole[:, None], batch.valid, given)
            out[name] = batch.replace(given=given)
        return out

    def _micro_step(self, batches):
        batches = self.inpainting_batches(batches)
        loss = self.objective(self.model, batches, self.generator)
        self.accelerator.backward(loss.total)
        return loss

    def _out_of_memory(self) -> RuntimeError:
        c = self.config
        longest = "" if self.streaming else f" (clips up to {max(self.sampler.lengths):.1f} s)"
        return RuntimeError(
            f"out of memory in a training step with batch_size={c.batch_size} per process{longest}. Lower batch_size and raise gradient_accumulation (currently "
            f"{c.gradient_accumulation}) to keep the effective batch, drop long clips from the dataset, or use "
            f"mixed_precision: bf16 (or fp16) on GPU"
        )

    # ---------------------------------------------------------------------------------------------- loop

    def fit(self, resume_from: str | os.PathLike | None = "auto") -> list[dict]:
        """Train up to ``total_steps``; return the per-step metrics of this call.

        ``resume_from``: ``"auto"`` (the newest checkpoint in ``output_dir/checkpoints``, if any), a checkpoint
        folder, or None (start fresh). Call ``accelerator.end_training()`` when done with the trainer (it
        flushes the trackers and ends the process group).
        """
        acc, config = self.accelerator, self.config
        if resume_from == "auto":
            resume_from = latest_checkpoint(self.output_dir / "checkpoints")
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        if config.tracker != "none":
            acc.init_trackers(config.project, config=_scalars(config.to_dict()))
        self.model.train()
        last_saved = self.step if resume_from is not None else None
        progress = tqdm(total=config.total_steps, initial=self.step, desc=f"training ({self.stage.name})",
                        disable=not acc.is_local_main_process)
        sums, micro, frames, started = {}, 0, 0, time.perf_counter()
        while self.step < config.total_steps:
            self.sampler.set_epoch(self.epoch)
            self.loader_generator.manual_seed(_rank_seed(config.seed + 2, acc.process_index, self.epoch))
            if self.streaming:
                loader = streaming.lockstep(self.stream_loader, self.batch_in_epoch, acc.device, acc)
            else:
                self.loader.set_epoch(self.epoch)
                loader = acc.skip_first_batches(self.loader, self.batch_in_epoch) if self.batch_in_epoch else self.loader
            seen = self.batch_in_epoch
            for batches in loader:
                with acc.accumulate(self.model):
                    try:
                        loss = self._micro_step(batches)
                    except torch.OutOfMemoryError as error:
                        raise self._out_of_memory() from error
                    for key, value in {"loss": loss.total, **{f"loss/{n}": v for n, v in loss.per_stream.items()}}.items():
                        sums[key] = sums.get(key, 0.0) + value.detach().float()
                    micro += 1
                    frames = frames + sum(b.valid.sum() for b in batches.values())  # a tensor: no device sync
                    grad_norm = None
                    if acc.sync_gradients:
                        grad_norm = acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                self.batch_in_epoch += 1
                seen += 1
                if not acc.sync_gradients:
                    continue
                self.step += 1
                with self._full_params():  # FSDP: the EMA is kept whole on every rank
                    self.ema.step(self.unwrapped, self.step)
                metrics = self._metrics(sums, micro, frames, grad_norm, time.perf_counter() - started)
                sums, micro, frames, started = {}, 0, 0, time.perf_counter()
                self.history.append(metrics)
                progress.update(1)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}")
                if self.step % config.log_every == 0 or self.step == config.total_steps:
                    acc.log(metrics, step=self.step)
                    logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in metrics.items()))
                if config.sampling.every and self.step % config.sampling.every == 0:
                    self.sample()
                if config.checkpoint.every and self.step % config.checkpoint.every == 0:
                    self.save_checkpoint()
                    last_saved = self.step
                if self.step >= config.total_steps:
                    break
            else:
                if self.streaming and seen == 0:
                    raise ValueError(f"the streamed dataset gave no full batch of {config.batch_size} row(s) on "
                                     f"every one of {acc.num_processes} process(es); lower batch_size or add data")
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        progress.close()
        if config.checkpoint.every and last_saved != self.step:
            self.save_checkpoint()
        self.export(self.output_dir / "model")
        return self.history

    def _metrics(self, sums: dict, micro: int, frames, grad_norm, seconds: float) -> dict:
        """The step's losses (mean over micro-batches and ranks), LR, gradient norm, frames of all ranks, time."""
        keys = sorted(sums)
        means = self.accelerator.reduce(torch.stack([sums[k] for k in keys]) / micro, reduction="mean")
        metrics = {"step": self.step, "epoch": self.epoch, **dict(zip(keys, means.tolist(), strict=True))}
        device = self.accelerator.device
        metrics["frames"] = int(self.accelerator.reduce(torch.as_tensor(frames, device=device), reduction="sum"))
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["grad_norm"] = float(grad_norm) if grad_norm is not None else math.nan
        metrics["step_seconds"] = seconds
        return metrics

    # ---------------------------------------------------------------------------------------------- state

    def _write_rank_state(self, folder: Path):
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                 "generator": self.generator.get_state(), "num_processes": self.accelerator.num_processes,
                 "stage": self.stage.name, "ema_updates": self.ema.num_updates, "streaming": self.streaming}
        torch.save(state, folder / f"trainer_state_{self.accelerator.process_index}.pt")
        if self.accelerator.is_main_process:  # the EMA is the same on every rank
            save_file({name: t.contiguous().cpu() for name, t in self.ema.shadow.items()}, str(folder / EMA_FILE))
            (folder / "training_config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step (every rank must call it)."""
        return save_checkpoint(self.accelerator, self.output_dir / "checkpoints", self.step,
                               self._write_rank_state, self.config.checkpoint.keep_last)

    def _check_model_fits(self, folder: Path):
        """Refuse a checkpoint of another model (another config's sizes or streams) before loading anything,
        naming the keys that differ, instead of failing with half the state loaded."""
        if self.fsdp:
            saved = load_plain(folder / FSDP_MODEL_FILE, "model weights", mmap=True)  # shapes only
            found = {key: torch.empty(t.shape, device="meta") for key, t in saved.items()}
            expected = self.saved_shapes
        else:
            shapes, _ = tensor_shapes(folder / "model.safetensors", "model weights")
            found = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
            expected = self.unwrapped.state_dict()
        problems = state_dict_problems(expected, found)
        if problems:
            raise ValueError(
                f"checkpoint {folder} holds another model than this run builds ({'; '.join(problems)}); resume "
                f"it with the config it was written with (its training_config.yaml), or start this config in a new "
                f"output_dir"
            )

    def _load_ema(self, folder: Path, updates: int):
        if (folder / EMA_FILE).is_file() or not (folder / LEGACY_EMA_FILE).is_file():
            file, state = folder / EMA_FILE, {"shadow": load_tensors(folder / EMA_FILE, "EMA weights"),
                                              "num_updates": updates}
        else:  # written before the EMA had a safetensors file of its own: read as plain data all the same
            file, state = folder / LEGACY_EMA_FILE, load_plain(folder / LEGACY_EMA_FILE, "EMA state")
        try:
            self.ema.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{file}: {error}") from None

    def load_checkpoint(self, folder: str | os.PathLike):
        """Restore everything ``save_checkpoint`` wrote, reading no file in a way that could run code from it;
        raise naming the folder when it does not fit this run and the file when one is missing or not plain data."""
        folder = Path(folder)
        rank_file = folder / f"trainer_state_{self.accelerator.process_index}.pt"
        if not rank_file.is_file():
            found = sorted(p.name for p in folder.glob("trainer_state_*.pt")) if folder.is_dir() else []
            raise FileNotFoundError(
                f"{folder} is not a checkpoint of this run for rank {self.accelerator.process_index} (found "
                f"{found or 'nothing'}); pass a folder from {self.output_dir / 'checkpoints'} "
                f"(available: {[p.name for p in list_checkpoints(self.output_dir / 'checkpoints')]})"
            )
        state = load_plain(rank_file, "trainer state")
        missing = sorted({"step", "epoch", "batch_in_epoch", "generator", "num_processes", "stage"} - set(state)) \
            if isinstance(state, dict) else ["everything (not a dict)"]
        if missing:
            raise CheckpointError(f"{rank_file}: the trainer state lacks {missing}; the checkpoint is damaged or not "
                                  f"written by mmflow's Trainer. Resume from another checkpoint")
        if state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(
                f"checkpoint {folder} was written by {state['num_processes']} process(es), this run has "
                f"{self.accelerator.num_processes}; resume with the same number of processes (the data position "
                f"and RNG states are per rank) or fine-tune from its exported model instead"
            )
        if state["stage"] != self.stage.name:
            raise ValueError(
                f"checkpoint {folder} is from stage {state['stage']!r}, this run trains stage {self.stage.name!r}; "
                f"start the new stage from the previous stage's exported model (model: {{pretrained: ...}})"
            )
        if bool(state.get("streaming", False)) != self.streaming:
            raise ValueError(
                f"checkpoint {folder} was written with data.streaming: {bool(state.get('streaming', False))}, this run "
                f"has data.streaming: {self.streaming}; the data position means different rows in the two, so resume "
                f"with the setting it was written with"
            )
        self._check_model_fits(folder)
        restore_accelerator_state(self.accelerator, folder, self.model, self.optimizer, self.scheduler)
        self._load_ema(folder, int(state.get("ema_updates", self.ema.num_updates)))
        try:
            self.generator.set_state(state["generator"])
        except (TypeError, RuntimeError) as error:
            raise CheckpointError(f"{rank_file}: the objective generator state is invalid ({error})") from None
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.accelerator.step = self.step * self.config.gradient_accumulation  # accumulation phase: aligned
        logger.info(f"resumed from {folder} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    # ---------------------------------------------------------------------------------------------- outputs

    def export(self, path: str | os.PathLike) -> Path:
        """Save the EMA weights as a ``save_pretrained`` MMDiT folder (main process; written atomically).

        With LoRA, ``lora.export`` decides: ``merged`` puts the update into the folder's weights, ``adapter``
        keeps them the base weights and writes the adapter unmerged to ``path.parent / "lora"``, ``both`` does
        both (docs/training.md)."""
        path = Path(path)
        export = self.config.lora.export if self.config.lora.rank else "merged"
        self.accelerator.wait_for_everyone()
        with self._full_params():  # FSDP: every rank gathers, the main process writes
            if self.accelerator.is_main_process:
                with (
                    self.ema.swapped_into(self.unwrapped) as model,
                    lora_merged(model, merge=export != "adapter"),
                    atomic_path(path) as tmp,
                ):
                    model.save_pretrained(tmp)  # an ordinary MMDiT folder, with or without the update merged
                if export != "merged":
                    with self.ema.swapped_into(self.unwrapped) as model:
                        save_adapter(model, path.parent / "lora")
                logger.info(f"exported the EMA weights to {path}" + (f" (adapter: {path.parent / 'lora'})" if export != "merged" else ""))
        self.accelerator.wait_for_everyone()
        return path

    @torch.no_grad()
    def sample(self) -> dict[str, float]:
        """Generate the first ``sampling.batch_size`` rows from their context with the EMA weights.

        Runs on the main process only; saves ``samples/step-N.safetensors`` (generated, target and given mask
        per stream) and logs the mean squared error on the generated frames. Uses its own generators, so it
        does not change the training run's randomness.
        """
        if not self.accelerator.is_main_process:
            return {}
        if self.streaming:
            rows = list(itertools.islice(iter(self.dataset), self.config.sampling.batch_size))
        else:
            rows = [self.dataset[i] for i in range(min(self.config.sampling.batch_size, len(self.dataset)))]
        device = self.accelerator.device
        batches = {n: b.to(device) for n, b in self.collate(rows).items()}
        saved_generator = self.generator
        self.generator = torch.Generator().manual_seed(self.config.seed)  # the same context every time
        try:
            batches = self.inpainting_batches(batches)
        finally:
            self.generator = saved_generator
        model = self.unwrapped
        with self.ema.swapped_into(model), _eval(model):
            out = generate(model, batches, steps=self.config.sampling.steps,
                           generator=torch.Generator().manual_seed(self.config.seed))
        metrics = {f"sample/mse_{n}": masked_mse(out[n], b.latent, b.generated).item() for n, b in batches.items()}
        tensors = {}
        for name, batch in batches.items():
            tensors |= {f"{name}.generated": out[name], f"{name}.target": batch.latent, f"{name}.given": batch.given}
        with atomic_path(self.output_dir / "samples" / f"step-{self.step:08d}.safetensors") as tmp:
            save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        self.accelerator.log(metrics, step=self.step)
        logger.info(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics


@contextlib.contextmanager
def _eval(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _scalars(tree: dict, prefix: str = "") -> dict:
    """Flatten a config to the scalar ``{"optimizer.lr": 1e-4}`` form trackers accept."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _scalars(value, f"{name}.")
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
