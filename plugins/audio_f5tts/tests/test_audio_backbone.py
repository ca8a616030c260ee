"""F5TTSBackbone vs the f5-tts reference DiT: key layout, forward parity (v1/v0, drops, padding), MMDiT path."""

from __future__ import annotations

import importlib

import pytest
import torch
from mmflow_audio_f5tts.backbone import F5TTS_CONFIGS, F5TTSBackbone, config_from_f5_arch, parameter_count
from mmflow_audio_f5tts.checkpoint import build_f5tts_mmdit

from mmflow import MMDiT, StreamBatch, get_registry

pytestmark = pytest.mark.filterwarnings("ignore:attn_mask_enabled=True:UserWarning")

PARITY_REL_TOL = 1e-5
# Same structure as the released models (ConvNeXt text encoder, several heads), small widths for speed.
TINY = {
    "dim": 64,
    "depth": 2,
    "heads": 4,
    "ff_mult": 2,
    "text_dim": 32,
    "conv_layers": 2,
    "text_num_embeds": 40,
}
VERSIONS = {
    "v1": {"text_mask_padding": True, "rope_heads": None},
    "v0": {"text_mask_padding": False, "rope_heads": 1},
}


def _reference_kwargs(config: dict) -> dict:
    """Our backbone config → the reference ``DiT`` keyword arguments."""
    kwargs = {k: v for k, v in config.items() if k not in ("rope_heads", "isolate_padding")}
    return {**kwargs, "mel_dim": 100, "pe_attn_head": config.get("rope_heads")}


def _randomise(module: torch.nn.Module, seed: int = 0) -> dict:
    """Random values for every parameter (the zero init would hide most of the network); buffers kept."""
    generator = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    params = dict(module.named_parameters())
    for key in sorted(params):
        state[key] = torch.randn(state[key].shape, generator=generator) * 0.3
    module.load_state_dict(state)
    return state


@pytest.fixture(scope="module")
def reference_dit(f5_reference):
    return importlib.import_module("f5_tts.model.backbones.dit").DiT


def _pair(reference_dit, version: str, attn_mask_enabled: bool = False, isolate_padding: bool = False):
    config = {**TINY, **VERSIONS[version]}
    reference = reference_dit(**_reference_kwargs(config), attn_mask_enabled=attn_mask_enabled).eval()
    state = _randomise(reference)
    ours = F5TTSBackbone(**config, isolate_padding=isolate_padding).eval()
    ours.load_state_dict(state, strict=True)
    return reference, ours


def _inputs(b: int = 2, n: int = 48, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 100, generator=generator)
    cond = torch.randn(b, n, 100, generator=generator)
    cond[:, n // 2 :] = 0.0  # the reference prompt covers the first half
    text = torch.randint(0, TINY["text_num_embeds"], (b, 20), generator=generator)
    text[-1, 12:] = -1  # batch padding of the text
    time = torch.rand(b, generator=generator)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[-1, n - 11 :] = False  # the last sample is 11 frames shorter
    return x, cond, text, time, mask


def _rel(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    if where is not None:
        a, b = a[where], b[where]
    return ((a - b).norm() / b.norm()).item()


def test_state_dict_equals_official_layout(reference_dit):
    """Full F5TTS_v1_Base size (on the meta device): same 364 keys and shapes, same parameter count."""
    with torch.device("meta"):
        reference = reference_dit(**_reference_kwargs(F5TTS_CONFIGS["F5TTS_v1_Base"]), text_num_embeds=2545)
        ours = F5TTSBackbone(**F5TTS_CONFIGS["F5TTS_v1_Base"], text_num_embeds=2545)
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    assert len(our_shapes) == 364
    assert parameter_count(ours) == 337_096_804


def test_fresh_backbone_predicts_zero():
    backbone = F5TTSBackbone(**TINY).eval()
    x, cond, text, time, _ = _inputs()
    assert torch.count_nonzero(backbone(x, cond, text, time)) == 0


@pytest.mark.parametrize("version", ["v1", "v0"])
@pytest.mark.parametrize(
    "drops",
    [{}, {"drop_audio_cond": True}, {"drop_text": True}, {"drop_audio_cond": True, "drop_text": True}],
    ids=["cond", "drop_audio_cond", "drop_text", "drop_both"],
)
def test_forward_matches_reference(reference_dit, version, drops):
    reference, ours = _pair(reference_dit, version)
    x, cond, text, time, _ = _inputs()
    with torch.no_grad():
        expected = reference(x, cond, text, time, **drops)
        got = ours(x, cond, text, time, **drops)
    assert _rel(got, expected) < PARITY_REL_TOL


@pytest.mark.parametrize("version", ["v1", "v0"])
@pytest.mark.parametrize("masked_attention", [False, True], ids=["f5_unmasked", "masked"])
def test_padded_batch_matches_reference(reference_dit, version, masked_attention):
    """Padding: F5 attends to padding keys (attn_mask_enabled=False); both settings are matched."""
    reference, ours = _pair(reference_dit, version, attn_mask_enabled=masked_attention)
    x, cond, text, time, mask = _inputs()
    with torch.no_grad():
        expected = reference(x, cond, text, time, mask=mask)
        got = ours(x, cond, text, time, mask=mask, mask_attention=masked_attention)
    assert _rel(got, expected, mask) < PARITY_REL_TOL


def test_per_sample_drops_equal_separate_calls(reference_dit):
    """A (b,) drop tensor does per sample what the boolean flags do for the whole batch."""
    _, ours = _pair(reference_dit, "v1")
    x, cond, text, time, _ = _inputs()
    drop = torch.tensor([False, True])
    with torch.no_grad():
        mixed = ours(x, cond, text, time, drop_audio_cond=drop, drop_text=drop)
        kept = ours(x[:1], cond[:1], text[:1], time[:1])
        dropped = ours(x[1:], cond[1:], text[1:], time[1:], drop_audio_cond=True, drop_text=True)
    assert _rel(mixed, torch.cat([kept, dropped])) < PARITY_REL_TOL


def _mmdit(state: dict, version: str, mask_padding: bool) -> MMDiT:
    config = {k: v for k, v in {**TINY, **VERSIONS[version]}.items() if k != "text_num_embeds"}
    model = build_f5tts_mmdit(config, TINY["text_num_embeds"], mask_padding=mask_padding).eval()
    model.backbones["audio"].load_state_dict(state, strict=True)
    return model


def _stream_batch(x, cond, text, mask) -> StreamBatch:
    given = torch.zeros_like(mask)
    given[:, : x.shape[1] // 2] = True
    latent = torch.where(given[..., None], cond, torch.zeros_like(cond))
    return StreamBatch.from_lengths(latent, mask.sum(1), given=given, extras={"text": text})


@pytest.mark.parametrize("version", ["v1", "v0"])
@pytest.mark.parametrize("drop", [False, True], ids=["cond", "uncond"])
def test_mmdit_single_stream_matches_reference(reference_dit, version, drop):
    """MMDiT(mask_padding=False) with the f5tts_dit stream = the reference DiT on a padded batch."""
    reference, _ = _pair(reference_dit, version)
    model = _mmdit(reference.state_dict(), version, mask_padding=False)
    x, cond, text, time, mask = _inputs()
    batch = _stream_batch(x, cond, text, mask)
    with torch.no_grad():
        got = model({"audio": x}, time, {"audio": batch}, drop=drop)["audio"]
        expected = reference(x, batch.context(), text, time, mask=mask, drop_audio_cond=drop, drop_text=drop)
    assert _rel(got, expected, mask) < PARITY_REL_TOL


def test_mmdit_masked_padding_matches_masked_reference(reference_dit):
    reference, _ = _pair(reference_dit, "v1", attn_mask_enabled=True)
    model = _mmdit(reference.state_dict(), "v1", mask_padding=True)
    model.backbones["audio"].text_embed.isolate_padding = False  # the reference's text encoder sees padding
    x, cond, text, time, mask = _inputs()
    batch = _stream_batch(x, cond, text, mask)
    with torch.no_grad():
        got = model({"audio": x}, time, {"audio": batch})["audio"]
        expected = reference(x, batch.context(), text, time, mask=mask)
    assert _rel(got, expected, mask) < PARITY_REL_TOL


@pytest.mark.parametrize("version", ["v1", "v0"])
def test_isolated_padding_makes_batch_equal_one_by_one(reference_dit, version):
    _, ours = _pair(reference_dit, version, isolate_padding=True)
    x, cond, text, time, mask = _inputs()
    short = int(mask[-1].sum())
    with torch.no_grad():
        batched = ours(x, cond, text, time, mask=mask, mask_attention=True)
        alone = ours(x[-1:, :short], cond[-1:, :short], text[-1:], time[-1:])
    assert _rel(batched[-1, :short], alone[0]) < PARITY_REL_TOL


def test_registered_and_rejects_unsupported_options():
    assert get_registry().backbone("f5tts_dit") is F5TTSBackbone
    with pytest.raises(ValueError, match="qk_norm"):
        F5TTSBackbone(**TINY, qk_norm="rms_norm")
    with pytest.raises(ValueError, match="long_skip_connection"):
        F5TTSBackbone(**TINY, long_skip_connection=True)
    with pytest.raises(ValueError, match="cond_channels must be 0"):
        F5TTSBackbone(cond_channels=3, **TINY)
    with pytest.raises(ValueError, match="rope_heads"):
        F5TTSBackbone(**{**TINY, "rope_heads": 9})


def test_missing_text_and_bad_text_are_explained():
    model = build_f5tts_mmdit({k: v for k, v in TINY.items() if k != "text_num_embeds"}, 40)
    x, cond, text, time, mask = _inputs()
    batch = _stream_batch(x, cond, text, mask)
    with pytest.raises(KeyError, match="extras\\['text'\\]"):
        model({"audio": x}, time, {"audio": batch.replace(extras={})})
    with pytest.raises(ValueError, match="integer token ids"):
        model.backbones["audio"](x, cond, text.float(), time)


def test_config_from_f5_arch_renames_and_rejects():
    arch = {
        "dim": 1024,
        "depth": 22,
        "heads": 16,
        "ff_mult": 2,
        "text_dim": 512,
        "text_mask_padding": False,
        "conv_layers": 4,
        "pe_attn_head": 1,
        "attn_backend": "torch",
        "attn_mask_enabled": False,
    }
    assert config_from_f5_arch(arch) == F5TTS_CONFIGS["F5TTS_Base"]
    with pytest.raises(ValueError, match="qk_norm"):
        F5TTSBackbone(**config_from_f5_arch({**TINY, "qk_norm": "rms_norm"}))


def test_text_is_encoded_once_per_sampling_call():
    """Step-invariant text features come from the forward plan, not from a cache on the module."""
    from mmflow import Guidance, StreamBatch, generate

    model = build_f5tts_mmdit(TINY, text_num_embeds=TINY["text_num_embeds"]).eval()
    calls = []
    encoder = model.backbones["audio"].text_embed
    original = encoder.forward
    encoder.forward = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    text = torch.randint(0, TINY["text_num_embeds"], (1, 12))
    batch = {"audio": StreamBatch.from_lengths(torch.randn(1, 40, 100), extras={"text": text})}
    generate(model, batch, steps=4, guidance=Guidance(scales={"audio": 2.0}), generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1
