"""LoRA through peft (issue 14, item 4): an adapter trained on an ``MMDiT`` saves in diffusers' format, loads onto
a fresh pipeline with identical outputs, fuses, mixes with another, unloads to the base model exactly, and bad
adapter files are refused before anything is attached."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mmflow import FlowMatchingObjective, FlowMatchingScheduler, MMDiT, MMFlowPipeline
from mmflow.lora_loading import LoRAFileError, MMFlowLoraLoaderMixin
from mmflow.testing import random_batches, randomize, streams_config
from mmflow.training.lora import apply_lora, lora_merged, save_adapter

pytestmark = pytest.mark.usefixtures("one_thread")

RATES = {"signal": 50, "gesture": 15}  # the toy plugin's streams: its tasks run on this model


class _P(MMFlowPipeline, MMFlowLoraLoaderMixin):
    """The pipeline as it will be once the mixin is among MMFlowPipeline's bases."""


def tiny_model(seed: int = 0) -> MMDiT:
    torch.manual_seed(seed)
    return randomize(MMDiT(**streams_config(RATES)), seed=seed)


def pipeline(seed: int = 0) -> _P:
    return _P(tiny_model(seed), FlowMatchingScheduler(num_inference_steps=2))


SIGNAL = torch.randn(30, 1, generator=torch.Generator().manual_seed(1)).numpy()


def generate(pipe) -> np.ndarray:
    return pipe("gesture_from_signal", signal=SIGNAL, num_inference_steps=2, progress=False, seed=0).outputs[0]["gesture"]


def velocities(model: MMDiT) -> dict[str, torch.Tensor]:
    batches = random_batches(model)
    g = torch.Generator().manual_seed(2)
    x = {n: torch.randn(b.latent.shape, generator=g) for n, b in batches.items()}
    with torch.no_grad():
        return model.eval()(x, torch.full((2,), 0.4), batches)


def assert_close(a: dict, b: dict, atol: float):
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol)


def perturb_adapter(model: MMDiT, name: str, seed: int, std: float = 0.3):
    """Give an adapter's B factors (zero at creation) values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if f".lora_B.{name}." in key:
                p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A rank-4 adapter trained for 8 steps on a tiny model and saved with ``save_adapter``."""
    torch.set_num_threads(1)
    model = tiny_model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = apply_lora(model, rank=4, alpha=8.0, targets=["to_q", "to_k", "to_v", "to_out.0"])
    batches = random_batches(model, seconds=(1.0, 0.8))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    objective, losses = FlowMatchingObjective(), []
    model.train()
    for _ in range(8):
        loss = objective(model, batches, torch.Generator().manual_seed(0)).total  # the same noise every step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    folder = tmp_path_factory.mktemp("adapter") / "lora"
    save_adapter(model, folder)
    return {"model": model, "base": base, "wrapped": wrapped, "losses": losses, "folder": folder}


# ------------------------------------------------------------------------------------------------ training


def test_a_peft_adapter_trains_only_its_factors(trained):
    model, losses = trained["model"], trained["losses"]
    assert len(trained["wrapped"]) == 2 * 2 * 4  # q, k, v, out of 2 blocks of 2 streams
    assert losses[-1] < 0.9 * losses[0], losses
    assert sorted(model.peft_config) == ["default"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    # the base weights did not move: peft keeps them as base_layer
    for key, value in model.state_dict().items():
        if ".lora_" not in key:
            assert torch.equal(value, trained["base"][key.replace(".base_layer.", ".")]), key


def test_apply_lora_skips_frozen_layers_and_refuses_targets_that_match_nothing():
    model = tiny_model()
    model.backbones["signal"].requires_grad_(False)  # a frozen stream (a training stage)
    wrapped = apply_lora(model, rank=2, alpha=2.0, targets=["to_q"])
    assert wrapped == [f"backbones.gesture.transformer_blocks.{i}.attn.to_q" for i in range(2)]
    with pytest.raises(ValueError, match="match no trainable linear layer"):
        apply_lora(tiny_model(), rank=2, alpha=2.0, targets=["nonexistent"])


def test_apply_lora_draws_the_same_adapter_whatever_ran_before():
    first = tiny_model()
    apply_lora(first, rank=2, alpha=2.0)
    torch.rand(100)  # another consumer of the global generator
    second = tiny_model()
    state = torch.random.get_rng_state()
    apply_lora(second, rank=2, alpha=2.0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is untouched
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_lora_merged_gives_a_plain_merged_model_and_restores_the_adapter_exactly(trained, tmp_path):
    model = trained["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = velocities(model)
    with lora_merged(model):
        state = model.state_dict()
        assert set(state) == set(trained["base"])  # no peft keys: an ordinary MMDiT
        assert not torch.equal(state["backbones.signal.transformer_blocks.0.attn.to_q.weight"],
                               trained["base"]["backbones.signal.transformer_blocks.0.attn.to_q.weight"])
        model.save_pretrained(tmp_path / "merged")
    with lora_merged(model, merge=False):
        for key, value in model.state_dict().items():
            assert torch.equal(value, trained["base"][key]), key
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert_close(velocities(MMDiT.from_pretrained(tmp_path / "merged")), expected, atol=1e-5)


def test_mmdit_has_diffusers_adapter_calls():
    from peft import LoraConfig

    model = tiny_model()
    base = velocities(model)
    model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k"]), adapter_name="one")
    assert_close(velocities(model), base, atol=0)  # B starts at zero
    perturb_adapter(model, "one", seed=4)
    adapted = velocities(model)
    assert (adapted["gesture"] - base["gesture"]).abs().max() > 1e-3 and model.active_adapters() == ["one"]
    model.disable_adapters()
    assert_close(velocities(model), base, atol=0)
    model.enable_adapters()
    assert_close(velocities(model), adapted, atol=0)
    model.fuse_lora()
    assert_close(velocities(model), adapted, atol=1e-5)
    model.unfuse_lora()
    assert_close(velocities(model), adapted, atol=1e-5)
    model.delete_adapters("one")
    assert not getattr(model, "peft_config", None) and not any(".lora_" in key for key in model.state_dict())
    assert_close(velocities(model), base, atol=1e-5)  # unfused: the base weights to float rounding


# ------------------------------------------------------------------------------------------------ pipeline


def test_the_saved_adapter_is_diffusers_format_and_loads_onto_a_fresh_pipeline(trained):
    path = trained["folder"] / "pytorch_lora_weights.safetensors"
    tensors = load_file(path)
    assert all(k.startswith("transformer.") and ".lora_" in k and ".default." not in k for k in tensors)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        config = json.loads(file.metadata()["lora_adapter_metadata"])
    assert config["transformer.r"] == 4 and config["transformer.lora_alpha"] == 8.0

    pipe = pipeline()  # the same base weights, no adapter
    assert pipe.get_active_adapters() == []
    base = generate(pipe)
    pipe.load_lora_weights(trained["folder"], adapter_name="style")
    assert pipe.get_active_adapters() == ["style"]
    assert_close(velocities(pipe.transformer), velocities(trained["model"]), atol=0)
    out = generate(pipe)
    reference = pipeline()
    with lora_merged(trained["model"]):  # the trained model itself, in a pipeline
        reference.transformer.load_state_dict(trained["model"].state_dict())
    np.testing.assert_allclose(out, generate(reference), rtol=0, atol=1e-5)
    assert np.abs(out - base).max() > 1e-3  # the adapter changes the output

    # a diffusers user's call: the file itself, with weight_name, and save_lora_weights of the loaded adapter
    again = pipeline()
    again.load_lora_weights(str(trained["folder"]), weight_name="pytorch_lora_weights.safetensors")
    np.testing.assert_array_equal(generate(again), out)


def test_save_lora_weights_round_trips(trained, tmp_path):
    from peft.utils import get_peft_model_state_dict

    pipe = pipeline()
    pipe.load_lora_weights(trained["folder"], adapter_name="a")
    _P.save_lora_weights(tmp_path / "copy", transformer_lora_layers=get_peft_model_state_dict(pipe.transformer, adapter_name="a"),
                         transformer_lora_adapter_metadata=pipe.transformer.peft_config["a"].to_dict())
    pipe.save_lora_adapter(tmp_path / "own")
    pipe.transformer.save_lora_adapter(tmp_path / "model-level", adapter_name="a")  # diffusers' model call
    for folder in ("copy", "own", "model-level"):
        fresh = pipeline()
        fresh.load_lora_weights(tmp_path / folder)
        assert fresh.transformer.peft_config[fresh.get_active_adapters()[0]].lora_alpha == 8.0
        assert_close(velocities(fresh.transformer), velocities(pipe.transformer), atol=0)
    with pytest.raises(ValueError, match="safetensors"):
        _P.save_lora_weights(tmp_path / "x", transformer_lora_layers={"a": torch.ones(1)}, safe_serialization=False)


def test_fuse_equals_unfused_and_unfuse_restores(trained):
    pipe = pipeline()
    pipe.load_lora_weights(trained["folder"])
    unfused = velocities(pipe.transformer)
    pipe.fuse_lora()
    assert pipe.num_fused_loras == 1
    assert_close(velocities(pipe.transformer), unfused, atol=1e-5)
    pipe.unfuse_lora()
    assert pipe.num_fused_loras == 0
    assert_close(velocities(pipe.transformer), unfused, atol=1e-5)

    # a scaled fusion equals the adapter at that weight, and unfusing undoes the scale too
    pipe.fuse_lora(lora_scale=0.5)
    fused_half = velocities(pipe.transformer)
    pipe.unfuse_lora()
    assert_close(velocities(pipe.transformer), unfused, atol=1e-5)
    pipe.set_adapters(pipe.get_active_adapters(), [0.5])
    assert_close(velocities(pipe.transformer), fused_half, atol=1e-5)


def test_unload_gives_the_base_outputs_exactly_and_fuse_then_unload_bakes_the_adapter(trained, tmp_path):
    pipe = pipeline()
    base_out, base_v = generate(pipe), velocities(pipe.transformer)
    pipe.load_lora_weights(trained["folder"])
    adapted = velocities(pipe.transformer)
    pipe.unload_lora_weights()
    assert pipe.get_active_adapters() == []
    np.testing.assert_array_equal(generate(pipe), base_out)
    assert_close(velocities(pipe.transformer), base_v, atol=0)

    pipe.load_lora_weights(trained["folder"])  # loads again after an unload
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # diffusers' way to bake an adapter in: a plain MMDiT with the update merged
    assert_close(velocities(pipe.transformer), adapted, atol=1e-5)
    pipe.transformer.save_pretrained(tmp_path / "baked")
    assert_close(velocities(MMDiT.from_pretrained(tmp_path / "baked")), adapted, atol=1e-5)


def test_two_adapters_mix_with_set_adapters_weights(tmp_path):
    from mmflow.lora_loading import save_transformer_adapter

    for name, seed in (("a", 1), ("b", 2)):  # different ranks; both adapt to_q
        model = tiny_model()
        targets = ["to_q", "to_v"] if name == "a" else ["to_q", "to_k"]
        apply_lora(model, rank=2 if name == "a" else 3, alpha=4.0, targets=targets)
        perturb_adapter(model, "default", seed)
        save_transformer_adapter(model, tmp_path / name)
    pipe = pipeline()
    pipe.load_lora_weights(tmp_path / "a", adapter_name="a")
    pipe.load_lora_weights(tmp_path / "b", adapter_name="b")
    assert sorted(pipe.get_list_adapters()["transformer"]) == ["a", "b"]
    pipe.set_adapters(["a", "b"], [0.7, -0.4])
    assert sorted(pipe.get_active_adapters()) == ["a", "b"]
    mixed = velocities(pipe.transformer)

    # the same mix written out by hand: W + 0.7 ΔW_a + (-0.4) ΔW_b in a plain model
    expected = tiny_model()
    state = expected.state_dict()
    for weight, folder in ((0.7, "a"), (-0.4, "b")):
        factors = load_file(tmp_path / folder / "pytorch_lora_weights.safetensors")
        rank = 2 if folder == "a" else 3
        for key, down in factors.items():
            if ".lora_A." in key:
                module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
                up = factors[key.replace(".lora_A.", ".lora_B.")]
                state[module + ".weight"] += weight * (4.0 / rank) * up @ down
    expected.load_state_dict(state)
    assert_close(mixed, velocities(expected), atol=1e-5)

    pipe.set_adapters("a")  # one adapter alone, the other off
    assert pipe.get_active_adapters() == ["a"]
    only_a = pipeline()
    only_a.load_lora_weights(tmp_path / "a")
    assert_close(velocities(pipe.transformer), velocities(only_a.transformer), atol=0)
    with pytest.raises(ValueError, match="not in the list of present adapters"):
        pipe.set_adapters(["c"])
    with pytest.raises(ValueError, match="already loaded"):
        pipe.load_lora_weights(tmp_path / "b", adapter_name="b")


def test_peft_save_pretrained_folders_load_too(trained, tmp_path):
    """peft's own layout: ``adapter_model.safetensors`` (keys ``base_model.model.…``) + ``adapter_config.json``."""
    from peft import LoraConfig, get_peft_model

    model = tiny_model()
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=6, target_modules=["to_out.0"]))
    perturb_adapter(peft_model, "default", seed=3)
    peft_model.save_pretrained(tmp_path / "peft")
    assert {p.name for p in (tmp_path / "peft").iterdir()} >= {"adapter_model.safetensors", "adapter_config.json"}
    expected = velocities(peft_model)
    pipe = pipeline()
    pipe.load_lora_weights(tmp_path / "peft")
    assert pipe.transformer.peft_config[pipe.get_active_adapters()[0]].lora_alpha == 6
    assert_close(velocities(pipe.transformer), expected, atol=1e-6)


def test_a_state_dict_without_config_loads_with_alpha_equal_to_rank(trained, caplog):
    """diffusers' convention for adapters that carry no LoraConfig: rank from the factors, scale 1."""
    tensors = load_file(trained["folder"] / "pytorch_lora_weights.safetensors")
    pipe = pipeline()
    pipe.load_lora_weights(tensors, adapter_name="bare")
    assert "has no saved LoraConfig: rank 4" in caplog.text
    config = pipe.transformer.peft_config["bare"]
    assert (config.r, config.lora_alpha) == (4, 4)
    pipe.set_adapters("bare", 2.0)  # alpha 8 / rank 4 is what it was trained with
    assert_close(velocities(pipe.transformer), velocities(trained["model"]), atol=1e-6)


# ------------------------------------------------------------------------------------------------ refusals


def _unchanged(pipe) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return not any(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules())


class _Planted:
    """Unpickling this creates a file: a stand-in for code that a pickled 'adapter' could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_is_refused_unread(tmp_path):
    marker = tmp_path / "ran"
    for name in ("pytorch_lora_weights.bin", "adapter.pt"):
        (tmp_path / name).write_bytes(pickle.dumps(_Planted(marker)))
        pipe = pipeline()
        with pytest.raises(LoRAFileError, match=rf"{name} is not a \.safetensors file"):
            pipe.load_lora_weights(tmp_path / name)
        assert not marker.exists() and _unchanged(pipe)
    with pytest.raises(LoRAFileError, match="holds neither pytorch_lora_weights.safetensors"):
        pipeline().load_lora_weights(tmp_path)  # only .bin files there: nothing is unpickled instead


@pytest.mark.parametrize("case", ["model checkpoint", "damaged", "unknown modules", "rank mismatch", "wrong shapes",
                                  "half a pair", "not lora"])
def test_bad_adapters_are_refused_naming_the_file_and_the_fix(trained, tmp_path, case):
    source = trained["folder"] / "pytorch_lora_weights.safetensors"
    tensors = load_file(source)
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as file:
        metadata = dict(file.metadata())
    if case == "model checkpoint":
        tensors, metadata, message = {f"transformer.{k}": v for k, v in tiny_model().state_dict().items()}, {}, \
            "is not a LoRA adapter"
    elif case == "unknown modules":
        tensors = {k.replace("to_q", "to_query"): v for k, v in tensors.items()}
        message = "this model does not have as linear layers"
    elif case == "rank mismatch":
        config = json.loads(metadata["lora_adapter_metadata"])
        config["transformer.r"] = 8
        metadata["lora_adapter_metadata"] = json.dumps(config)
        message = "has rank 4, its saved config says rank 8"
    elif case == "wrong shapes":
        key = next(k for k in tensors if ".lora_A." in k)
        tensors[key] = torch.zeros(4, 7)
        message = "maps 7 -> 32 features, the model's layer 32 -> 32"
    elif case == "half a pair":
        tensors.pop(next(k for k in tensors if ".lora_B." in k))
        message = "has only lora_A"
    elif case == "not lora":
        config = json.loads(metadata["lora_adapter_metadata"])
        config["transformer.peft_type"] = "LOHA"
        metadata["lora_adapter_metadata"] = json.dumps(config)
        message = "is a peft LOHA adapter, not LoRA"
    path = tmp_path / "pytorch_lora_weights.safetensors"
    if case == "damaged":
        path.write_bytes(source.read_bytes()[:200])
        message = "is not a readable safetensors file"
    else:
        save_file(tensors, str(path), metadata=metadata)
    pipe = pipeline()
    with pytest.raises(LoRAFileError) as error:
        pipe.load_lora_weights(tmp_path)
    assert message in str(error.value) and str(path) in str(error.value)
    assert _unchanged(pipe)


def test_unsupported_diffusers_options_are_refused_not_ignored(trained):
    with pytest.raises(TypeError, match=r"does not support \['hotswap'\]"):
        pipeline().load_lora_weights(trained["folder"], hotswap=True)


def test_a_model_saved_with_adapters_attached_names_the_fix(trained, tmp_path):
    trained["model"].save_pretrained(tmp_path / "with-adapters")  # diffusers writes the peft layers' keys
    with pytest.raises(ValueError, match="saved with LoRA adapters attached: bake them in first"):
        MMDiT.from_pretrained(tmp_path / "with-adapters")
