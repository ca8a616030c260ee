"""``sim_o``: UniSpeech's WavLM-Large ECAPA-TDNN loaded from random weights in the official file's key layout,
every key used, and F5-TTS's own ``ECAPA_TDNN`` computing the same embeddings and SIM-o from the same weights."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from mmflow_audio_f5tts.metrics.sim_o import build_verifier, make_sim_o, read_official_weights
from mmflow_audio_f5tts.metrics.wavlm import official_to_hf

from mmflow.codecs import InputError
from mmflow.evaluation import Metric, Sample

DIM, LAYERS, HEADS, FFN, CONV, POS_KERNEL, POS_GROUPS = 32, 2, 4, 64, 16, 16, 4
KERNELS = (10, 3, 3, 3, 3, 2, 2)


def unispeech_wavlm_shapes() -> dict[str, tuple[int, ...]]:
    """WavLM's weights as UniSpeech/s3prl name them (``WavLM.py``: ConvFeatureExtractionModel in layer_norm mode,
    weight-normed pos_conv, gated relative position bias in every layer, the bias table in layer 0), under
    ``feature_extract.model.`` as the verifier's checkpoint holds them; a tiny WavLM-Large-shaped model."""
    shapes = {"mask_emb": (DIM,), "layer_norm.weight": (CONV,), "layer_norm.bias": (CONV,),
              "post_extract_proj.weight": (DIM, CONV), "post_extract_proj.bias": (DIM,),
              "encoder.pos_conv.0.weight_g": (1, 1, POS_KERNEL),
              "encoder.pos_conv.0.weight_v": (DIM, DIM // POS_GROUPS, POS_KERNEL),
              "encoder.pos_conv.0.bias": (DIM,),
              "encoder.layer_norm.weight": (DIM,), "encoder.layer_norm.bias": (DIM,)}
    for i, kernel in enumerate(KERNELS):
        shapes[f"feature_extractor.conv_layers.{i}.0.weight"] = (CONV, 1 if i == 0 else CONV, kernel)
        shapes[f"feature_extractor.conv_layers.{i}.2.1.weight"] = (CONV,)
        shapes[f"feature_extractor.conv_layers.{i}.2.1.bias"] = (CONV,)
    for i in range(LAYERS):
        layer = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[f"{layer}self_attn.{proj}.weight"] = (DIM, DIM)
            shapes[f"{layer}self_attn.{proj}.bias"] = (DIM,)
        shapes[f"{layer}self_attn.grep_linear.weight"] = (8, DIM // HEADS)
        shapes[f"{layer}self_attn.grep_linear.bias"] = (8,)
        shapes[f"{layer}self_attn.grep_a"] = (1, HEADS, 1, 1)
        if i == 0:
            shapes[f"{layer}self_attn.relative_attention_bias.weight"] = (320, HEADS)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"{layer}{norm}.weight"], shapes[f"{layer}{norm}.bias"] = (DIM,), (DIM,)
        shapes[f"{layer}fc1.weight"], shapes[f"{layer}fc1.bias"] = (FFN, DIM), (FFN,)
        shapes[f"{layer}fc2.weight"], shapes[f"{layer}fc2.bias"] = (DIM, FFN), (DIM,)
    return {f"feature_extract.model.{key}": shape for key, shape in shapes.items()}


class HubStandIn(torch.nn.Module):
    """What F5-TTS's ECAPA_TDNN gets from ``torch.hub.load("s3prl/s3prl", "wavlm_large")`` (torch.hub needs the
    network): s3prl's ``UpstreamExpert`` logic (``upstream/wavlm/expert.py``) around a WavLM: layer-normalise each
    wave, run the model, and collect ``hidden_states`` with forward hooks, the input of every encoder layer and the
    encoder's output. The WavLM inside is ours (checked against s3prl's WavLM code separately, see
    docs/evaluation.md); the hooks and the normalisation here are independent of ``WavLMHiddenStates``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, waves):
        hidden = []
        hooks = [layer.register_forward_hook(lambda module, inputs, output: hidden.append(inputs[0]))
                 for layer in self.model.encoder.layers]
        encoder_output = self.model.encoder.register_forward_hook(lambda module, inputs, output: hidden.append(output[0]))
        hooks.append(encoder_output)
        try:
            assert len(waves) == 1, "F5-TTS scores one file at a time"
            self.model(F.layer_norm(waves[0], waves[0].shape)[None])
        finally:
            for hook in hooks:
                hook.remove()
        return {"hidden_states": hidden}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Random weights in the official ``wavlm_large_finetune.pth`` layout: ``{"model": state_dict}`` with the head
    keys of F5-TTS's own ECAPA_TDNN class and UniSpeech's WavLM keys; plus F5-TTS's model holding them."""
    ecapa_tdnn = pytest.importorskip("f5_tts.eval.ecapa_tdnn", reason="needs the f5-tts reference package")
    generator = torch.Generator().manual_seed(0)

    def rand(shape, name):
        if name.endswith("num_batches_tracked"):
            return torch.tensor(7)
        if "running_var" in name:
            return torch.rand(shape, generator=generator) + 0.5
        values = torch.randn(shape, generator=generator) * (0.05 if len(shape) > 1 else 0.1)
        return values + 1.0 if name.endswith(("norm.weight", "2.1.weight", "bn.weight", "weight_g")) else values

    weights = {name: rand(shape, name) for name, shape in unispeech_wavlm_shapes().items()}
    # The head's keys, shapes and buffers come from F5-TTS's class itself (hub replaced by our WavLM).
    ours = build_verifier(weights | _head_like(ecapa_tdnn), source="bootstrap")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.hub, "load", lambda *args, **kwargs: HubStandIn(ours.feature_extract.model))
        f5 = ecapa_tdnn.ECAPA_TDNN(feat_dim=DIM, channels=16, emb_dim=8, feat_type="wavlm_large").eval()
    head = {name: rand(tuple(value.shape), name) for name, value in f5.state_dict().items()
            if not name.startswith("feature_extract.")}
    weights |= head
    path = tmp_path_factory.mktemp("sim_o") / "wavlm_large_finetune.pth"
    torch.save({"model": weights}, path)
    result = f5.load_state_dict(head, strict=False)
    assert not result.unexpected_keys and all(key.startswith("feature_extract.") for key in result.missing_keys)
    return path, weights, f5


def _head_like(ecapa_tdnn) -> dict[str, torch.Tensor]:
    """A throwaway head state of F5-TTS's class for the same sizes, only to bootstrap a WavLM stand-in."""
    from mmflow_audio_f5tts.metrics.ecapa import EcapaHead

    return EcapaHead(num_hidden=LAYERS + 1, feat_dim=DIM, channels=16, emb_dim=8).state_dict()


def test_every_official_key_is_loaded(official):
    path, weights, _ = official
    verifier = build_verifier(read_official_weights(path))
    state = verifier.state_dict()
    assert len(state) == len(weights)  # nothing left over on either side
    for key, value in weights.items():
        mine = (f"feature_extract.model.{official_to_hf(key[len('feature_extract.model.'):])}"
                if key.startswith("feature_extract.") else f"head.{key}")
        torch.testing.assert_close(state[mine], value, rtol=0, atol=0, msg=key)


def test_embeddings_match_f5tts_class(official):
    path, _, f5 = official
    verifier = build_verifier(read_official_weights(path))
    wave = torch.randn(16_000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        expected = f5(wave[None])
        got = verifier(wave)
    assert got.shape == (1, 8)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_metric_matches_f5tts_run_sim(official, tmp_path):
    """SIM-o of a 24 kHz file against a 16 kHz prompt, as F5-TTS's ``run_sim`` computes it."""
    torchaudio = pytest.importorskip("torchaudio", reason="F5-TTS resamples with torchaudio")
    path, _, f5 = official
    rng = np.random.default_rng(3)
    generated, prompt = tmp_path / "gen.wav", tmp_path / "prompt.wav"
    sf.write(generated, (rng.standard_normal(24_000) * 0.1).astype(np.float32), 24_000, subtype="FLOAT")
    sf.write(prompt, (rng.standard_normal(20_000) * 0.1).astype(np.float32), 16_000, subtype="FLOAT")
    metric = make_sim_o({"checkpoint": str(path)}, tmp_path)
    assert isinstance(metric, Metric) and metric.reference_needs == {"prompt_audio|audio"}
    rows = metric.score([Sample("x", {"audio": generated}, reference={"prompt_audio": prompt})])
    wav1 = torch.from_numpy(sf.read(generated, dtype="float32")[0])[None]
    wav1 = torchaudio.transforms.Resample(24_000, 16_000)(wav1)
    wav2 = torch.from_numpy(sf.read(prompt, dtype="float32")[0])[None]
    with torch.no_grad():
        expected = F.cosine_similarity(f5(wav1), f5(wav2))[0].item()
    assert rows[0]["sim_o"] == pytest.approx(expected, abs=1e-5)
    assert rows[0]["reference"] == "prompt_audio"
    assert metric.summarise(rows) == {"sim_o": rows[0]["sim_o"], "reference": "prompt_audio"}
    assert metric.directions == {"sim_o": True}


def test_missing_checkpoint_names_the_option(tmp_path):
    with pytest.raises(InputError, match=r"sim_o\.checkpoint=PATH.*wavlm_large_finetune\.pth.*speaker_sim_ge2e"):
        make_sim_o({}, tmp_path)
    with pytest.raises(InputError, match="no such file"):
        make_sim_o({"checkpoint": str(tmp_path / "nope.pth")}, tmp_path)
    with pytest.raises(InputError, match="no option"):
        make_sim_o({"checkpiont": "x"}, tmp_path)


def test_files_of_another_layout_are_refused(official, tmp_path):
    path, weights, _ = official
    pickled = tmp_path / "code.pth"
    torch.save({"model": weights, "args": argparse.Namespace(lr=1)}, pickled)  # an object: needs unpickling
    refused = r"weights_only=True\), as F5-TTS reads it \(Unsupported global: GLOBAL argparse.Namespace\)"
    with pytest.raises(InputError, match=refused):
        read_official_weights(pickled)
    for name, broken in {
        "extra": weights | {"feature_extract.model.final_proj.weight": torch.zeros(2)},
        "missing": {k: v for k, v in weights.items() if not k.endswith("layers.1.fc2.bias")},
        "head": {k: v for k, v in weights.items() if not k.startswith("layer3.")},
        "wavlm": {k: v for k, v in weights.items() if not k.startswith("feature_extract.")},
    }.items():
        with pytest.raises(InputError, match="wavlm_large_finetune.pth"):
            build_verifier(broken, source=name)
    flat = tmp_path / "flat.pth"
    torch.save(weights, flat)
    with pytest.raises(InputError, match="'model' state dict"):
        read_official_weights(flat)
