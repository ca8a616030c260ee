import pytest
import torch
from mmflow_audio_f5tts.backbone import F5TTSBackbone
from mmflow_jamflow import build_jamflow
from safetensors.torch import save_file

from mmflow import StreamBatch, get_registry
from mmflow.masks import LocalWindow, SameTime

AUDIO = {"dim": 64, "depth": 4, "heads": 4, "ff_mult": 2, "text_dim": 32, "conv_layers": 1, "text_mask_padding": True}
VOCAB = [" ", "a", "b", "c", "d", "e", ".", ","]


@pytest.fixture
def official_f5(tmp_path):
    """A tiny F5-TTS checkpoint in the official layout (EMA prefix, initted/step) and its vocab.txt."""
    torch.manual_seed(0)
    backbone = F5TTSBackbone(channels=100, text_num_embeds=len(VOCAB), **AUDIO)
    state = {f"ema_model.transformer.{k}": torch.randn_like(v) * 0.05 for k, v in backbone.state_dict().items()}
    state["initted"], state["step"] = torch.tensor(True), torch.tensor(1000)
    save_file(state, tmp_path / "model_1000.safetensors")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return tmp_path / "model_1000.safetensors", tmp_path / "vocab.txt", state


def test_built_the_papers_way(official_f5):
    checkpoint, vocab_path, state = official_f5
    model, vocab = build_jamflow(checkpoint, vocab_path, AUDIO, motion_dim=32)
    assert len(vocab) == len(VOCAB)
    audio = model.backbones["audio"].state_dict()
    assert all(torch.equal(audio[k], state[f"ema_model.transformer.{k}"]) for k in audio)
    assert model.joint_steps == (0, 1)  # the earlier half of 4 layers
    assert model.specs["audio"].position == model.specs["motion"].position == "scaled"
    policy = model.mask_policy
    assert policy.rule("audio", "motion") == SameTime() and policy.rule("motion", "audio") == LocalWindow("0.25")
    assert model.backbones["motion"].heads == 4 and model.backbones["motion"].depth == 4

    seconds = 0.8
    n_audio, n_motion = model.specs["audio"].num_frames(seconds), model.specs["motion"].num_frames(seconds)
    batches = {
        "audio": StreamBatch.from_lengths(torch.randn(1, n_audio, 100), extras={"text": torch.tensor([[1, 2, 3, 6]])}),
        "motion": StreamBatch.from_lengths(torch.randn(1, n_motion, 12), cond=torch.randn(1, n_motion, 51)),
    }
    x = {n: torch.randn_like(b.latent) for n, b in batches.items()}
    x["motion"].requires_grad_(True)
    out = model(x, torch.tensor([0.5]), batches)
    out["audio"].sum().backward()
    assert x["motion"].grad.abs().sum() > 0  # the audio stream now hears the motion stream
    assert out["motion"].shape == (1, n_motion, 12)


def test_the_papers_tasks_are_registered():
    registry = get_registry()
    assert registry.task("audio_to_motion").given == ("audio",)
    assert registry.task("dubbing").generate == ("audio",)


def test_a_checkpoint_of_another_size_is_refused(official_f5):
    checkpoint, vocab_path, _ = official_f5
    with pytest.raises(Exception, match="does not match the model"):
        build_jamflow(checkpoint, vocab_path, {**AUDIO, "depth": 2}, motion_dim=32)
