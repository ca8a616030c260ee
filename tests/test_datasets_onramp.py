"""From a ``datasets`` dataset of (audio, text) rows to streamed training: ``preprocess_dataset`` writes the
training set, the trainer reads it as an ``IterableDataset`` (``data: {streaming: true}``), every row is seen in an
epoch, the loss is finite, batches are bucketed by length, and a streamed run resumes exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from mmflow.training import Trainer, TrainingConfig, build_dataset, build_model
from mmflow.training.streaming import bucketed

preprocess = pytest.importorskip("mmflow_jamflow.data.preprocess", reason="the JAM-Flow plugin preprocesses speech")
FRAME_RATE = pytest.importorskip("mmflow_audio_f5tts.mel").FRAME_RATE

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 16_000
NUM_ROWS = 8
VOCAB = list(" abcdefghijklmnopqrstuvwxyz.")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _speech(seconds: float, pitch: float) -> np.ndarray:
    time = np.arange(round(seconds * RATE)) / RATE
    return (0.05 * np.sin(2 * np.pi * pitch * time) * (1 + np.sin(2 * np.pi * 3 * time))).astype(np.float32)


def toy_rows() -> datasets.Dataset:
    """NUM_ROWS speech rows of 0.5-1.2 s ({array, sampling_rate}, as datasets' Audio decodes them) and one
    row without audio."""
    rng = np.random.default_rng(0)
    audio = [{"array": _speech(float(s), 150 + 10 * i), "sampling_rate": RATE}
             for i, s in enumerate(rng.uniform(0.5, 1.2, NUM_ROWS))]
    texts = [f"row number {chr(97 + i)}." for i in range(NUM_ROWS)]
    audio.append(None)
    texts.append("no audio here.")
    return datasets.Dataset.from_dict({"audio": audio, "transcription": texts})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onramp")
    vocab = root / "vocab.txt"
    vocab.write_text("".join(token + "\n" for token in VOCAB))
    preprocess.preprocess_dataset(toy_rows(), root / "out", vocab=vocab, tokenizer_mode="char", min_seconds=0.3,
                                  num_shards=2, progress=False)
    return root / "out"


def audio_config(tmp_path: Path, dataset: Path, **changes) -> dict:
    """A one-stream MMDiT on the mel column, streamed from ``dataset``: 8 rows, batches of 2 (4 steps an epoch)."""
    config = {
        "model": {"config": {"streams": {"audio": {
            "frame_rate": str(FRAME_RATE), "channels": 100, "backbone": "dit",
            "backbone_config": {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "ff_mult": 2,
                                "conv_pos_kernel": 7, "conv_pos_groups": 4}}}}},
        "data": {"path": str(dataset / "dataset"), "streaming": True, "shuffle_buffer": 4, "bucket_batches": 2},
        "total_steps": 4, "output_dir": str(tmp_path / "run"), "batch_size": 2, "log_every": 1,
        "checkpoint": {"every": 2, "keep_last": 3}, "schedule": {"name": "constant"},
        "sampling": {"every": 0},
    }
    return {**config, **changes}


def make_trainer(config: dict) -> Trainer:
    config = TrainingConfig.from_dict(copy.deepcopy(config))
    return Trainer(config, build_model(config.model, config.seed), build_dataset(config))


def test_preprocess_writes_sharded_rows_and_reports_the_broken_one(prepared):
    import json

    dataset = datasets.load_from_disk(str(prepared / "dataset"))
    assert len(dataset) == NUM_ROWS and "motion" not in dataset.column_names  # speech only: no motion columns
    assert len(list((prepared / "dataset").glob("data-*.arrow"))) == 2
    report = json.loads((prepared / "report.json").read_text())
    assert [(s["file"], s["reason"]) for s in report["skipped_files"]] == [("row-000008", "no_media")]
    assert report["streams"] == ["audio"] and report["clips"] == NUM_ROWS + 1
    row = dataset.with_format("numpy")[0]
    assert row["audio"].shape[1] == 100 and abs(len(row["audio"]) - float(row["seconds"]) * FRAME_RATE) <= 1


def test_streamed_training_sees_every_row_and_the_loss_is_finite(prepared, tmp_path):
    trainer = make_trainer(audio_config(tmp_path, prepared, checkpoint={"every": 0}))
    seen = []
    collate = trainer.sampler.collate
    trainer.sampler.collate = lambda rows: (seen.extend(r["source"] for r in rows), collate(rows))[1]
    history = trainer.fit(resume_from=None)
    assert len(history) == 4 and all(np.isfinite(h["loss"]) for h in history)
    assert sorted(seen) == [f"row-{i:06d}" for i in range(NUM_ROWS)]  # one epoch: every row exactly once
    assert trainer.epoch == 0 and trainer.loader is None  # streamed: not a prepared map-style loader


def test_streamed_run_resumes_exactly(prepared, tmp_path):
    config = audio_config(tmp_path, prepared, total_steps=6)  # 1.5 epochs: the resume lands mid-epoch 1
    full = make_trainer(config)
    losses = [h["loss"] for h in full.fit(resume_from=None)]
    weights = {k: v.clone() for k, v in full.unwrapped.state_dict().items()}
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()

    resumed = make_trainer({**config, "output_dir": str(tmp_path / "again")})
    checkpoint = Path(config["output_dir"]) / "checkpoints" / "step-00000004"
    again = [h["loss"] for h in resumed.fit(resume_from=checkpoint)]
    assert again == losses[4:]
    assert all(torch.equal(weights[k], v) for k, v in resumed.unwrapped.state_dict().items())


def test_streamed_checkpoint_is_not_resumed_map_style(prepared, tmp_path):
    config = audio_config(tmp_path, prepared, total_steps=2)
    make_trainer(config).fit(resume_from=None)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    map_style = {**config, "data": {**config["data"], "streaming": False}}
    with pytest.raises(ValueError, match="data.streaming"):
        make_trainer(map_style).fit(resume_from="auto")


def test_bucketing_buffer_groups_similar_lengths():
    rows = [{"n": n} for n in [9, 1, 8, 2, 7, 3, 6, 4]]
    batches = list(bucketed(iter(rows), 2, 4, lambda r: r["n"], np.random.default_rng(0)))
    assert sorted(sorted(r["n"] for r in b) for b in batches) == [[1, 2], [3, 4], [6, 7], [8, 9]]
    unbucketed = list(bucketed(iter(rows), 2, 1, lambda r: r["n"], np.random.default_rng(0)))
    assert [[r["n"] for r in b] for b in unbucketed] == [[1, 9], [2, 8], [3, 7], [4, 6]]  # pairs, in stream order
    leftover = list(bucketed(iter(rows[:5]), 2, 4, lambda r: r["n"], np.random.default_rng(0)))
    assert sum(len(b) for b in leftover) == 4  # the incomplete last batch is dropped


def test_a_source_streaming_with_load_dataset(prepared, tmp_path):
    """``data.source`` may return ``load_dataset(..., streaming=True)``; a run that is not streamed refuses it."""
    files = sorted(str(p) for p in (prepared / "dataset").glob("data-*.arrow"))
    data = {"source": "datasets:load_dataset", "streaming": True, "shuffle_buffer": 4, "bucket_batches": 2,
            "kwargs": {"path": "arrow", "data_files": files, "split": "train", "streaming": True}}
    trainer = make_trainer(audio_config(tmp_path, prepared, data=data, total_steps=2, checkpoint={"every": 0}))
    history = trainer.fit(resume_from=None)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    with pytest.raises(ValueError, match="set data.streaming: true"):
        make_trainer(audio_config(tmp_path, prepared, data={**data, "streaming": False}))
