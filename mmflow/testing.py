"""Test utilities for mmflow and its plugins: tiny models of any number of streams, batches, random weights,
``BackboneConformance``, the checks a third-party backbone should pass (mix it into a pytest class), and
``accelerate_launch``, a multi-process run on CPU that survives the hangs and native aborts of gloo."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import torch

from mmflow import MMDiT, StreamBatch
from mmflow.backbone import BackboneProtocol, BlockProtocol


def tiny_config(schedule="half", depth_a=4, depth_b=4, policy="jamflow", backend="auto", mask_padding=True):
    def backbone(depth):
        return {"dim": 32, "depth": depth, "heads": 2, "dim_head": 16, "ff_mult": 2, "conv_pos_kernel": 5,
                "conv_pos_groups": 4}

    mask = None
    if policy == "jamflow":
        mask = {"preset": "local_global", "global_stream": "fast", "local_stream": "slow", "window_seconds": "0.2"}
    return {
        "streams": {
            "fast": {"frame_rate": "50", "channels": 3, "backbone": "dit", "backbone_config": backbone(depth_a)},
            "slow": {"frame_rate": "15", "channels": 2, "cond_channels": 1, "backbone": "dit",
                     "backbone_config": backbone(depth_b)},
        },
        "joint_schedule": schedule,
        "mask_policy": mask,
        "attention_backend": backend,
        "mask_padding": mask_padding,
    }


def randomize(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised AdaLN/output layers would hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model.eval()


def tiny_model(**kwargs) -> MMDiT:
    return randomize(MMDiT(**tiny_config(**kwargs)))


def tiny_batches(batch=2, seconds=(1.0, 0.6), given_fraction=0.3, seed=0) -> dict[str, StreamBatch]:
    """Clips of the given durations (padded to the longest), the first ``given_fraction`` of each given."""
    g = torch.Generator().manual_seed(seed)
    rates, channels = {"fast": 50, "slow": 15}, {"fast": 3, "slow": 2}
    out = {}
    for name, rate in rates.items():
        lengths = [round(s * rate) for s in seconds[:batch]]
        n = max(lengths)
        latent = torch.randn(batch, n, channels[name], generator=g)
        given = torch.arange(n)[None, :] < torch.tensor([round(given_fraction * n_) for n_ in lengths])[:, None]
        cond = torch.randn(batch, n, 1, generator=g) if name == "slow" else None
        out[name] = StreamBatch.from_lengths(latent, lengths, given=given, cond=cond)
    return out


TINY_BACKBONE = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "ff_mult": 2, "conv_pos_kernel": 5,
                 "conv_pos_groups": 4}


def streams_config(rates: Mapping[str, float | str], channels: Mapping[str, int] | None = None,
                   backbone: Mapping | None = None, schedule="half", mask_policy: dict | None = None) -> dict:
    """An ``MMDiT`` config of tiny ``dit`` streams, one per entry of ``rates`` (name → frames/s), in that order.

    ``channels`` defaults to 1 per stream; all streams share ``backbone`` (so they can attend jointly).
    """
    channels = dict(channels or {})
    return {
        "streams": {
            name: {"frame_rate": str(Fraction(rate).limit_denominator(10_000)), "channels": channels.get(name, 1),
                   "backbone": "dit", "backbone_config": dict(backbone or TINY_BACKBONE)}
            for name, rate in rates.items()
        },
        "joint_schedule": schedule,
        "mask_policy": mask_policy,
    }


def random_batches(model: MMDiT, seconds=(1.0, 0.6), given_fraction=0.3, seed=0) -> dict[str, StreamBatch]:
    """Random clips of the given durations for every stream of ``model`` (padded to the longest), the first
    ``given_fraction`` of each given, per-frame conditions where a stream takes them."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, spec in model.specs.items():
        lengths = [max(1, spec.num_frames(s)) for s in seconds]
        n = max(lengths)
        latent = torch.randn(len(seconds), n, spec.channels, generator=g)
        given = torch.arange(n)[None, :] < torch.tensor([round(given_fraction * n_) for n_ in lengths])[:, None]
        cond = torch.randn(len(seconds), n, spec.cond_channels, generator=g) if spec.cond_channels else None
        out[name] = StreamBatch.from_lengths(latent, lengths, given=given, cond=cond)
    return out


class BackboneConformance:
    """Checks every stream backbone should pass; mix into a pytest class and set the class attributes.

    ``backbone``: the registered backbone name; ``backbone_config``: its tiny config; ``stream``: the stream's
    ``{"frame_rate", "channels", "cond_channels"}``. Override ``batches(model)`` when the backbone needs extras
    (e.g. text ids). The checks: the protocol, output shapes, ``prepare`` giving the same result as computing
    without it, ``drop`` hiding the conditions, and, next to a generic ``dit`` stream in a joint ``MMDiT``,
    sampling that keeps given frames exactly.
    """

    backbone: str = "dit"
    backbone_config: dict = TINY_BACKBONE
    stream: dict = {"frame_rate": "25", "channels": 2, "cond_channels": 0}

    def model(self, seed: int = 0) -> MMDiT:
        torch.manual_seed(seed)
        partner = {"frame_rate": "50", "channels": 1, "backbone": "dit",
                   "backbone_config": {**TINY_BACKBONE, "heads": self.backbone_config.get("heads", 2),
                                       "dim_head": self.backbone_config.get("dim_head", 16)}}
        config = {"streams": {"subject": {**self.stream, "backbone": self.backbone,
                                          "backbone_config": dict(self.backbone_config)},
                              "partner": partner}, "joint_schedule": "half"}
        return randomize(MMDiT(**config))

    def batches(self, model: MMDiT) -> dict[str, StreamBatch]:
        return random_batches(model)

    def test_follows_the_backbone_protocol(self):
        backbone = self.model().backbones["subject"]
        assert isinstance(backbone, BackboneProtocol)
        assert all(isinstance(block, BlockProtocol) for block in backbone.transformer_blocks)
        assert backbone.depth == len(backbone.transformer_blocks) >= 1

    def test_velocity_has_the_latent_shape(self):
        model = self.model()
        batches = self.batches(model)
        x = {n: torch.randn_like(b.latent) for n, b in batches.items()}
        out = model(x, torch.full((2,), 0.3), batches)
        assert {n: v.shape for n, v in out.items()} == {n: b.latent.shape for n, b in batches.items()}
        assert all(torch.isfinite(v).all() for v in out.values())

    def test_prepare_is_only_a_cache(self):
        model = self.model()
        batches = self.batches(model)
        x = {n: torch.randn_like(b.latent) for n, b in batches.items()}
        plan = model.plan(batches)
        torch.testing.assert_close(model(x, torch.full((2,), 0.3), batches, plan=plan),
                                   model(x, torch.full((2,), 0.3), batches))

    def test_drop_hides_the_conditions(self):
        model = self.model()
        batches = self.batches(model)
        x = {n: torch.randn_like(b.latent) for n, b in batches.items()}
        t = torch.full((2,), 0.3)
        changed = dict(batches)
        subject = batches["subject"]
        changed["subject"] = subject.replace(latent=subject.latent + 1.0,
                                             cond=None if subject.cond is None else subject.cond + 1.0)
        drop = {"subject": torch.ones(2, dtype=torch.bool), "partner": torch.zeros(2, dtype=torch.bool)}
        hidden = model(x, t, batches, drop=drop, joint_view=False)["subject"]
        torch.testing.assert_close(hidden, model(x, t, changed, drop=drop, joint_view=False)["subject"])
        assert not torch.allclose(model(x, t, batches, joint_view=False)["subject"],
                                  model(x, t, changed, joint_view=False)["subject"])

    def test_sampling_keeps_given_frames(self):
        from mmflow import generate

        model = self.model()
        batches = self.batches(model)
        out = generate(model, batches, steps=2, seeds=[0, 1])
        for name, batch in batches.items():
            keep = batch.given & batch.valid
            torch.testing.assert_close(out[name][keep], batch.latent[keep], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ processes

LAUNCH_TIMEOUT = 120
"""Seconds one two-process CPU launch may take (a toy run takes 10-15 s on 2 cores). Once in about ten runs of an
FSDP test on a loaded 2-core machine a launch never finished; it is killed and launched once more rather than
stalling a suite until pytest's timeout."""

TWO_CPU_PROCESSES = ("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                     "--dynamo_backend", "no", "--main_process_port", "0")
"""``accelerate launch`` options that really start two processes on a CPU-only machine (``--cpu`` with
``--num_processes 2`` starts one); with ``ACCELERATE_USE_CPU=1`` they talk over gloo. Port 0: any free port."""

NATIVE_ABORT = "terminate called without an active exception"
"""What libstdc++ prints when a gloo worker thread asks for the GIL while Python finalizes (docs/distributed.md,
"Process exit"): the rank dies with SIGABRT after its work is done. mmflow's training commands and its Trainer
guard against it, but a test's own script may not, and torch's or Arrow's threads may meet it in other ways, so a
launch that ends so is run once more."""


def accelerate_launch(options: Sequence[str], script: str | os.PathLike, *arguments: str,
                      python_path: Sequence[str | os.PathLike] = (), clear: Sequence[str | os.PathLike] = (),
                      cwd: str | os.PathLike | None = None, timeout: float = LAUNCH_TIMEOUT,
                      ) -> subprocess.CompletedProcess:
    """``accelerate launch <options> script arguments`` on CPU; fails (AssertionError) with the log's end unless
    every rank exits 0.

    The ranks run with one OpenMP thread each, no GPU, ``PYTHONFAULTHANDLER=1`` (an abort names the Python frames
    that were running) and ``python_path`` before this process's ``PYTHONPATH``. A launch that hangs past
    ``timeout`` (launcher and ranks are killed) or ends in ``NATIVE_ABORT`` is run once more, with a warning that
    shows its log; ``clear``: this launch's own outputs, removed before that second run so it starts clean. Two
    in a row fail.
    """
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONFAULTHANDLER": "1"}
    if paths := [*map(str, python_path), *filter(None, [os.environ.get("PYTHONPATH")])]:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", *options, str(script), *arguments]
    for attempt in (1, 2):
        for output in clear if attempt == 2 else ():
            shutil.rmtree(output, ignore_errors=True)
        process = subprocess.Popen(command, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            aborted = process.returncode != 0 and NATIVE_ABORT in stderr
            trouble = f"ended in a native abort ({NATIVE_ABORT!r})" if aborted else ""
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            stdout, stderr = process.communicate()
            trouble = f"hung past {timeout:g} s"
            if attempt == 2:
                raise AssertionError(f"two launches of {script} hung past {timeout:g} s:\n{stderr[-4000:]}") from None
        if not trouble or attempt == 2:
            break
        warnings.warn(f"a launch of {script} {trouble}; launched again:\n{stderr[-3000:]}", stacklevel=2)
    if process.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def free_port() -> int:
    """A TCP port on the loopback interface that is free now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill_tree(pid: int) -> None:
    """Kill a launcher and every process below it (torchrun starts the ranks in sessions of their own, so a
    process-group kill would miss them)."""
    import psutil  # a dependency of accelerate

    try:
        launcher = psutil.Process(pid)
        family = [*launcher.children(recursive=True), launcher]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):  # it ended on its own meanwhile
            member.kill()
