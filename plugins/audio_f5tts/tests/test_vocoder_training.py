"""Vocoder training: the spectral losses, the segment sampler, a few optimisation steps, and the vocoder recipe
(``mmflow_audio_f5tts.vocoder_recipe``, which ``recipes/vocoder.py`` runs)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mmflow_audio_f5tts.mel import HOP_LENGTH, SAMPLE_RATE, MelSpectrogram
from mmflow_audio_f5tts.vocoder import GriffinLimVocoder, Vocos, load_vocoder
from mmflow_audio_f5tts.vocoder_training import (
    MelLoss,
    MultiResolutionSTFTLoss,
    SegmentSampler,
    VocoderLoss,
    resynthesis_mel_l1,
)

from mmflow.training.config import ConfigError


def _voiced(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A vowel-like test signal: harmonics of ``f0`` with a slow amplitude envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(np.sin(2 * math.pi * f0 * k * t + rng.uniform(0, 2 * math.pi)) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * math.pi * 3.0 * t) ** 2
    return (0.1 * envelope * wave + 0.002 * rng.standard_normal(t.shape)).astype(np.float32)


def _recipe():
    from mmflow_audio_f5tts import vocoder_recipe

    return vocoder_recipe


# ------------------------------------------------------------------------------------------------ losses


def test_losses_are_zero_for_identical_signals_and_positive_otherwise():
    wave = torch.from_numpy(np.stack([_voiced(0.5, 120, 0), _voiced(0.5, 210, 1)]))
    same = VocoderLoss()(wave, wave.clone())
    for name, value in same.as_floats().items():
        assert value == pytest.approx(0.0, abs=1e-6), name

    louder = VocoderLoss()(wave * 1.5, wave)
    noisy = VocoderLoss()(wave + 0.01 * torch.randn(wave.shape, generator=torch.Generator().manual_seed(0)), wave)
    for terms in (louder, noisy):
        for name, value in terms.as_floats().items():
            assert value > 1e-3, name
    # spectral convergence of a 1.5× louder copy is exactly 0.5 at every resolution
    convergence, _ = MultiResolutionSTFTLoss()(wave * 1.5, wave)
    assert float(convergence) == pytest.approx(0.5, rel=1e-4)
    # the mel term is the project's log-mel: log(1.5) wherever the mel is above its floor
    assert float(MelLoss()(wave * 1.5, wave)) == pytest.approx(math.log(1.5), rel=0.05)


def test_loss_rejects_mismatched_shapes_and_bad_settings():
    with pytest.raises(ValueError, match="same shape"):
        VocoderLoss()(torch.zeros(1, 4096), torch.zeros(1, 4000))
    with pytest.raises(ValueError, match="fft_sizes"):
        MultiResolutionSTFTLoss([510])
    with pytest.raises(ValueError, match="weights"):
        VocoderLoss(mel_weight=0.0, sc_weight=0.0, log_mag_weight=0.0)


# ------------------------------------------------------------------------------------------------ data


def test_segments_are_deterministic_and_aligned_with_the_utterance_mel():
    waves = [_voiced(1.2, 110 + 30 * i, i) for i in range(3)] + [_voiced(0.1, 100, 9)]  # the last is too short
    sampler = SegmentSampler(waves, segment_frames=40, seed=3)
    assert len(sampler) == 3
    wave, mel = sampler.batch(5, step=7)
    assert wave.shape == (5, 39 * HOP_LENGTH) and mel.shape == (5, 100, 40)
    again_wave, again_mel = SegmentSampler(waves, 40, seed=3).batch(5, step=7)
    assert torch.equal(wave, again_wave) and torch.equal(mel, again_mel)
    other_wave, _ = sampler.batch(5, step=8)
    assert not torch.equal(wave, other_wave)
    assert torch.equal(next(sampler.batches(5, start_step=7))[0], wave)

    # The segment's own mel agrees with the cut from the whole utterance away from the edges, where
    # reflect padding differs (a window spans 4 hops): the waveform is aligned with the frames to the sample.
    own = MelSpectrogram()(wave)
    assert torch.allclose(own[:, :, 3:-3], mel[:, :, 3:-3], atol=1e-4)
    shifted = MelSpectrogram()(torch.roll(wave, HOP_LENGTH // 2, dims=-1))
    assert not torch.allclose(shifted[:, :, 3:-3], mel[:, :, 3:-3], atol=1e-2)

    with pytest.raises(ValueError, match="no utterance"):
        SegmentSampler([_voiced(0.1, 100, 0)], segment_frames=40)


# ------------------------------------------------------------------------------------------------ training


def test_a_few_steps_reduce_the_loss_of_a_tiny_vocos_on_a_fixed_batch():
    torch.manual_seed(0)
    sampler = SegmentSampler([_voiced(1.0, 100 + 40 * i, i) for i in range(4)], segment_frames=32, seed=0)
    wave, mel = sampler.batch(4, step=0)
    model = Vocos(dim=32, intermediate_dim=64, num_layers=2)
    loss_fn = VocoderLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(model(mel), wave).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_resynthesis_mel_l1_is_small_for_a_faithful_vocoder():
    mel = MelSpectrogram()(torch.from_numpy(_voiced(1.0, 150, 0)))[0]
    griffin_lim = resynthesis_mel_l1(GriffinLimVocoder(), mel)
    untrained = resynthesis_mel_l1(Vocos(dim=16, intermediate_dim=32, num_layers=1), mel)
    assert 0 < griffin_lim < untrained


# ------------------------------------------------------------------------------------------------ the recipe


def _tiny_config(tmp_path: Path, output: str, **changes) -> Path:
    config = {
        "seed": 0, "output_dir": str(tmp_path / output), "total_steps": 3, "batch_size": 2,
        "segment_seconds": 0.25, "warmup_steps": 1, "log_every": 1,
        "corpus": {"num_clips": 3, "seed": 0, "voices": ["en-us"], "min_seconds": 1.0, "max_seconds": 2.0},
        "vocoder": {"dim": 16, "intermediate_dim": 32, "num_layers": 1},
        "checkpoint": {"every": 2, "keep_last": 2}, "held_out": {"sentences": 0},
    }
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return Vocos.from_pretrained(folder).state_dict()


def test_recipe_trains_resumes_exactly_and_saves_a_loadable_vocoder(tmp_path):
    pytest.importorskip("espeakng_loader")  # the corpus speech; no face plugin needed
    recipe = _recipe()
    straight = _tiny_config(tmp_path, "straight", held_out={"sentences": 1})
    assert recipe.main(["--config", str(straight)]) == 0
    out = tmp_path / "straight"
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-00000002", "step-00000003"]
    assert not list((out / "checkpoints").glob(".*"))  # no temporary folder left behind
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3] and all(math.isfinite(row["total"]) for row in log)
    report = json.loads((out / "resynthesis.json").read_text())
    assert report["step"] == 3 and report["mean"]["griffin_lim"] > 0 and report["mean"]["vocoder"] > 0

    # an interrupted run: it stopped after the step-2 checkpoint; the rerun resumes there and ends identical
    interrupted = _tiny_config(tmp_path, "interrupted")
    assert recipe.main(["--config", str(interrupted), "--total-steps", "2"]) == 0
    # (total_steps 2 gives another LR schedule: replace its step-2 checkpoint with the straight run's)
    resumed_dir = tmp_path / "interrupted"
    (resumed_dir / "checkpoints" / "step-00000002").rename(tmp_path / "unused")
    (out / "checkpoints" / "step-00000002").rename(resumed_dir / "checkpoints" / "step-00000002")
    assert recipe.main(["--config", str(interrupted)]) == 0
    log = [json.loads(line) for line in (resumed_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3
    straight_weights, resumed_weights = _weights(out / "vocoder"), _weights(resumed_dir / "vocoder")
    assert straight_weights.keys() == resumed_weights.keys()
    for key in straight_weights:
        assert torch.equal(straight_weights[key], resumed_weights[key]), key
    initial = recipe.build_vocoder(recipe.load_config(straight)).state_dict()
    assert any(not torch.equal(initial[k], straight_weights[k]) for k in initial)  # it did train

    vocoder = load_vocoder(out / "vocoder")
    assert isinstance(vocoder, Vocos) and vocoder.config.dim == 16
    mel = MelSpectrogram()(torch.from_numpy(_voiced(0.5, 140, 2)))
    with torch.no_grad():
        audio = vocoder.decode(mel)
    assert audio.shape == (1, (mel.shape[-1] - 1) * HOP_LENGTH) and torch.isfinite(audio).all()


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"vocoder": {"dimm": 8}}, r"vocoder: unknown key\(s\) \['dimm'\]"),
        ({"learning_rate": 0.1}, r"unknown key\(s\) \['learning_rate'\]"),
        ({"warmup_steps": 3}, r"warmup_steps: must be in \[0, total_steps=3\)"),
        ({"segment_seconds": 1.5}, r"segment_seconds: 1.5 s is longer than the shortest clips"),
        ({"optimizer": {"lr": 0.0}}, r"optimizer\.lr: must be > 0"),
        ({"loss": {"fft_sizes": [16384]}}, r"segment_seconds: .* too short for loss\.fft_sizes"),
        ({"batch_size": "four"}, r"batch_size: expected int"),
    ],
)
def test_bad_config_fails_naming_the_key(tmp_path, caplog, changes, pattern):
    recipe = _recipe()
    path = _tiny_config(tmp_path, "bad", **changes)
    with pytest.raises(ConfigError, match=pattern):
        recipe.load_config(path)
    assert recipe.main(["--config", str(path)]) == 2
    assert re.search(pattern, caplog.text)
    assert not (tmp_path / "bad").exists()  # failed before any work
