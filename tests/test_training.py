"""The training machinery: config checks, collation and bucketing, the Accelerate trainer (1 and 2 processes),
exact resume, stage freezing, crash-safe checkpoints."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from accelerate.data_loader import BatchSamplerShard
from accelerate.state import AcceleratorState, GradientState

from mmflow import MMDiT, StreamSpec
from mmflow.testing import TWO_CPU_PROCESSES, accelerate_launch, randomize
from mmflow.training import (
    CheckpointError,
    ConfigError,
    LengthBucketSampler,
    MultiStreamCollator,
    Trainer,
    TrainingConfig,
    build_dataset,
    build_model,
    latest_checkpoint,
    list_checkpoints,
    resolve_columns,
    row_seconds,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # 4 times faster on a busy 2-core machine (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "examples" / "toy_gesture" / "mmflow_toy_gesture" / "configs" / "toy.yaml"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each trainer builds its own Accelerator; accelerate keeps process-wide state, so reset it in between."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def toy_dict(tmp_path: Path, **changes) -> dict:
    """The toy recipe config, shrunk for tests: 20 clips, batches of 2, accumulation 2 (5 steps an epoch)."""
    data = yaml.safe_load(TOY.read_text())
    data.update(output_dir=str(tmp_path / "run"), total_steps=8, batch_size=2, gradient_accumulation=2, log_every=1,
                checkpoint={"every": 3, "keep_last": 2}, sampling={"every": 0},
                schedule={"name": "cosine", "warmup_steps": 2})
    data["data"]["kwargs"] = {"num_clips": 20, "min_seconds": 0.6, "max_seconds": 1.2, "seed": 0}
    for key, value in changes.items():
        data[key] = value
    return data


def make_trainer(data: dict, random_weights: bool = False) -> Trainer:
    """A trainer for ``data``; ``random_weights`` replaces the zero-initialised output layers (which would
    keep most gradients at zero for the first steps) with random values."""
    config = TrainingConfig.from_dict(copy.deepcopy(data))
    model = build_model(config.model, config.seed)
    return Trainer(config, randomize(model) if random_weights else model, build_dataset(config))


def python_path() -> str:
    """PYTHONPATH for a subprocess: this checkout first, then whatever this process was given."""
    return os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------------ config


def test_toy_config_loads():
    config = TrainingConfig.from_yaml(TOY)
    assert config.mixed_precision == "no" and config.stage == "stage2"
    assert config.stages["stage1"].frozen == ["signal"]
    assert config.optimizer.lr == pytest.approx(2e-3) and config.optimizer.betas == (0.9, 0.99)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"totl_steps": 5}, "unknown key(s) ['totl_steps']; allowed keys: ["),
        ({"optimizer": {"lr": 0.0}}, "optimizer.lr: must be > 0"),
        ({"optimizer": {"learning_rate": 1e-3}}, "optimizer: unknown key(s) ['learning_rate']"),
        ({"gradient_accumulation": 0}, "gradient_accumulation: must be >= 1"),
        ({"schedule": {"name": "cosine", "warmup_steps": 100}}, "100 warm-up steps do not fit in total_steps=8"),
        ({"schedule": {"name": "step"}}, "schedule.name: must be one of"),
        ({"stage": "stage3"}, "unknown stage 'stage3'; defined stages: ['stage1', 'stage2']"),
        ({"mixed_precision": "fp8"}, "mixed_precision: must be one of ('no', 'bf16', 'fp16')"),
        ({"ema": {"decay": 1.0}}, "ema.decay: must be in (0, 1)"),
        ({"objective": {"span_fraction": [0.0, 1.0]}}, "objective.span_fraction: must be [low, high]"),
        ({"model": {"config": {}, "pretrained": "x"}}, "give exactly one of `config`"),
        ({"batch_size": "four"}, "batch_size: expected int"),
        ({"tracker": "tensorbored"}, "tracker: must be one of"),
    ],
)
def test_config_errors_name_the_key(tmp_path, change, message):
    data = toy_dict(tmp_path)
    data.update(change)
    with pytest.raises(ConfigError) as error:
        TrainingConfig.from_dict(data)
    assert message in str(error.value)


def test_yaml_quirks_and_file_errors(tmp_path):
    path = tmp_path / "c.yaml"
    data = toy_dict(tmp_path)
    text = yaml.safe_dump(data).replace("mixed_precision: 'no'", "mixed_precision: no")
    path.write_text(text.replace("lr: 0.002", "lr: 1e-3"))  # YAML reads 1e-3 as a string
    config = TrainingConfig.from_yaml(path)
    assert config.mixed_precision == "no" and config.optimizer.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="does not exist"):
        TrainingConfig.from_yaml(tmp_path / "missing.yaml")
    path.write_text("stage: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainingConfig.from_yaml(path)


def test_objective_and_stage_must_name_model_streams(tmp_path):
    data = toy_dict(tmp_path, objective={"condition_dropout": {"audio": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown stream\(s\) \['audio'\]; the model has streams"):
        make_trainer(data)
    data = toy_dict(tmp_path, stages={"s": {"frozen": ["audio"]}}, stage="s")
    with pytest.raises(ValueError, match=r"stage 's' freezes unknown stream\(s\) \['audio'\]"):
        make_trainer(data)


def test_bf16_is_refused_on_cpu(tmp_path):
    with pytest.raises(ConfigError, match="bf16 is for GPUs"):
        make_trainer(toy_dict(tmp_path, mixed_precision="bf16"))


# ------------------------------------------------------------------------------------------------ data


def test_collate_pads_and_marks_valid_frames():
    specs = {"a": StreamSpec("a", 50, channels=2, cond_channels=1), "b": StreamSpec("b", 15, channels=3)}
    rows = [
        {"a": np.ones((10, 2)), "a_cond": np.ones((10, 1)), "b": np.ones((3, 3)), "tok": [5, 6, 7]},
        {"a": np.ones((4, 2)), "a_cond": np.ones((4, 1)), "b": np.ones((1, 3)), "tok": [8]},
    ]
    columns = resolve_columns(specs, ["a", "a_cond", "b", "tok"], {"b": {"extras": {"text": "tok"}}})
    batches = MultiStreamCollator(specs, columns)(rows)
    a, b = batches["a"], batches["b"]
    assert a.latent.shape == (2, 10, 2) and a.cond.shape == (2, 10, 1) and b.latent.shape == (2, 3, 3)
    assert a.lengths.tolist() == [10, 4] and b.lengths.tolist() == [3, 1]
    assert not a.given.any() and a.latent[1, 4:].abs().sum() == 0 and a.cond[1, 4:].abs().sum() == 0
    assert b.extras["text"].tolist() == [[5, 6, 7], [8, -1, -1]]
    with pytest.raises(ValueError, match=r"needs dataset column\(s\) \['a_cond'\]"):
        resolve_columns(specs, ["a", "b"])
    with pytest.raises(ValueError, match="expected time-major"):
        MultiStreamCollator(specs, columns)([{**rows[0], "a": np.ones((2, 10))}])


def test_toy_dataset_rows_and_durations():
    config = TrainingConfig.from_yaml(TOY)
    config.data.kwargs = {"num_clips": 12, "min_seconds": 0.6, "max_seconds": 1.2, "seed": 3}
    dataset = build_dataset(config)
    model = build_model(config.model)
    columns = resolve_columns(model.specs, dataset.column_names)
    seconds = row_seconds(dataset, columns, model.specs)
    np.testing.assert_allclose(seconds, np.asarray(dataset["seconds"]), atol=0.011)  # within one 50 Hz frame
    shuffled = dataset.shuffle(seed=0)  # an index mapping over the same table
    np.testing.assert_allclose(row_seconds(shuffled, columns, model.specs), np.asarray(shuffled["seconds"]), atol=0.011)
    batches = MultiStreamCollator(model.specs, columns)([dataset.with_format("torch")[i] for i in range(4)])
    assert batches["signal"].latent.shape[-1] == 1 and batches["gesture"].valid.any(1).all()


def test_bucket_sampler_groups_durations_and_shards_like_accelerate():
    lengths = np.random.default_rng(0).uniform(1, 10, size=103)
    sampler = LengthBucketSampler(lengths, batch_size=4, num_replicas=2, seed=1, bucket_batches=8)
    first = list(sampler)
    assert len(first) == len(sampler) == 24  # 25 full batches, rounded down to a multiple of 2 ranks
    assert all(len(b) == 4 for b in first) and len({i for b in first for i in b}) == 96
    spread = np.mean([np.ptp(lengths[b]) for b in first])
    assert spread < 0.25 * np.mean([np.ptp(lengths[i : i + 4]) for i in range(0, 96, 4)])
    assert list(sampler) == first  # the epoch fixes the order
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    shards = [list(LengthBucketSampler(lengths, 4, num_replicas=2, rank=r, seed=1, bucket_batches=8)) for r in (0, 1)]
    assert shards == [list(BatchSamplerShard(sampler, num_processes=2, process_index=r)) for r in (0, 1)]
    assert not {i for b in shards[0] for i in b} & {i for b in shards[1] for i in b}
    with pytest.raises(ValueError, match="cannot fill one batch"):
        LengthBucketSampler(lengths[:3], batch_size=4)


# ------------------------------------------------------------------------------------------------ trainer


def test_train_a_few_steps_then_export_and_sample(tmp_path):
    data = toy_dict(tmp_path, total_steps=4, sampling={"every": 4, "steps": 2, "batch_size": 2})
    trainer = make_trainer(data)
    start = params(trainer.unwrapped)
    history = trainer.fit()
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(np.isfinite(h["loss"]) and h["grad_norm"] > 0 for h in history)
    assert history[0]["lr"] < history[1]["lr"]  # linear warm-up
    run = Path(data["output_dir"])
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-00000003", "step-00000004"]
    assert (run / "samples" / "step-00000004.safetensors").is_file()
    exported = MMDiT.from_pretrained(run / "model")
    ema = trainer.ema.shadow
    for name, p in exported.named_parameters():
        torch.testing.assert_close(p, ema[name], rtol=0, atol=0)
    assert any(not torch.equal(p, start[n]) for n, p in trainer.unwrapped.named_parameters())
    assert not list(run.rglob(".*tmp"))


def with_dropout(data: dict, p: float = 0.2) -> dict:
    """``data`` with dropout in every backbone: it draws from the global generator, which a resume must restore."""
    for stream in data["model"]["config"]["streams"].values():
        stream["backbone_config"]["dropout"] = p
    return data


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> dict:
    """8 steps without a stop, with dropout (5 steps an epoch, checkpoints at 3 and 6): the reference."""
    trainer = make_trainer(with_dropout(toy_dict(tmp_path_factory.mktemp("straight"))), random_weights=True)
    history = trainer.fit()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return {"history": history, "weights": params(trainer.unwrapped), "ema": dict(trainer.ema.shadow),
            "checkpoints": Path(trainer.output_dir) / "checkpoints"}


def assert_same_run(history: list[dict], weights: dict, ema: dict, reference: dict):
    """Every metric but the wall time, every weight and every EMA weight equal the reference's, bit for bit."""
    for ours, theirs in zip(history, reference["history"][-len(history):], strict=True):
        assert {k: v for k, v in ours.items() if k != "step_seconds"} == {
            k: v for k, v in theirs.items() if k != "step_seconds"}, ours["step"]
    assert weights.keys() == reference["weights"].keys() and ema.keys() == reference["ema"].keys()
    for name in weights:
        assert torch.equal(weights[name], reference["weights"][name]), name
    for name in ema:  # the trainable weights (with LoRA: the factors only)
        assert torch.equal(ema[name], reference["ema"][name]), name


def stopped_after_first_checkpoint(data: dict, monkeypatch) -> Trainer:
    """A trainer for ``data`` run until its first checkpoint is saved, then stopped as by Ctrl-C."""
    first = make_trainer(data, random_weights=True)
    save = first.save_checkpoint

    def save_then_stop():
        save()
        raise KeyboardInterrupt("stopped after the first checkpoint")

    monkeypatch.setattr(first, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    AcceleratorState._reset_state(reset_partial_state=True)
    return first


def test_resume_is_bit_exact_with_dropout(tmp_path, monkeypatch, straight_run):
    # 3 steps, save, stop; a fresh trainer resumes and runs 5 more (crossing an epoch boundary mid-way)
    data = with_dropout(toy_dict(tmp_path))
    first = stopped_after_first_checkpoint(data, monkeypatch)

    second = make_trainer(data, random_weights=True)
    tail = second.fit()  # resume_from="auto": the newest checkpoint in the output folder, step 3
    assert [h["step"] for h in first.history] == [1, 2, 3] and [h["step"] for h in tail] == [4, 5, 6, 7, 8]
    assert_same_run(first.history + tail, params(second.unwrapped), second.ema.shadow, straight_run)
    exported = MMDiT.from_pretrained(Path(data["output_dir"]) / "model")
    for name, p in exported.named_parameters():
        assert torch.equal(p, straight_run["ema"][name]), name

    # and resuming the uninterrupted run's own step-6 checkpoint gives its last two steps
    AcceleratorState._reset_state(reset_partial_state=True)
    third = make_trainer(with_dropout(toy_dict(tmp_path / "from-6")), random_weights=True)
    tail = third.fit(resume_from=straight_run["checkpoints"] / "step-00000006")
    assert [h["step"] for h in tail] == [7, 8]
    assert_same_run(tail, params(third.unwrapped), third.ema.shadow, straight_run)


def test_a_trainer_has_its_process_group_ended_at_exit(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("mmflow.training.trainer.end_process_group_at_exit", lambda: calls.append(1))
    make_trainer(toy_dict(tmp_path))
    assert calls == [1]  # tests/test_process_group.py: what the handler does


def test_stage1_freezes_the_signal_backbone(tmp_path):
    trainer = make_trainer(toy_dict(tmp_path, stage="stage1", total_steps=3), random_weights=True)
    start = params(trainer.unwrapped)
    trainer.fit()
    frozen = {n for n in start if n.startswith("backbones.signal.")}
    assert frozen and set(trainer.parameter_status["frozen"]) == frozen
    assert set(trainer.ema.shadow) == set(start) - frozen
    for name, p in trainer.unwrapped.named_parameters():
        if name in frozen:
            assert torch.equal(p, start[name]), name
    changed = [n for n, p in trainer.unwrapped.named_parameters() if n not in frozen and not torch.equal(p, start[n])]
    # the gesture backbone trains, its projections at the joint steps included
    assert "backbones.gesture.transformer_blocks.0.attn.to_q.weight" in changed
    assert len(changed) == len(set(start) - frozen)


KILLED_MID_SAVE_SCRIPT = """
import copy, os, signal, sys, torch, yaml
from mmflow.testing import randomize
from mmflow.training import Trainer, TrainingConfig, build_dataset, build_model
torch.set_num_threads(int(sys.argv[2]))  # as many as the reference run: the sums must add up in the same order
config = TrainingConfig.from_dict(yaml.safe_load(open(sys.argv[1])))
trainer = Trainer(config, randomize(build_model(config.model, config.seed)), build_dataset(config))
save_state, saves = trainer.accelerator.save_state, []

def save_state_then_die(folder):
    saves.append(folder)
    save_state(folder)  # model, optimizer, scheduler and RNG files written; the trainer's own not yet
    if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, as with a power cut or the OOM killer

trainer.accelerator.save_state = save_state_then_die
trainer.fit()
"""


@pytest.mark.slow
def test_killed_mid_save_keeps_the_last_checkpoint_and_resumes_bit_exact(tmp_path, straight_run):
    data = with_dropout(toy_dict(tmp_path))
    config_path, script = tmp_path / "c.yaml", tmp_path / "killed.py"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))  # the stream order makes the model
    script.write_text(KILLED_MID_SAVE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": python_path()}
    result = subprocess.run([sys.executable, str(script), str(config_path), str(torch.get_num_threads())], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr[-3000:]  # killed by the signal, while saving step 6
    root = Path(data["output_dir"]) / "checkpoints"
    assert latest_checkpoint(root).name == "step-00000003"
    assert (root / ".step-00000006.tmp").is_dir()  # the half-written save, hidden and ignored

    resumed = make_trainer(data, random_weights=True)
    history = resumed.fit()  # from step 3, as if steps 4-6 had never run
    assert [h["step"] for h in history] == [4, 5, 6, 7, 8]
    assert_same_run(history, params(resumed.unwrapped), resumed.ema.shadow, straight_run)
    assert [p.name for p in list_checkpoints(root)] == ["step-00000006", "step-00000008"]
    assert not (root / ".step-00000006.tmp").exists()


def test_out_of_memory_names_the_batch_size(tmp_path, monkeypatch):
    trainer = make_trainer(toy_dict(tmp_path))

    def oom(batches):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "_micro_step", oom)
    with pytest.raises(RuntimeError, match=r"batch_size=2 per process.*gradient_accumulation"):
        trainer.fit()


def test_resume_refuses_a_checkpoint_of_another_stage(tmp_path):
    data = toy_dict(tmp_path, total_steps=3)
    make_trainer(data).fit()
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(ValueError, match="is from stage 'stage2', this run trains stage 'stage1'"):
        make_trainer({**data, "stage": "stage1"}).fit()


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    data = toy_dict(tmp_path, total_steps=3)
    make_trainer(data).fit()
    AcceleratorState._reset_state(reset_partial_state=True)
    wider = copy.deepcopy(data)
    for stream in wider["model"]["config"]["streams"].values():
        stream["backbone_config"]["dim"] *= 2
    with pytest.raises(ValueError, match=r"holds another model than this run builds \(shape mismatches"):
        make_trainer(wider).fit()


# ------------------------------------------------------------------------------------------------ resume safety

READ_ON_RESUME = ["ema.safetensors", "model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin",
                  "trainer_state_0.pt"]


class _Payload:
    """Unpickled in full, this creates the folder ``marker``: a stand-in for what a hostile checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> tuple[dict, Path]:
    data = toy_dict(tmp_path_factory.mktemp("safety"), total_steps=3)
    make_trainer(data).fit()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return data, latest_checkpoint(Path(data["output_dir"]) / "checkpoints")


def test_a_checkpoint_holds_only_files_a_resume_reads_safely(toy_checkpoint):
    # the files a resume reads are each tested below; the config copy is for people and is never read back
    assert sorted(p.name for p in toy_checkpoint[1].iterdir()) == sorted([*READ_ON_RESUME, "training_config.yaml"])


@pytest.mark.parametrize("name", [*READ_ON_RESUME, "custom_checkpoint_0.pkl"])
def test_resume_refuses_a_planted_pickle_and_runs_none_of_it(tmp_path, toy_checkpoint, name):
    data, checkpoint = toy_checkpoint
    folder = tmp_path / checkpoint.name
    shutil.copytree(checkpoint, folder)
    if name == "custom_checkpoint_0.pkl":  # where Accelerate kept the EMA in older checkpoints
        (folder / "ema.safetensors").unlink(missing_ok=True)
    marker = tmp_path / "code-ran"
    torch.save({"state": _Payload(marker)}, folder / name)
    trainer = make_trainer({**data, "output_dir": str(tmp_path / "run")})
    with pytest.raises(CheckpointError, match=re.escape(str(folder / name))):
        trainer.fit(resume_from=folder)
    assert not marker.exists()


def test_train_recipe_refuses_a_hostile_checkpoint_with_exit_code_2(tmp_path, toy_checkpoint, caplog):
    import runpy

    data, checkpoint = toy_checkpoint
    folder = tmp_path / checkpoint.name
    shutil.copytree(checkpoint, folder)
    marker = tmp_path / "code-ran"
    torch.save({"state": _Payload(marker)}, folder / "optimizer.bin")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    main = runpy.run_path(str(ROOT / "recipes" / "train.py"))["main"]
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "run"), "--resume", str(folder)]) == 2
    assert f"{folder / 'optimizer.bin'}: refused to load the optimizer state" in caplog.text
    assert "unsupported GLOBAL os.makedirs" in caplog.text and "weights_only" not in caplog.text  # no bad advice
    assert not marker.exists()


def test_vocoder_recipe_refuses_a_hostile_checkpoint_with_exit_code_2(tmp_path, caplog):
    pytest.importorskip("espeakng_loader")  # the recipe's corpus speech
    from mmflow_audio_f5tts import vocoder_recipe as recipe

    config = tmp_path / "vocoder.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "run"), "total_steps": 2, "batch_size": 2, "segment_seconds": 0.25,
        "warmup_steps": 1, "corpus": {"num_clips": 2, "voices": ["en-us"], "min_seconds": 1.0, "max_seconds": 2.0},
        "vocoder": {"dim": 8, "intermediate_dim": 16, "num_layers": 1}, "checkpoint": {"every": 2},
        "held_out": {"sentences": 0}}))
    assert recipe.main(["--config", str(config)]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    marker = tmp_path / "code-ran"
    for name in ("trainer_state_0.pt", "random_states_0.pkl"):
        original = (checkpoint / name).read_bytes()
        torch.save({"state": _Payload(marker)}, checkpoint / name)
        assert recipe.main(["--config", str(config), "--resume", str(checkpoint)]) == 2
        assert f"{checkpoint / name}: refused to load" in caplog.text and not marker.exists()
        (checkpoint / name).write_bytes(original)
    assert recipe.main(["--config", str(config), "--total-steps", "3"]) == 0  # the restored checkpoint resumes


# ------------------------------------------------------------------------------------------------ 2 processes

TWO_RANK_SCRIPT = """
import json, sys, torch
from mmflow.training import Trainer, TrainingConfig, build_dataset, build_model, latest_checkpoint
config = TrainingConfig.from_yaml(sys.argv[1])
trainer = Trainer(config, build_model(config.model, config.seed), build_dataset(config))
history = trainer.fit()
acc = trainer.accelerator
flat = torch.cat([p.detach().flatten() for p in trainer.unwrapped.parameters()])
gathered = acc.gather(flat[None])
trainer.load_checkpoint(latest_checkpoint(trainer.output_dir / "checkpoints"))  # the last step's: the same weights
reloaded = torch.cat([p.detach().flatten() for p in trainer.unwrapped.parameters()])
if acc.is_main_process:
    report = {"world": acc.num_processes, "type": str(acc.distributed_type), "losses": [h["loss"] for h in history],
              "rank_diff": (gathered[0] - gathered[1]).abs().max().item(), "batches": len(trainer.loader),
              "reload_diff": (reloaded - flat).abs().max().item()}
    open(sys.argv[2], "w").write(json.dumps(report))
acc.wait_for_everyone()
acc.end_training()  # as mmflow train ends
"""


@pytest.mark.slow
def test_two_processes_stay_in_sync(tmp_path):
    data = toy_dict(tmp_path, total_steps=4, checkpoint={"every": 2, "keep_last": 1})
    config_path, script, report_path = tmp_path / "c.yaml", tmp_path / "two_ranks.py", tmp_path / "report.json"
    config_path.write_text(yaml.safe_dump(data))
    script.write_text(textwrap.dedent(TWO_RANK_SCRIPT))
    accelerate_launch(TWO_CPU_PROCESSES, script, str(config_path), str(report_path), python_path=[ROOT],
                      clear=[data["output_dir"]])
    report = json.loads(report_path.read_text())
    assert report["world"] == 2 and report["type"] == "DistributedType.MULTI_CPU"
    assert report["batches"] == 5  # 20 clips / batch 2 = 10 batches, dealt to 2 ranks
    assert report["rank_diff"] == 0.0 and report["reload_diff"] == 0.0 and all(np.isfinite(report["losses"]))
    checkpoint = latest_checkpoint(Path(data["output_dir"]) / "checkpoints")
    assert {"trainer_state_0.pt", "trainer_state_1.pt", "random_states_0.pkl", "random_states_1.pkl"} <= {
        p.name for p in checkpoint.iterdir()
    }


# ------------------------------------------------------------------------------------------------ recipe


def test_recipe_runs_stage1_then_fine_tunes_stage2(tmp_path):
    import runpy

    main = runpy.run_path(str(ROOT / "recipes" / "train.py"))["main"]
    stage1 = tmp_path / "stage1"
    assert main(["--config", str(TOY), "--stage", "stage1", "--output-dir", str(stage1), "--total-steps", "4"]) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    stage2 = tmp_path / "stage2"
    assert main(["--config", str(TOY), "--stage", "stage2", "--output-dir", str(stage2), "--total-steps", "4",
                 "--pretrained", str(stage1 / "model")]) == 0
    assert (stage2 / "model" / "config.json").is_file() and latest_checkpoint(stage2 / "checkpoints").name.endswith("4")
    # the toy plugin's own YAML and dataset source trained it; it generates through the generic pipeline
    from mmflow.pipeline import MMFlowPipeline

    pipe = MMFlowPipeline.from_pretrained(stage2 / "pipeline")
    signal = torch.randn(60, 1, generator=torch.Generator().manual_seed(0))
    out = pipe("gesture_from_signal", signal=signal.numpy(), num_inference_steps=2, progress=False).outputs[0]
    assert out["gesture"].shape == (18, 1) and torch.equal(torch.from_numpy(out["signal"]), signal)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(["--config", str(TOY), "--total-steps", "2", "--output-dir", str(tmp_path / "bad")]) == 2  # warm-up 4


# ------------------------------------------------------------------------------------------------ LoRA


def test_lora_trains_only_the_low_rank_factors_and_exports_merged(tmp_path):
    from peft.tuners.lora import LoraLayer

    data = toy_dict(tmp_path, total_steps=3, lora={"rank": 2, "alpha": 4.0})
    trainer = make_trainer(data, random_weights=True)  # a "pretrained" model: LoRA needs non-zero outputs
    model = trainer.unwrapped
    wrapped = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(wrapped) == 4 * 4  # q, k, v, out of 2 + 2 blocks
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer.fit()
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert any(m.lora_B["default"].weight.abs().sum() > 0 for m in wrapped)  # the update learned something
    exported = MMDiT.from_pretrained(Path(data["output_dir"]) / "model")  # an ordinary MMDiT
    batches = {n: b for n, b in trainer.collate([trainer.dataset[i] for i in range(2)]).items()}
    x = {n: torch.randn_like(b.latent) for n, b in batches.items()}
    t = torch.full((2,), 0.5)
    with trainer.ema.swapped_into(model), torch.no_grad():
        expected = model.eval()(x, t, batches)
    got = exported.eval()(x, t, batches)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("export", ["adapter", "both"])
def test_lora_export_keeps_the_adapter_apart(tmp_path, export):
    """`lora.export: adapter` writes the base weights plus the adapter (OUTPUT/lora); loaded back on the base
    model the adapter gives the merged model's outputs; `both` writes the merged model as well."""
    from mmflow.lora_loading import MMFlowLoraLoaderMixin
    from mmflow.pipeline import MMFlowPipeline
    from mmflow.scheduler import FlowMatchingScheduler
    from mmflow.training.lora import lora_merged

    data = toy_dict(tmp_path, total_steps=3, lora={"rank": 2, "alpha": 4.0, "export": export})
    trainer = make_trainer(data, random_weights=True)
    trainer.fit()
    output = Path(data["output_dir"])
    assert (output / "lora" / "pytorch_lora_weights.safetensors").is_file()
    batches = dict(trainer.collate([trainer.dataset[i] for i in range(2)]))
    x = {n: torch.randn_like(b.latent) for n, b in batches.items()}
    t = torch.full((2,), 0.5)
    model = trainer.unwrapped
    with trainer.ema.swapped_into(model), torch.no_grad():
        merged = model.eval()(x, t, batches)
        with lora_merged(model, merge=False):
            base = model(x, t, batches)
    exported = MMDiT.from_pretrained(output / "model").eval()
    with torch.no_grad():
        got = exported(x, t, batches)
    for name in merged:
        torch.testing.assert_close(got[name], merged[name] if export == "both" else base[name], rtol=1e-4, atol=1e-5)
    pipe = MMFlowPipeline(MMDiT.from_pretrained(output / "model"), FlowMatchingScheduler())
    assert isinstance(pipe, MMFlowLoraLoaderMixin)
    if export == "adapter":
        pipe.load_lora_weights(output / "lora")
        with torch.no_grad():
            adapted = pipe.transformer.eval()(x, t, batches)
        for name in merged:
            torch.testing.assert_close(adapted[name], merged[name], rtol=1e-4, atol=1e-5)


def test_lora_resume_is_bit_exact(tmp_path, monkeypatch):
    """The peft adapter's factors, their optimizer state, EMA and dropout come back exactly from a checkpoint."""
    lora = {"rank": 2, "alpha": 4.0, "dropout": 0.1}
    straight = make_trainer(with_dropout(toy_dict(tmp_path / "straight", total_steps=6, lora=lora)), True)
    reference = {"history": straight.fit(), "weights": params(straight.unwrapped), "ema": dict(straight.ema.shadow)}
    assert all(".lora_" in name for name in reference["ema"])
    AcceleratorState._reset_state(reset_partial_state=True)

    data = with_dropout(toy_dict(tmp_path / "stopped", total_steps=6, lora=lora))
    first = stopped_after_first_checkpoint(data, monkeypatch)
    second = make_trainer(data, random_weights=True)
    tail = second.fit()
    assert [h["step"] for h in tail] == [4, 5, 6]
    assert_same_run(first.history + tail, params(second.unwrapped), second.ema.shadow, reference)


def test_lora_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="lora.rank"):
        TrainingConfig.from_dict(toy_dict(tmp_path, lora={"rank": -1}))
    with pytest.raises(ValueError, match="match no trainable linear"):
        make_trainer(toy_dict(tmp_path, lora={"rank": 2, "targets": ["nonexistent"]}))
