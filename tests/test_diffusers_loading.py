"""``diffusers.DiffusionPipeline.from_pretrained`` returns the right mmflow pipeline with all its components, for a
folder or a Hub id in the local cache, through diffusers' own loader; folders naming other modules are refused and
nothing in a folder is code (issue 14, item 1)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

import mmflow  # noqa: F401  (registers mmflow's pipelines and modules with diffusers)
from mmflow import FlowMatchingScheduler, MMDiT, MMFlowPipeline
from mmflow.testing import tiny_config

DEFAULT_MODEL = Path(__file__).parents[1] / "plugins/jamflow/mmflow_jamflow/default_model"
REVISION = "fedcba9876543210fedcba9876543210fedcba98"


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    ours, theirs = a.state_dict(), b.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny generic ``MMFlowPipeline`` (two streams, no plugin), saved by diffusers."""
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    MMFlowPipeline(MMDiT(**tiny_config(depth_a=1, depth_b=1)), FlowMatchingScheduler(num_inference_steps=3),
                   max_seconds=2.0).save_pretrained(folder)
    return folder


def test_the_embedded_default_loads_as_a_jamflow_pipeline_with_every_component():
    jamflow = pytest.importorskip("mmflow_jamflow.pipeline")
    pipe = DiffusionPipeline.from_pretrained(DEFAULT_MODEL)
    reference = jamflow.JAMFlowPipeline.from_pretrained(DEFAULT_MODEL)
    assert type(pipe) is jamflow.JAMFlowPipeline
    assert set(pipe.components) == {"transformer", "scheduler", "tokenizer", "motion_normalizer", "vocoder", "renderer"}
    for name in ("transformer", "motion_normalizer", "vocoder"):
        assert _same_weights(getattr(pipe, name), getattr(reference, name)), name
    assert pipe.renderer is None and pipe.config.max_seconds == reference.config.max_seconds
    assert pipe.tokenizer.get_vocab() == reference.tokenizer.get_vocab()
    assert dict(pipe.scheduler.config) == dict(reference.scheduler.config)


def test_a_generic_and_the_three_stream_pipelines_load_and_sample_like_their_own_loader(tiny_folder,
                                                                                          tri_stream_pipeline):
    tiny = DiffusionPipeline.from_pretrained(tiny_folder)
    assert type(tiny) is MMFlowPipeline and tiny.transformer.stream_names == ["fast", "slow"]
    assert _same_weights(tiny.transformer, MMFlowPipeline.from_pretrained(tiny_folder).transformer)
    pipe, reference = DiffusionPipeline.from_pretrained(tri_stream_pipeline), MMFlowPipeline.from_pretrained(
        tri_stream_pipeline)
    assert type(pipe) is MMFlowPipeline and pipe.transformer.stream_names == reference.transformer.stream_names
    call = {"duration": 1.0, "num_inference_steps": 2, "seed": 3, "output_type": "latent", "progress": False}
    ours, theirs = pipe("tri_joint", **call).latents[0], reference("tri_joint", **call).latents[0]
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs)


def test_a_saved_index_names_modules_and_classes_only(tiny_folder, tmp_path):
    DiffusionPipeline.from_pretrained(tiny_folder).save_pretrained(tmp_path / "again")
    index = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert index["transformer"] == ["mmflow.transformer", "MMDiT"]
    assert index["scheduler"] == ["mmflow.scheduler", "FlowMatchingScheduler"]
    text = json.dumps(index)
    assert str(tmp_path) not in text and str(tiny_folder) not in text and "_name_or_path" not in index


def _with_component(folder: Path, tmp_path: Path, module: str) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["transformer"] = [module, "MMDiT"]
    (copy / "model_index.json").write_text(json.dumps(index))
    return copy


@pytest.mark.parametrize("module, fix", [
    ("os", "nothing outside mmflow plugins is imported from a model folder"),
    ("mmflow_not_installed.model", r"install the plugin that provides it \(pip install mmflow-not-installed\)"),
])
def test_a_module_outside_the_installed_plugins_is_refused_before_any_import(tiny_folder, tmp_path, module, fix):
    folder = _with_component(tiny_folder, tmp_path, module)
    for load in (DiffusionPipeline.from_pretrained, MMFlowPipeline.from_pretrained):
        with pytest.raises(ImportError, match=rf"component 'transformer' of .* names the module '{module}', which "
                                              rf"belongs to no installed mmflow plugin .*; {fix}"):
            load(folder)


def test_an_unregistered_pipeline_class_is_not_found(tiny_folder, tmp_path):
    copy = tmp_path / "other"
    shutil.copytree(tiny_folder, copy)
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "_class_name": "NotRegisteredPipeline"}))
    with pytest.raises(AttributeError, match="has no attribute NotRegisteredPipeline"):
        DiffusionPipeline.from_pretrained(copy)


def test_a_python_file_in_a_folder_is_never_imported(tiny_folder, tmp_path):
    folder = _with_component(tiny_folder, tmp_path, "mmflow.transformer")
    marker = tmp_path / "ran"
    (folder / "transformer" / "mmflow.transformer.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(folder)
    for unsafe in ({"trust_remote_code": True}, {"custom_pipeline": "pipeline"}):
        with pytest.raises(ValueError, match=f"{next(iter(unsafe))}=: mmflow never runs code from a model folder"):
            MMFlowPipeline.from_pretrained(folder, **unsafe)
    assert not marker.exists()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch, tiny_folder):
    """``org/tiny`` in an offline Hugging Face cache (the layout ``hf download`` writes), sockets refused."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    entry = cache / "models--org--tiny"
    shutil.copytree(tiny_folder, entry / "snapshots" / REVISION)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(REVISION)
    return cache


def test_a_cached_hub_id_loads_offline_through_diffusers(offline_hub, tiny_folder, monkeypatch):
    from huggingface_hub import constants

    pipe = DiffusionPipeline.from_pretrained("org/tiny")
    assert type(pipe) is MMFlowPipeline
    assert _same_weights(pipe.transformer, MMFlowPipeline.from_pretrained(tiny_folder).transformer)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # not offline: local_files_only alone must not reach the network either
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert type(DiffusionPipeline.from_pretrained("org/tiny", local_files_only=True)) is MMFlowPipeline


def test_a_jamflow_pipeline_with_a_liveportrait_renderer_loads_it(tmp_path):
    """The optional renderer component (LivePortrait's networks) comes back through diffusers' loader too."""
    jamflow = pytest.importorskip("mmflow_jamflow.pipeline")
    from mmflow_motion_liveportrait.renderer_weights import LivePortraitComponents

    small = {"block_expansion": 8, "max_features": 64, "reshape_channel": 4}
    dense = {"block_expansion": 8, "max_features": 64, "num_blocks": 3, "reshape_depth": 16, "compress": 2}
    renderer = LivePortraitComponents(
        appearance_feature_extractor_config={**small, "reshape_depth": 16, "num_resblocks": 1},
        warping_module_config={**small, "dense_motion_params": dense},
        spade_generator_config={"block_expansion": 8, "max_features": 64}, use_stitching=False)
    pipe = jamflow.JAMFlowPipeline.from_pretrained(DEFAULT_MODEL)
    pipe.register_modules(renderer=renderer)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["renderer"] == ["mmflow_motion_liveportrait.renderer_weights", "LivePortraitComponents"]
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded) is jamflow.JAMFlowPipeline and _same_weights(loaded.renderer, pipe.renderer)


def test_import_mmflow_loads_no_plugin_until_diffusers_asks_for_a_pipeline():
    """Registration is lazy: ``import mmflow`` stays cheap; the registry loads when diffusers meets an unknown class
    name, and lower-case or private misses never load it."""
    import subprocess
    import sys

    code = ("import mmflow, diffusers, mmflow.plugins as p\n"
            "assert p._REGISTRY is None\n"
            "assert not hasattr(diffusers, 'not_a_pipeline') and not hasattr(diffusers, '_Private')\n"
            "assert p._REGISTRY is None\n"
            "assert diffusers.MMFlowPipeline is mmflow.MMFlowPipeline and p._REGISTRY is not None\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
