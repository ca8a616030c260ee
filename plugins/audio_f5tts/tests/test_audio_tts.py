"""Sampling parity with ``f5_tts.model.CFM.sample`` and end-to-end TTS on a tiny random model."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from mmflow_audio_f5tts.audio_io import ReferenceAudio
from mmflow_audio_f5tts.checkpoint import build_f5tts_mmdit
from mmflow_audio_f5tts.mel import HOP_LENGTH, SAMPLE_RATE
from mmflow_audio_f5tts.text import Vocab, estimate_duration, prompt_text, reference_frames
from mmflow_audio_f5tts.tts import F5TTSSynthesizer, chunk_text, cross_fade, finish_reference_text
from mmflow_audio_f5tts.vocoder import GriffinLimVocoder

from mmflow import Guidance, StreamBatch, generate

SAMPLING_REL_TOL = 1e-3
CONFIG = {"dim": 64, "depth": 2, "heads": 4, "ff_mult": 2, "text_dim": 32, "conv_layers": 2}
VOCAB = Vocab([" ", *"abcdefghijklmnopqrstuvwxyz.,!?'"])


def _random_model(version: str = "v1", mask_padding: bool = False, seed: int = 0, scale: float = 0.1):
    versions = {
        "v1": {"text_mask_padding": True, "rope_heads": None},
        "v0": {"text_mask_padding": False, "rope_heads": 1},
    }
    model = build_f5tts_mmdit({**CONFIG, **versions[version]}, len(VOCAB), mask_padding=mask_padding).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model


# ------------------------------------------------------------------------------------------------ sampling


@pytest.fixture(scope="module")
def reference_cfm(f5_reference):
    model = importlib.import_module("f5_tts.model")
    return model.DiT, model.CFM


@pytest.mark.parametrize("version", ["v1", "v0"])
@pytest.mark.parametrize("batch", [1, 2])
def test_sampling_matches_reference_cfm(reference_cfm, version, batch):
    """Same weights, noise, 32 Euler steps, sway −1, CFG 2 → the same mel as CFM.sample (padded batch too)."""
    dit_cls, cfm_cls = reference_cfm
    ours = _random_model(version)
    backbone = ours.backbones["audio"]
    reference_dit = dit_cls(
        **CONFIG,
        text_num_embeds=len(VOCAB),
        mel_dim=100,
        text_mask_padding=backbone.text_embed.mask_padding,
        pe_attn_head=backbone.rope_heads,
    )
    reference_dit.load_state_dict(backbone.state_dict())
    reference = cfm_cls(transformer=reference_dit).eval()

    generator = torch.Generator().manual_seed(3)
    cond_frames, durations = 30, [70, 55][:batch]
    cond = torch.randn(batch, cond_frames, 100, generator=generator)
    text = torch.randint(0, len(VOCAB), (batch, 24), generator=generator)
    text[1:, 18:] = -1
    with torch.no_grad():
        expected, _ = reference.sample(
            cond, text, torch.tensor(durations), steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=7
        )

    n = max(durations)
    noise = torch.zeros(batch, n, 100)
    for i, frames in enumerate(durations):  # CFM.sample's noise: reseeded per sample, then padded
        torch.manual_seed(7)
        noise[i, :frames] = torch.randn(frames, 100)
    latent = torch.zeros(batch, n, 100)
    latent[:, :cond_frames] = cond
    given = torch.zeros(batch, n, dtype=torch.bool)
    given[:, :cond_frames] = True
    stream = StreamBatch.from_lengths(latent, durations, given=given, extras={"text": text})
    got = generate(
        ours,
        {"audio": stream},
        steps=32,
        sway=-1.0,
        guidance=Guidance(scales={"audio": 2.0}),
        noise={"audio": noise},
    )["audio"]
    valid = stream.valid
    rel = ((got - expected)[valid].norm() / expected[valid].norm()).item()
    print(f"sampling parity {version} batch {batch}: rel {rel:.2e}")
    assert rel < SAMPLING_REL_TOL


# ------------------------------------------------------------------------------------------------ text


def test_text_helpers_match_f5_rules(f5_infer_batch_process):
    utils = importlib.import_module("f5_tts.infer.utils_infer")
    text = "Hello there, how are you? I am fine; thanks. 你好，世界。Another sentence follows here!"
    for limit in (5, 20, 40, 200):
        assert chunk_text(text, limit) == utils.chunk_text(text, limit)
    assert finish_reference_text("Hi") == "Hi. "
    assert finish_reference_text("Hi.") == "Hi. "
    assert finish_reference_text("你好。") == "你好。"
    with pytest.raises(ValueError, match="ref_text is empty"):
        finish_reference_text("  ")
    a, b = np.ones(5000, np.float32), np.zeros(4000, np.float32)
    joined = cross_fade([a, b], 0.1)
    assert joined.shape == (5000 + 4000 - 2400,)
    assert joined[2600] == 1.0 and joined[-1] == 0.0


# ------------------------------------------------------------------------------------------------ TTS


def _reference_audio(seconds: float = 1.5) -> ReferenceAudio:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return ReferenceAudio(waveform=wave, sample_rate=SAMPLE_RATE, original_rms=0.05, source="synthetic")


def _synthesizer(mask_padding: bool = False, **kwargs) -> F5TTSSynthesizer:
    vocoder = GriffinLimVocoder(n_iter=2)
    return F5TTSSynthesizer(
        _random_model(mask_padding=mask_padding), VOCAB, vocoder, steps=4, tokenizer="char", **kwargs
    )


def test_tts_end_to_end_has_the_expected_duration():
    reference, ref_text, gen_text = _reference_audio(), "a short prompt", "say this now please."
    result = _synthesizer()(reference, ref_text, gen_text, progress=False)
    ref_frames = reference_frames(reference.waveform.shape[-1])
    total = estimate_duration(ref_frames, finish_reference_text(ref_text), gen_text)
    assert result.sample_rate == SAMPLE_RATE
    assert result.chunks == [gen_text]
    assert result.waveform.dtype == np.float32 and np.isfinite(result.waveform).all()
    # One reference frame is kept before the generated part, as F5-TTS does.
    assert result.waveform.shape == ((total - ref_frames - 1) * HOP_LENGTH,)
    assert result.mels[0].shape == (total - ref_frames, 100)
    again = _synthesizer()(reference, ref_text, gen_text, progress=False)
    np.testing.assert_array_equal(result.waveform, again.waveform)  # seeded


def test_long_text_is_chunked_and_cross_faded():
    reference = _reference_audio(1.5)
    ref_text = "a short prompt"
    gen_text = "this is the first sentence, it goes on. " * 5 + "and here is the end."  # ~220 bytes per chunk
    result = _synthesizer(cross_fade_seconds=0.05)(reference, ref_text, gen_text, progress=False)
    assert len(result.chunks) > 1
    pieces = sum(mel.shape[0] - 1 for mel in result.mels) * HOP_LENGTH
    overlap = int(0.05 * SAMPLE_RATE) * (len(result.chunks) - 1)
    assert result.waveform.shape == (pieces - overlap,)


def test_batch_equals_one_by_one_with_masked_padding():
    reference, ref_text = _reference_audio(), "a short prompt"
    texts = ["one two three four five six.", "short one here.", "a medium length text!"]
    synthesizer = _synthesizer(mask_padding=True)
    batched = synthesizer(reference, ref_text, texts, progress=False)
    assert synthesizer.batch_size is None  # everything in one padded batch
    for text, together in zip(texts, batched, strict=True):
        alone = synthesizer(reference, ref_text, text, progress=False)
        assert together.mels[0].shape == alone.mels[0].shape
        torch.testing.assert_close(together.mels[0], alone.mels[0], rtol=1e-4, atol=1e-4)


def test_clear_errors():
    synthesizer = _synthesizer()
    reference = _reference_audio()
    with pytest.raises(ValueError, match=r"gen_text\[0\] is empty"):
        synthesizer(reference, "a prompt", "   ")
    with pytest.raises(ValueError, match="gen_text is an empty list"):
        synthesizer(reference, "a prompt", [])
    with pytest.raises(ValueError, match="ref_text is empty"):
        synthesizer(reference, "", "hello")
    with pytest.raises(ValueError, match="speed must be positive"):
        synthesizer(reference, "a prompt", "hello", speed=0)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        synthesizer(reference, "a prompt", "HELLO")
    with pytest.raises(ValueError, match="must be shorter than 22 s"):
        synthesizer(_reference_audio(23.0), "a prompt", "hello")


def test_prompt_is_reference_text_then_chunk():
    """The model conditions on the reference transcript (ended like F5) followed by the new text."""
    synthesizer = _synthesizer()
    requests = synthesizer._plan(_reference_audio(), finish_reference_text("a prompt"), ["hello there."], 1.0)
    assert VOCAB.decode(requests[0].ids) == list(prompt_text("a prompt. ", "hello there."))
