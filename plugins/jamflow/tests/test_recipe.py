"""The JAM-Flow recipe (``mmflow_jamflow.recipe``, run by recipes/jamflow.py): the tiny config trains on the synthetic corpus, exports a JAMFlowPipeline that generates,
fine-tunes stage 2 from it (keeping its vocoder), and runs as two gloo processes."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, GradientState

from mmflow.testing import TWO_CPU_PROCESSES, accelerate_launch

pytest.importorskip("espeakng_loader")

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "jamflow.py"
TINY = ROOT / "recipes" / "configs" / "jamflow_tiny.yaml"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _config(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["data"]["kwargs"].update(num_clips=8, max_seconds=2.0, cache_dir=str(tmp_path / "corpus"))
    data.update(total_steps=2, batch_size=2, checkpoint={"every": 2, "keep_last": 1}, sampling={"every": 0},
                schedule={"name": "constant", "warmup_steps": 1})
    data.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tiny_recipe_exports_a_pipeline_that_generates_and_fine_tunes(tmp_path):
    from mmflow_jamflow import JAMFlowPipeline

    main = runpy.run_path(str(RECIPE))["main"]
    config = _config(tmp_path)
    stage1 = tmp_path / "stage1"
    assert main(["--config", str(config), "--stage", "stage1", "--output-dir", str(stage1)]) == 0
    pipe = JAMFlowPipeline.from_pretrained(stage1 / "pipeline")
    assert pipe.aligned and pipe.tokenizer.espeak_voice.name == "en-us"
    out = pipe("talking_head", "Open the door.", num_inference_steps=2, progress=False)
    seconds = len(out.audios[0]) / out.sample_rate
    assert abs(len(out.motions[0]) - seconds * 25) <= 1 and np.isfinite(out.audios[0]).all()

    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(["--config", str(config), "--stage", "stage1", "--output-dir", str(stage1), "--export-only",
                 str(tmp_path / "exported")]) == 0  # the newest checkpoint as a pipeline, without training
    assert JAMFlowPipeline.from_pretrained(tmp_path / "exported" / "pipeline").transformer.stream_names == pipe.transformer.stream_names

    # A pipeline with its own vocoder (as the embedded default has) keeps it through fine-tuning.
    from mmflow_audio_f5tts.vocoder import Vocos

    pipe.register_modules(vocoder=Vocos(dim=16, intermediate_dim=32, num_layers=1))
    pipe.save_pretrained(tmp_path / "with-vocoder")
    AcceleratorState._reset_state(reset_partial_state=True)
    stage2 = tmp_path / "stage2"
    assert main(["--config", str(config), "--stage", "stage2", "--output-dir", str(stage2),
                 "--pretrained-pipeline", str(tmp_path / "with-vocoder")]) == 0
    tuned = JAMFlowPipeline.from_pretrained(stage2 / "pipeline")
    assert isinstance(tuned.vocoder, Vocos)
    for name, value in pipe.vocoder.state_dict().items():
        assert torch.equal(tuned.vocoder.state_dict()[name], value), name


def test_bad_recipe_config_is_named(tmp_path):
    main = runpy.run_path(str(RECIPE))["main"]
    config = _config(tmp_path, batch_size=0)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "bad")]) == 2


@pytest.mark.parametrize(("section", "change", "message"), [
    ("pipeline", {"max_secondz": 4.0}, "pipeline: unknown key(s) ['max_secondz']"),
    ("pipeline", {"scheduler": {"num_inference_step": 16}}, "pipeline.scheduler: "),
    ("pipeline", {"max_seconds": 0.1}, "pipeline.max_seconds must be a number in [1, 120]"),
    ("pipeline", {"tokenizer": {"kind": "bpe"}}, "pipeline.tokenizer.kind: one of ('phonemes', 'f5')"),
    ("jamflow", {"motion_dimm": 64}, "jamflow: unknown key(s) ['motion_dimm']"),
])
def test_recipe_sections_are_checked_before_any_work(tmp_path, caplog, section, change, message):
    """A typo in the recipe's own sections is refused up front, naming the key (before data or training)."""
    main = runpy.run_path(str(RECIPE))["main"]
    data = yaml.safe_load(TINY.read_text())
    data[section] = {**data[section], **change}
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "run")]) == 2
    assert message in caplog.text
    assert not (tmp_path / "run").exists() and not (tmp_path / "corpus").exists()


def test_build_jamflow_and_the_recipe_build_the_same_architecture():
    """One builder: a recipe's ``jamflow`` section and ``build_jamflow``'s arguments give one MMDiT config."""
    from mmflow_jamflow.model import jamflow_model_config
    from mmflow_jamflow.recipe_config import JamflowSection

    section = JamflowSection(audio={"dim": 64, "depth": 2, "heads": 2, "dim_head": 32, "text_dim": 32,
                                    "conv_layers": 1, "text_conditioning": "aligned"}, motion_dim=32)
    config = jamflow_model_config(section.audio, 40, **section.options())
    backbone = config["streams"]["audio"]["backbone_config"]
    assert backbone["text_conditioning"] == "aligned" and backbone["isolate_padding"] is True
    assert config["streams"]["motion"]["backbone_config"]["depth"] == 2
    assert config["mask_policy"]["window_seconds"] == "0.25"


def test_two_processes_train_the_tiny_config(tmp_path):
    config = _config(tmp_path)
    result = accelerate_launch(TWO_CPU_PROCESSES, RECIPE, "--config", str(config), "--output-dir",
                               str(tmp_path / "ddp"), clear=[tmp_path / "ddp"])
    assert "2 process(es)" in result.stderr
    assert (tmp_path / "ddp" / "pipeline" / "model_index.json").is_file()


def test_tiny_recipe_resumes_with_the_same_losses(tmp_path, monkeypatch):
    """Stopped after step 2 and resumed, the JAM-Flow tiny run continues exactly as an uninterrupted one."""
    from mmflow.training import Trainer

    histories = []
    fit = Trainer.fit

    def recording_fit(self, *args, **kwargs):
        histories.append(fit(self, *args, **kwargs))
        return histories[-1]

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    main = runpy.run_path(str(RECIPE))["main"]
    config = _config(tmp_path, total_steps=4)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "whole")]) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "parts"), "--total-steps", "2"]) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "parts")]) == 0  # resumes at step 2
    whole, first, rest = histories
    assert [h["step"] for h in first + rest] == [1, 2, 3, 4]
    for ours, theirs in zip(first + rest, whole, strict=True):
        for key in ("loss", "loss/audio", "loss/motion", "grad_norm"):
            assert abs(ours[key] - theirs[key]) <= 1e-5, (ours["step"], key, ours[key], theirs[key])
