"""Aligned phoneme conditioning: the vocabulary, per-frame ids, and the backbone's aligned text mode."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from mmflow_audio_f5tts.backbone import F5TTSBackbone
from mmflow_audio_f5tts.checkpoint import audio_stream_config, build_f5tts_mmdit
from mmflow_audio_f5tts.espeak import Phone
from mmflow_audio_f5tts.mel import MelSpectrogram
from mmflow_audio_f5tts.phonemes import (
    ENGLISH_PHONEMES,
    UNKNOWN,
    PhonemeVocab,
    aligned_text_ids,
    frame_phoneme_ids,
)

from mmflow import Guidance, StreamBatch, generate

pytestmark = pytest.mark.filterwarnings("ignore:attn_mask_enabled=True:UserWarning")

TINY = {"dim": 64, "depth": 2, "heads": 4, "ff_mult": 2, "text_dim": 32, "conv_layers": 2}
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Would you pour the boiled oil into the toy boy's foil?",
    "I bought 3,456 oranges for $12.99 on June 21st, 1998!",
    "Measure the beige garage; the vision was unusual.",
    "Near here, dear, the beer is clear. Our hour-long tour ended early.",
    "Button, little, bottle, kitten: psychology, pneumonia and a knight.",
]


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("espeakng_loader", reason="needs `pip install espeakng-loader==0.2.4`")
    from mmflow_audio_f5tts.espeak import EspeakEngine

    return EspeakEngine()


@pytest.fixture(scope="module")
def vocab() -> PhonemeVocab:
    return PhonemeVocab()


# ------------------------------------------------------------------------------------------------ vocabulary


def test_vocabulary_layout(vocab):
    assert len(vocab) == len(ENGLISH_PHONEMES) == len(set(ENGLISH_PHONEMES))
    assert vocab.silence_id == 0 and vocab.symbols[0] == "_"
    assert vocab.symbols[vocab.unknown_id] == UNKNOWN
    assert {"'aI", ",aI", "aI", "_:", "dZ", "@"} <= set(vocab.symbols)
    assert vocab.encode(["_", "'aI", "no-such-phone"]) == [0, vocab.symbols.index("'aI"), vocab.unknown_id]
    assert vocab.decode(vocab.encode(["t", "'E", "s", "t"])) == ["t", "'E", "s", "t"]
    with pytest.raises(IndexError):
        vocab.decode([len(vocab)])


def test_vocabulary_file_round_trip(tmp_path, vocab):
    path = tmp_path / "phonemes.txt"
    vocab.save(path)
    assert path.read_text(encoding="utf-8").splitlines() == list(vocab.symbols)
    assert PhonemeVocab.from_file(path) == vocab
    small = PhonemeVocab(["_", UNKNOWN, "a", "'a"])
    small.save(path)
    assert PhonemeVocab.from_file(path).encode(["'a", "b"]) == [3, 1]


def test_bad_vocabularies_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        PhonemeVocab(["_", UNKNOWN, "a", "a"])
    with pytest.raises(ValueError, match="must contain '<unk>'"):
        PhonemeVocab(["_", "a"])
    with pytest.raises(ValueError, match="whitespace"):
        PhonemeVocab(["_", UNKNOWN, "a b"])
    with pytest.raises(FileNotFoundError):
        PhonemeVocab.from_file(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="bad.txt"):
        PhonemeVocab.from_file(tmp_path / "bad.txt")


def test_vocabulary_covers_what_espeak_says(engine, vocab):
    from mmflow_audio_f5tts.espeak import VOICES, Voice

    seen = set()
    for i, sentence in enumerate(SENTENCES):
        for voice in (VOICES[i % len(VOICES)], Voice(rate=300)):
            seen.update(p.symbol for p in engine.synthesize(sentence, voice).phones)
    assert seen <= set(vocab.symbols), sorted(seen - set(vocab.symbols))


# ------------------------------------------------------------------------------------------------ frame ids


def test_frame_ids_take_the_phone_at_each_frame_centre(vocab):
    rate = Fraction(375, 4)  # frame i is centred at i * 4/375 s = i * 10.667 ms
    phones = [Phone("_", 0.0, 0.02), Phone("h", 0.02, 4 / 375 * 3), Phone("'aI", 4 / 375 * 3, 0.1)]
    ids = frame_phoneme_ids(phones, 14, vocab, rate)
    assert ids.dtype == np.int64 and ids.shape == (14,)
    silence, h, ai = vocab.encode(["_", "h", "'aI"])
    # centres: 0, 10.7, 21.3 (h), 32.0 (boundary: the phone starting there), ..., 96.0, then past the end
    assert ids.tolist() == [silence, silence, h] + [ai] * 7 + [silence] * 4
    assert frame_phoneme_ids(phones, 0, vocab).shape == (0,)
    assert frame_phoneme_ids([], 3, vocab).tolist() == [silence] * 3


def test_frame_ids_reject_bad_input(vocab):
    with pytest.raises(ValueError, match="num_frames"):
        frame_phoneme_ids([Phone("a", 0.0, 0.1)], -1, vocab)
    with pytest.raises(ValueError, match="overlap"):
        frame_phoneme_ids([Phone("a", 0.0, 0.1), Phone("b", 0.05, 0.2)], 10, vocab)


def test_aligned_ids_have_one_id_per_mel_frame(engine, vocab):
    mel = MelSpectrogram()
    for sentence in SENTENCES[:3]:
        ids, spoken = aligned_text_ids(engine, sentence, _voice(), vocab)
        frames = mel(torch.from_numpy(spoken.waveform)).shape[-1]
        assert ids.shape == (frames,)
        # the frames spell the phones in order (phones shorter than a frame may be skipped)
        runs = [int(ids[0])] + [int(b) for a, b in zip(ids, ids[1:], strict=False) if a != b]
        phone_ids = iter(vocab.encode(p.symbol for p in spoken.phones))
        assert all(any(run == pid for pid in phone_ids) for run in runs)
        assert len(set(runs)) > 15


def test_aligned_ids_need_24khz(vocab):
    pytest.importorskip("espeakng_loader")
    from mmflow_audio_f5tts.espeak import EspeakEngine

    with pytest.raises(ValueError, match="24000 Hz"):
        aligned_text_ids(EspeakEngine(sample_rate=16_000), "hello", _voice(), vocab)


def _voice():
    from mmflow_audio_f5tts.espeak import Voice

    return Voice()


# ------------------------------------------------------------------------------------------------ backbone


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random parameters: the zero init would make every output 0 and every comparison trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def _aligned_batch(engine, vocab):
    """Two utterances of different length: mel as the audio context on the first half, ids padded with -1."""
    mel = MelSpectrogram()
    items = [aligned_text_ids(engine, s, _voice(), vocab) for s in SENTENCES[:2]]
    lengths = [len(ids) for ids, _ in items]
    n = max(lengths)
    latent = torch.zeros(2, n, 100)
    text = torch.full((2, n), -1, dtype=torch.long)
    for i, (ids, spoken) in enumerate(items):
        latent[i, : lengths[i]] = mel.time_major(torch.from_numpy(spoken.waveform))[0]
        text[i, : lengths[i]] = torch.from_numpy(ids)
    given = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None] // 2
    return StreamBatch.from_lengths(latent, lengths, given=given, extras={"text": text})


def test_aligned_mode_runs_in_mmdit(engine, vocab):
    model = _randomised(build_f5tts_mmdit(TINY, len(vocab), mask_padding=True, text_conditioning="aligned"))
    assert model.backbones["audio"].text_conditioning == "aligned"
    batch = _aligned_batch(engine, vocab)
    x = torch.randn(batch.latent.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model({"audio": x}, torch.tensor([0.3, 0.7]), {"audio": batch})["audio"]
        shuffled = batch.replace(extras={"text": batch.extras["text"].roll(7, dims=1)})
        other = model({"audio": x}, torch.tensor([0.3, 0.7]), {"audio": shuffled})["audio"]
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, other)  # the prediction depends on which phone is at which frame
    one = StreamBatch.from_lengths(
        torch.zeros(1, 40, 100), extras={"text": torch.zeros(1, 40, dtype=torch.long)}
    )
    sample = generate(model, {"audio": one}, steps=2, guidance=Guidance(scales={"audio": 2.0}))["audio"]
    assert sample.shape == (1, 40, 100) and torch.isfinite(sample).all()


def test_aligned_mode_rejects_text_of_another_length(engine, vocab):
    model = build_f5tts_mmdit(TINY, len(vocab), text_conditioning="aligned").eval()
    batch = _aligned_batch(engine, vocab)
    x = torch.randn(batch.latent.shape)
    for text in (batch.extras["text"][:, :-1], torch.zeros(2, 12, dtype=torch.long)):
        with pytest.raises(ValueError, match="one phoneme id per mel frame.*frame_phoneme_ids"):
            model({"audio": x}, torch.tensor([0.5, 0.5]), {"audio": batch.replace(extras={"text": text})})


def test_filler_mode_is_unchanged_and_shares_weights():
    filler = _randomised(F5TTSBackbone(**TINY, text_num_embeds=40))
    aligned = F5TTSBackbone(**TINY, text_num_embeds=40, text_conditioning="aligned").eval()
    assert filler.text_conditioning == "filler"
    assert list(filler.state_dict()) == list(aligned.state_dict())
    aligned.load_state_dict(filler.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(2)
    x, cond = torch.randn(2, 30, 100, generator=generator), torch.randn(2, 30, 100, generator=generator)
    text = torch.randint(0, 40, (2, 30), generator=generator)
    with torch.no_grad():
        assert torch.equal(
            filler(x, cond, text, 0.4), aligned(x, cond, text, 0.4)
        )  # same math at full length
        short = filler(x, cond, text[:, :9], 0.4)  # filler mode still pads short text
    assert torch.isfinite(short).all()
    with pytest.raises(ValueError, match="one phoneme id per mel frame"):
        aligned(x, cond, text[:, :9], 0.4)


def test_text_conditioning_option():
    assert "text_conditioning" not in audio_stream_config(TINY, 40)["backbone_config"]
    assert audio_stream_config(TINY, 40, text_conditioning="aligned")["backbone_config"][
        "text_conditioning"
    ] == ("aligned")
    kept = audio_stream_config({**TINY, "text_conditioning": "aligned"}, 40)["backbone_config"]
    assert kept["text_conditioning"] == "aligned"
    with pytest.raises(ValueError, match="text_conditioning must be one of"):
        F5TTSBackbone(**TINY, text_conditioning="phonemes")
