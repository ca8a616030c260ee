"""Hub-style ids (``org/name``) load from the local Hugging Face cache, as ``huggingface_hub`` resolves them offline,
through ``MMFlowPipeline.from_pretrained`` and ``mmflow generate --model``; no network call is made (issue 14)."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
import torch

from mmflow.pipeline import MMFlowPipeline

REPO_ID = "mmflow-test/tri-stream"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in a temp HF_HOME, offline, with every socket connection refused."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))  # read at import time by huggingface_hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return home / "hub"


@pytest.fixture
def cached(offline_cache, tri_stream_pipeline):
    """The three-stream example's saved pipeline as the cache entry of REPO_ID (the layout ``hf download`` writes:
    ``models--org--name/refs/main`` naming ``snapshots/<revision>/``)."""
    entry = offline_cache / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(tri_stream_pipeline, entry / "snapshots" / REVISION)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(REVISION)
    return entry / "snapshots" / REVISION


def test_a_cached_hub_id_loads_the_same_pipeline_as_its_folder(cached, tri_stream_pipeline):
    pipe = MMFlowPipeline.from_pretrained(REPO_ID)
    reference = MMFlowPipeline.from_pretrained(tri_stream_pipeline)
    assert type(pipe) is type(reference) and pipe.transformer.stream_names == reference.transformer.stream_names
    ours, theirs = pipe.transformer.state_dict(), reference.transformer.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert MMFlowPipeline.from_pretrained(REPO_ID, revision="main").transformer.stream_names == pipe.transformer.stream_names


def test_an_uncached_hub_id_is_named_with_the_fix(offline_cache):
    with pytest.raises(FileNotFoundError) as error:
        MMFlowPipeline.from_pretrained("someone/not-downloaded")
    message = str(error.value)
    assert "'someone/not-downloaded' is neither a folder nor a model in the local Hugging Face cache" in message
    assert str(offline_cache) in message and "hf download someone/not-downloaded" in message


def test_mmflow_generate_runs_a_cached_hub_id(cached, tmp_path):
    from mmflow.cli import main

    out = tmp_path / "out"
    assert main(["generate", "--model", REPO_ID, "--task", "tri_joint", "--duration", "1.5", "--steps", "2",
                 "--out", str(out)]) == 0
    pose = np.load(out / "sample.pose.npy")
    assert pose.shape == (15, 3) and np.isfinite(pose).all()


def test_mmflow_generate_names_an_uncached_hub_id(offline_cache, tmp_path, capsys):
    from mmflow.cli import main

    assert main(["generate", "--model", "someone/not-downloaded", "--task", "tri_joint", "--out",
                 str(tmp_path / "out")]) == 2
    assert "'someone/not-downloaded' is neither a folder nor a model in the local Hugging Face cache" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
