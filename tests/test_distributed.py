"""Launches beyond one process (docs/distributed.md): the accelerate config files load; DeepSpeed ZeRO-2's
config is understood by accelerate without deepspeed installed; FSDP runs the recipe on 2 CPU processes over gloo,
sharding the model, training like DDP and resuming exactly from its checkpoint; a streamed dataset is dealt to 2
processes without overlap."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DeepSpeedPlugin, DistributedType
from safetensors.torch import load_file

from mmflow.testing import accelerate_launch
from mmflow.training.resume import CheckpointError, _restore_fsdp

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs" / "accelerate"
TOY = ROOT / "examples" / "toy_gesture" / "mmflow_toy_gesture" / "configs" / "toy.yaml"

EXPECTED = {  # file: (distributed type, processes, CPU only)
    "single_cpu.yaml": (DistributedType.NO, 1, True),
    "cpu_2proc.yaml": (DistributedType.MULTI_GPU, 2, True),  # launches the processes; use_cpu makes them gloo
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 8, False),
    "fsdp_cpu.yaml": (DistributedType.FSDP, 2, True),
    "fsdp.yaml": (DistributedType.FSDP, 8, False),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 8, False),
}


def test_accelerate_configs_load_and_are_documented():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    table = (ROOT / "docs" / "distributed.md").read_text()
    for name, (kind, processes, cpu) in EXPECTED.items():
        config = load_config_from_file(str(CONFIGS / name))  # refuses unknown keys
        assert (config.distributed_type, config.num_processes, bool(config.use_cpu)) == (kind, processes, cpu), name
        assert f"recipes/configs/accelerate/{name}" in table, f"docs/distributed.md does not show {name}"
    for name in ("fsdp.yaml", "fsdp_cpu.yaml"):  # what mmflow's FSDP path needs (trainer._check_fsdp)
        fsdp = load_config_from_file(str(CONFIGS / name)).fsdp_config
        assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD" and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert fsdp["fsdp_auto_wrap_policy"] == "NO_WRAP" and fsdp["fsdp_use_orig_params"] and fsdp["fsdp_version"] == 1


def test_deepspeed_zero2_config_is_understood_without_deepspeed():
    keys = load_config_from_file(str(CONFIGS / "deepspeed_zero2.yaml")).deepspeed_config
    plugin = DeepSpeedPlugin(**keys)  # accelerate's own translation of the keys `accelerate launch` passes on
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 2
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0


def test_sharded_fsdp_checkpoints_are_refused(tmp_path):
    from torch.distributed.fsdp import StateDictType

    accelerator = SimpleNamespace(state=SimpleNamespace(
        fsdp_plugin=SimpleNamespace(state_dict_type=StateDictType.SHARDED_STATE_DICT)))
    with pytest.raises(CheckpointError, match=r"pickled \.metadata.*FULL_STATE_DICT"):
        _restore_fsdp(accelerator, tmp_path, None, None)


# ------------------------------------------------------------------------------------------------ 2 processes


def toy_config(tmp_path: Path, **changes) -> Path:
    """The toy recipe, shrunk: 20 clips, batches of 2 per process, 4 steps, a checkpoint every 2."""
    data = yaml.safe_load(TOY.read_text())
    data.update(output_dir=str(tmp_path / "run"), total_steps=4, batch_size=2, gradient_accumulation=1, log_every=1,
                checkpoint={"every": 2, "keep_last": 3}, sampling={"every": 0},
                schedule={"name": "cosine", "warmup_steps": 1})
    data["data"]["kwargs"] = {"num_clips": 20, "min_seconds": 0.6, "max_seconds": 1.2, "seed": 0}
    data.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def launch(config_file: str, *arguments: str, clear: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """``accelerate launch`` with one of the shipped config files (``mmflow.testing.accelerate_launch``)."""
    return accelerate_launch(["--config_file", str(CONFIGS / config_file), "--main_process_port", "0"], *arguments,
                             python_path=[ROOT], clear=clear, cwd=ROOT)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "pytorch_model_fsdp.bin", weights_only=True)


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_shards_trains_and_resumes_exactly(tmp_path):
    config = toy_config(tmp_path)
    train = str(ROOT / "recipes" / "train.py")
    first = launch("fsdp_cpu.yaml", train, "--config", str(config), clear=(tmp_path / "run",))
    log = first.stderr
    assert "2 process(es) (DistributedType.FSDP, cpu)" in log
    held = {int(r): int(n.replace(",", "")) for r, n, _ in re.findall(r"rank (\d) holds ([\d,]+) of ([\d,]+)", log)}
    total = int(re.search(r"holds [\d,]+ of ([\d,]+) parameters", log).group(1).replace(",", ""))
    assert sorted(held) == [0, 1] and sum(held.values()) >= total and max(held.values()) < total  # sharded
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "step-00000002" / "pytorch_model_fsdp.bin").is_file()

    resumed = tmp_path / "resumed"
    launch("fsdp_cpu.yaml", train, "--config", str(config), "--output-dir", str(resumed),
           "--resume", str(checkpoints / "step-00000002"), clear=(resumed,))
    end, again = _weights(checkpoints / "step-00000004"), _weights(resumed / "checkpoints" / "step-00000004")
    assert end.keys() == again.keys() and all(torch.equal(end[k], again[k]) for k in end)
    exported = load_file(tmp_path / "run" / "model" / "diffusion_pytorch_model.safetensors")
    exported_again = load_file(resumed / "model" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(exported[k], exported_again[k]) for k in exported)

    # the same run as plain data parallelism reaches the same weights (up to the order of float sums)
    ddp = tmp_path / "ddp"
    launch("cpu_2proc.yaml", train, "--config", str(config), "--output-dir", str(ddp), clear=(ddp,))
    ddp_weights = load_file(ddp / "checkpoints" / "step-00000004" / "model.safetensors")
    assert all(torch.allclose(end[k], ddp_weights[k], atol=1e-5) for k in end)
    assert any(not torch.equal(end[k], _weights(checkpoints / "step-00000002")[k]) for k in end)  # it trained


STREAMED_SCRIPT = """
import json, sys, copy, yaml
from mmflow.training import Trainer, TrainingConfig, build_dataset, build_model
config = TrainingConfig.from_dict(yaml.safe_load(open(sys.argv[1])))
trainer = Trainer(config, build_model(config.model, config.seed), build_dataset(config))
seen = []
collate = trainer.sampler.collate
def record(rows):
    seen.extend(round(float(r["signal"].sum()), 4) for r in rows)
    return collate(rows)
trainer.sampler.collate = record
history = trainer.fit(resume_from=None)
rank = trainer.accelerator.process_index  # one report per rank: no collective after training, as in mmflow train
with open(f"{sys.argv[2]}.{rank}", "w") as report:
    json.dump({"seen": seen, "losses": [h["loss"] for h in history]}, report)
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
"""


@pytest.mark.slow
def test_streamed_rows_are_dealt_to_two_processes_without_overlap(tmp_path):
    data = yaml.safe_load(toy_config(tmp_path).read_text())
    data["data"].update(streaming=True, shuffle_buffer=8)
    config = toy_config(tmp_path, data=data["data"], total_steps=5, checkpoint={"every": 0})
    script, report = tmp_path / "streamed.py", tmp_path / "report.json"
    script.write_text(textwrap.dedent(STREAMED_SCRIPT))
    launch("cpu_2proc.yaml", str(script), str(config), str(report), clear=(tmp_path / "run",))
    results = [json.loads(Path(f"{report}.{rank}").read_text()) for rank in (0, 1)]
    ranks = [result["seen"] for result in results]
    assert len(ranks[0]) == len(ranks[1]) == 10  # 5 steps of 2 rows on each rank
    assert not set(ranks[0]) & set(ranks[1]) and len(set(ranks[0]) | set(ranks[1])) == 20  # every row, once
    assert all(loss == loss for result in results for loss in result["losses"])


@pytest.mark.parametrize(("change", "message"), [
    ({"fsdp_version": 2}, "fsdp_version: 1"),
    ({"use_orig_params": False}, "fsdp_use_orig_params: true"),
    ({"auto_wrap_policy": object()}, "NO_WRAP"),
    ({}, "sampling.every"),
])
def test_fsdp_setups_the_trainer_cannot_serve_are_refused(tmp_path, change, message):
    from mmflow.training import ConfigError, Trainer, TrainingConfig, build_model

    plugin = SimpleNamespace(**{"fsdp_version": 1, "use_orig_params": True, "auto_wrap_policy": None, **change})
    accelerator = SimpleNamespace(distributed_type=DistributedType.FSDP, device=torch.device("cpu"),
                                  state=SimpleNamespace(fsdp_plugin=plugin))
    data = yaml.safe_load(toy_config(tmp_path).read_text())
    data["sampling"] = {"every": 2 if not change else 0}
    config = TrainingConfig.from_dict(data)
    with pytest.raises(ConfigError, match=message):
        Trainer(config, build_model(config.model, config.seed), None, accelerator=accelerator)
