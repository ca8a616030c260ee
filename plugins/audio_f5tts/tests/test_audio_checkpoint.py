"""Loading files in the official F5-TTS layouts (.safetensors, .pt, training checkpoints) and clear failures."""

from __future__ import annotations

import pytest
import torch
from mmflow_audio_f5tts.backbone import F5TTS_CONFIGS, F5TTSBackbone
from mmflow_audio_f5tts.checkpoint import (
    EMA_PREFIX,
    CheckpointError,
    from_f5tts,
    load_f5tts_state_dict,
)
from safetensors.torch import save_file

CONFIG = {"dim": 64, "depth": 2, "heads": 4, "ff_mult": 2, "text_dim": 32, "conv_layers": 2}
VOCAB = [" ", *"abcdefghijklmnopqrstuvwxyz.,!?'"]


def _dit_state(seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """A random DiT state dict with the official key names."""
    torch.manual_seed(seed)
    backbone = F5TTSBackbone(**{**CONFIG, **overrides}, text_num_embeds=len(VOCAB))
    return {
        k: torch.randn(v.shape) if k != "rotary_embed.inv_freq" else v
        for k, v in backbone.state_dict().items()
    }


def _official(state: dict) -> dict:
    """The released file layout: EMA prefix plus the EMA counters."""
    return {
        **{EMA_PREFIX + k: v for k, v in state.items()},
        "initted": torch.tensor([True]),
        "step": torch.tensor([1_250_000]),
    }


@pytest.fixture
def vocab_folder(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return tmp_path


def _assert_loaded(model, state):
    loaded = model.backbones["audio"].state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_safetensors_loads_without_renaming(tmp_path, vocab_folder):
    state = _dit_state()
    path = tmp_path / "model_1250000.safetensors"
    save_file(_official(state), str(path))
    model, vocab = from_f5tts(path, vocab_folder, CONFIG)
    assert len(vocab) == len(VOCAB)
    assert not model.training
    _assert_loaded(model, state)
    assert model.config.mask_padding is False  # F5-TTS's behaviour by default


def test_released_pt_and_training_checkpoint(tmp_path, vocab_folder):
    ema, online = _dit_state(0), _dit_state(1)
    released = tmp_path / "model_1200000.pt"
    torch.save({"ema_model_state_dict": _official(ema)}, released)
    _assert_loaded(from_f5tts(released, vocab_folder / "vocab.txt", CONFIG).model, ema)

    training = tmp_path / "model_last.pt"
    torch.save(
        {
            "model_state_dict": {"transformer." + k: v for k, v in online.items()},
            "ema_model_state_dict": _official(ema),
            "optimizer_state_dict": {"state": {}, "param_groups": []},
            "update": 10,
        },
        training,
    )
    assert all(torch.equal(load_f5tts_state_dict(training)[k], v) for k, v in ema.items())
    assert all(torch.equal(load_f5tts_state_dict(training, use_ema=False)[k], v) for k, v in online.items())
    with pytest.raises(CheckpointError, match="use_ema=True"):
        load_f5tts_state_dict(released, use_ema=False)


def test_legacy_mel_buffers_are_ignored(tmp_path):
    state = _dit_state()
    raw = _official(state)
    raw["ema_model.mel_spec.mel_stft.mel_scale.fb"] = torch.zeros(513, 100)
    path = tmp_path / "old.safetensors"
    save_file(raw, str(path))
    assert set(load_f5tts_state_dict(path)) == set(state)


def test_truncated_files_fail_clearly(tmp_path):
    for name in ("model.safetensors", "model.pt"):
        path = tmp_path / name
        if name.endswith(".safetensors"):
            save_file(_official(_dit_state()), str(path))
        else:
            torch.save({"ema_model_state_dict": _official(_dit_state())}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(CheckpointError, match="truncated"):
            load_f5tts_state_dict(path)
    with pytest.raises(FileNotFoundError):
        load_f5tts_state_dict(tmp_path / "absent.safetensors")


def test_missing_and_mismatched_keys_are_listed(tmp_path, vocab_folder, monkeypatch):
    state = _dit_state()
    del state["proj_out.bias"]
    path = tmp_path / "cut.safetensors"
    save_file(_official(state), str(path))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): proj_out.bias"):
        from_f5tts(path, vocab_folder, CONFIG)

    wider = tmp_path / "wider.safetensors"
    save_file(_official(_dit_state(dim=128)), str(wider))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*'dim': 128.*'dim': 64"):
        from_f5tts(wider, vocab_folder, CONFIG)

    monkeypatch.setitem(
        F5TTS_CONFIGS, "Wide_v1", {**CONFIG, "dim": 128, "text_mask_padding": True, "rope_heads": None}
    )
    with pytest.raises(CheckpointError, match="fit config Wide_v1"):
        from_f5tts(wider, vocab_folder, CONFIG)

    deeper = tmp_path / "deeper.safetensors"
    save_file(_official(_dit_state(depth=3)), str(deeper))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(14\): transformer_blocks.2"):
        from_f5tts(deeper, vocab_folder, CONFIG)


def test_e2tts_and_foreign_files_are_recognised(tmp_path, vocab_folder):
    e2 = {
        EMA_PREFIX + "layers.0.1.g": torch.ones(64),
        EMA_PREFIX + "norm_out.g": torch.ones(64),
        EMA_PREFIX + "input_embed.proj.weight": torch.zeros(64, 300),
        "initted": torch.tensor([True]),
    }
    path = tmp_path / "e2.safetensors"
    save_file(e2, str(path))
    with pytest.raises(CheckpointError, match="E2-TTS"):
        from_f5tts(path, vocab_folder, CONFIG)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="outside the F5-TTS layout.*encoder.weight"):
        load_f5tts_state_dict(foreign)


def test_vocab_and_config_mismatch(tmp_path, vocab_folder):
    path = tmp_path / "model.safetensors"
    save_file(_official(_dit_state()), str(path))
    short_vocab = tmp_path / "short"
    short_vocab.mkdir()
    (short_vocab / "vocab.txt").write_text(" \na\nb\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="3 tokens.*embeds 32"):
        from_f5tts(path, short_vocab, CONFIG)
    with pytest.raises(KeyError, match="F5TTS_v1_Base"):
        from_f5tts(path, vocab_folder, "F5TTS_v2")
