"""Training options a diffusers / Accelerate user reaches for (issue 14): fp16 mixed precision besides bf16, and
a configured tracker that is not installed refused in one line before any data work."""

from __future__ import annotations

import argparse
import copy
import runpy
from pathlib import Path

import pytest
import yaml
from accelerate.state import AcceleratorState, GradientState

from mmflow.training import ConfigError, Trainer, TrainingConfig, build_model, check_tracker, command

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "examples" / "toy_gesture" / "mmflow_toy_gesture" / "configs" / "toy.yaml"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def no_trackers(monkeypatch):
    """No tracker installed, whatever this machine has, so the check is what the test sees."""
    monkeypatch.setattr("mmflow.training.trainer.get_available_trackers", lambda: [])


@pytest.fixture
def data_work(monkeypatch):
    """Record every dataset build (the slow part a tracker typo must not wait for) instead of doing it."""
    calls = []

    def build(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the dataset was built before the tracker was checked")

    monkeypatch.setattr("mmflow.training.build_dataset", build)
    return calls


def toy_dict(tmp_path: Path, **changes) -> dict:
    data = yaml.safe_load(TOY.read_text())
    data.update(output_dir=str(tmp_path / "run"), total_steps=2, batch_size=2, sampling={"every": 0},
                schedule={"name": "constant", "warmup_steps": 1}, **changes)
    data["data"]["kwargs"] = {"num_clips": 4, "min_seconds": 0.6, "max_seconds": 1.0, "seed": 0}
    return data


def test_fp16_is_a_mixed_precision_choice(tmp_path):
    assert TrainingConfig.from_dict(toy_dict(tmp_path, mixed_precision="fp16")).mixed_precision == "fp16"
    with pytest.raises(ConfigError, match=r"mixed_precision: must be one of \('no', 'bf16', 'fp16'\), got 'fp8'"):
        TrainingConfig.from_dict(toy_dict(tmp_path, mixed_precision="fp8"))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_is_refused_on_cpu_naming_the_key_and_the_fix(tmp_path, precision):
    from mmflow.training import build_dataset

    config = TrainingConfig.from_dict(toy_dict(tmp_path, mixed_precision=precision))
    with pytest.raises(ConfigError, match=rf"^mixed_precision: {precision} is for GPUs.*Set mixed_precision: 'no'"):
        Trainer(config, build_model(config.model, config.seed), build_dataset(config))


def test_check_tracker_is_one_line(no_trackers):
    check_tracker("none")
    with pytest.raises(ConfigError) as error:
        check_tracker("tensorboard")
    assert str(error.value) == "tracker: 'tensorboard' is not installed (pip install tensorboard), or set tracker: none"


def test_mmflow_train_checks_the_tracker_before_the_data(tmp_path, no_trackers, data_work):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_dict(tmp_path, tracker="wandb")))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(ValueError, match=r"^tracker: 'wandb' is not installed \(pip install wandb\)"):
        command.run(parser.parse_args(["--config", str(config)]))
    assert data_work == [] and not (tmp_path / "run").exists()


def test_train_script_reports_the_tracker_in_one_line_before_the_data(tmp_path, no_trackers, data_work, caplog):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_dict(tmp_path, tracker="mlflow")))
    main = runpy.run_path(str(ROOT / "recipes" / "train.py"))["main"]
    assert main(["--config", str(config)]) == 2
    assert data_work == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["tracker: 'mlflow' is not installed (pip install mlflow), or set tracker: none"]


def test_jamflow_recipe_checks_the_tracker_before_any_data_work(tmp_path, no_trackers, data_work, monkeypatch, caplog):
    pytest.importorskip("espeakng_loader")
    recipe = pytest.importorskip("mmflow_jamflow.recipe")

    def no_work(*args, **kwargs):
        data_work.append(args)
        raise AssertionError("data work before the tracker check")

    monkeypatch.setattr(recipe, "_tokenizer", no_work)
    monkeypatch.setattr(recipe, "_normalizer", no_work)
    data = yaml.safe_load((ROOT / "recipes" / "configs" / "jamflow_tiny.yaml").read_text())
    data["tracker"] = "tensorboard"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(copy.deepcopy(data)))
    assert recipe.main(["--config", str(config), "--output-dir", str(tmp_path / "run")]) == 2
    assert data_work == []
    assert "tracker: 'tensorboard' is not installed" in caplog.text


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the planted pickle, refused on purpose
def test_fp16_resume_restores_the_loss_scale_and_refuses_a_pickle(tmp_path):
    """Under fp16 Accelerate saves the GradScaler as scaler.pt; a resume without it restarts the loss scale at
    65536 and is not exact. The CPU has no fp16, so a CPU GradScaler stands in for the GPU one."""
    import pickle

    import torch

    from mmflow.training import CheckpointError, build_dataset, latest_checkpoint

    config = TrainingConfig.from_dict(toy_dict(tmp_path, checkpoint={"every": 2, "keep_last": 1}))
    Trainer(config, build_model(config.model, config.seed), build_dataset(config)).fit(resume_from=None)
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    saved = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    saved._lazy_init_scale_growth_tracker(torch.device("cpu"))
    saved._growth_tracker.fill_(3)
    torch.save(saved.state_dict(), checkpoint / "scaler.pt")

    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = Trainer(config, build_model(config.model, config.seed), build_dataset(config))
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu")
    trainer.load_checkpoint(checkpoint)
    assert trainer.accelerator.scaler.state_dict() == saved.state_dict()

    (checkpoint / "scaler.pt").write_bytes(pickle.dumps(print))  # not plain data: refused, nothing run
    with pytest.raises(CheckpointError, match=r"scaler\.pt: refused to load the fp16 loss-scaler state"):
        trainer.load_checkpoint(checkpoint)
