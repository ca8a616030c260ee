"""MMDiT's plumbing pinned where the mutation study (benchmarks/mutation.py) found it unguarded: per-stream
switches given as one value or per stream, segment offsets with three streams, masks with and without padding
masking, the joint masks it compiles, stream lookup and strict loading options."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmflow import MMDiT, StreamBatch
from mmflow.backbone import DiTBackbone, hide_dropped
from mmflow.positions import rotary_table
from mmflow.testing import randomize, tiny_batches, tiny_config, tiny_model


def test_switches_as_one_value_or_per_stream():
    model, batches = tiny_model(), tiny_batches()
    plan = model.plan(batches, drop=True, joint_view=False)
    assert all(plan.drops[n].tolist() == [True, True] for n in batches)
    assert all(plan.views[n].tolist() == [False, False] for n in batches)
    plan = model.plan(batches, drop={"fast": True}, joint_view={"slow": torch.tensor([True, False])})
    assert plan.drops["fast"].tolist() == [True, True] and plan.drops["slow"].tolist() == [False, False]
    assert plan.views["fast"].tolist() == [True, True] and plan.views["slow"].tolist() == [True, False]
    with pytest.raises(KeyError, match="unknown stream"):
        model.plan(batches, drop={"audio": True})


def test_joint_masks_name_their_streams_and_follow_mask_padding():
    batches = tiny_batches()
    plan = tiny_model(depth_a=4, depth_b=2, schedule="full").plan(batches)
    assert list(plan.joint_masks) == [("fast", "slow")]  # a stream past its depth is never joint alone
    mask = plan.joint_masks[("fast", "slow")]
    assert [(s.name, s.offset, s.length) for s in mask.segments] == [("fast", 0, 50), ("slow", 50, 15)]
    assert torch.equal(mask.key_valid, torch.cat([batches["fast"].valid, batches["slow"].valid], dim=1))
    assert torch.equal(plan.alone_masks["slow"].key_valid, batches["slow"].valid)
    unmasked = tiny_model(mask_padding=False).plan(batches)
    assert unmasked.joint_masks[("fast", "slow")].key_valid is None
    assert all(m.key_valid is None for m in unmasked.alone_masks.values())


def test_three_streams_lie_back_to_back():
    config = tiny_config()
    mid = dict(config["streams"]["slow"], frame_rate="25", cond_channels=0)
    config["streams"]["mid"] = mid
    model = randomize(MMDiT(**config))
    batches = dict(tiny_batches(), mid=StreamBatch.from_lengths(torch.randn(2, 25, 2), [25, 15]))
    mask = model.plan(batches).joint_masks[tuple(model.stream_names)]
    offsets = {s.name: (s.offset, s.length) for s in mask.segments}
    assert offsets == {"fast": (0, 50), "slow": (50, 15), "mid": (65, 25)}


def test_stream_lookup():
    model = tiny_model()
    assert model.stream_spec("fast").frame_rate == 50 and model.stream_spec("slow").channels == 2
    with pytest.raises(KeyError, match="unknown stream 'audio'"):
        model.stream_spec("audio")


def test_strict_loading_passes_options_and_refuses_missing_weights(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ok")
    loaded, info = MMDiT.from_pretrained(tmp_path / "ok", output_loading_info=True)
    assert isinstance(loaded, MMDiT) and not info["missing_keys"] and not info["unexpected_keys"]
    assert isinstance(MMDiT.from_pretrained(tmp_path / "ok"), MMDiT)
    assert next(MMDiT.from_pretrained(tmp_path / "ok", torch_dtype=torch.float64).parameters()).dtype == torch.float64

    model.save_pretrained(tmp_path / "cut")
    weights = next((tmp_path / "cut").glob("*.safetensors"))
    state = load_file(weights)
    state.pop(sorted(state)[0])
    save_file(state, weights)
    with pytest.raises(ValueError, match="missing_keys"):
        MMDiT.from_pretrained(tmp_path / "cut")


def test_time_as_a_float_a_batch_or_per_stream():
    model, batches = tiny_model(), tiny_batches()
    x = {n: torch.randn(b.latent.shape, generator=torch.Generator().manual_seed(1)) for n, b in batches.items()}
    by_float = model(x, 0.3, batches)
    by_batch = model(x, torch.tensor([0.3, 0.3]), batches)
    by_stream = model(x, {"fast": torch.tensor([0.3, 0.3]), "slow": 0.3}, batches)
    for name in batches:
        torch.testing.assert_close(by_float[name], by_batch[name])
        torch.testing.assert_close(by_float[name], by_stream[name])
    later = model(x, {"fast": 0.3, "slow": 0.7}, batches)
    assert not torch.allclose(later["slow"], by_float["slow"])


def test_absent_streams_are_not_computed_and_come_back_as_zeros():
    model, batches = tiny_model(), tiny_batches()
    x = {n: torch.randn(b.latent.shape, generator=torch.Generator().manual_seed(2)) for n, b in batches.items()}
    out = model(x, 0.5, batches, absent=("slow",))
    assert torch.equal(out["slow"], torch.zeros_like(x["slow"]))
    assert not torch.allclose(out["fast"], model(x, 0.5, batches)["fast"])  # it no longer sees the slow stream
    plan = model.plan(batches)
    assert all(plan.drops[n].tolist() == [False, False] and plan.views[n].tolist() == [True, True] for n in batches)
    with pytest.raises(KeyError, match="absent names unknown"):
        model.plan(batches, absent=("audio",))


def test_joint_schedules_by_depth():
    from mmflow.transformer import resolve_joint_schedule

    assert resolve_joint_schedule("half", [4, 4]) == (0, 1) and resolve_joint_schedule("full", [4, 2]) == (0, 1)
    assert resolve_joint_schedule("half", [4, 2]) == (0,) and resolve_joint_schedule("half", [1, 1]) == (0,)
    assert resolve_joint_schedule("full", [3]) == () and resolve_joint_schedule("half", [3]) == ()
    assert resolve_joint_schedule("none", [4, 4]) == ()
    assert resolve_joint_schedule([1, 0, 1], [4, 2]) == (0, 1)
    with pytest.raises(ValueError, match="out of range"):
        resolve_joint_schedule([2], [4, 2])


def test_stream_specs_keep_conditions_and_position_from_the_config():
    config = tiny_config()
    config["streams"]["fast"]["position"] = "index"
    model = MMDiT(**config)
    assert model.stream_spec("slow").cond_channels == 1 and model.stream_spec("fast").cond_channels == 0
    assert model.stream_spec("fast").position == "index" and model.stream_spec("slow").position == "scaled"


def test_rope_heads_reaches_the_attention():
    """A backbone that rotates only its first head (F5-TTS v0) rotates only that head in every step."""
    batches = tiny_batches()
    x = {n: torch.randn(b.latent.shape, generator=torch.Generator().manual_seed(3)) for n, b in batches.items()}
    model = tiny_model(schedule="full")
    everywhere = model(x, 0.4, batches)
    for backbone in model.backbones.values():
        backbone.rope_heads = 1
    first_head = model(x, 0.4, batches)
    for name in batches:
        assert not torch.allclose(everywhere[name], first_head[name]), name


def test_a_float64_model_takes_a_float_time():
    model, batches = tiny_model().double(), tiny_batches()
    batches = {n: b.map(lambda v: v.double() if v.is_floating_point() else v) for n, b in batches.items()}
    x = {n: torch.randn(b.latent.shape, dtype=torch.float64) for n, b in batches.items()}
    assert all(v.dtype == torch.float64 for v in model(x, 0.3, batches).values())


def test_streams_of_three_depths_get_every_joint_group():
    config = tiny_config(schedule="full", depth_a=4, depth_b=2)
    config["streams"]["mid"] = dict(config["streams"]["slow"], frame_rate="25", cond_channels=0,
                                    backbone_config=dict(config["streams"]["slow"]["backbone_config"], depth=3))
    model = randomize(MMDiT(**config))
    batches = dict(tiny_batches(), mid=StreamBatch.from_lengths(torch.randn(2, 25, 2), [25, 15]))
    plan = model.plan(batches)
    assert set(plan.joint_masks) == {("fast", "slow", "mid"), ("fast", "mid")}
    x = {n: torch.randn(b.latent.shape) for n, b in batches.items()}
    assert all(torch.isfinite(v).all() for v in model(x, 0.5, batches, plan=plan).values())


def test_rope_heads_rotates_the_same_heads_of_queries_and_keys():
    """With ``rope_heads=1`` the attention sees head 0 of q and k rotated and every other head as projected."""
    batches = tiny_batches()
    x = {n: torch.randn(b.latent.shape, generator=torch.Generator().manual_seed(3)) for n, b in batches.items()}
    model = tiny_model(schedule="none")  # every stream attends alone: one attention call per stream and step
    projected, attended = [], []
    for backbone in model.backbones.values():
        backbone.rope_heads = 1
        for block in backbone.transformer_blocks:
            def project(h, c, _inputs=block.attention_inputs):
                out = _inputs(h, c)
                projected.append(out[0][:2])
                return out
            block.attention_inputs = project
    attend = model._attend
    model._attend = lambda q, k, v, mask: attended.append((q, k)) or attend(q, k, v, mask)
    model(x, 0.4, batches)
    assert len(attended) == len(projected) == 8
    for (q, k), (q0, k0) in zip(attended, projected, strict=True):
        assert torch.equal(q[:, 1:], q0[:, 1:]) and torch.equal(k[:, 1:], k0[:, 1:])
        assert not torch.allclose(q[:, :1], q0[:, :1]) and not torch.allclose(k[:, :1], k0[:, :1])


def test_seconds_positions_follow_the_reference_rate():
    config = tiny_config()
    for stream in config["streams"].values():
        stream["position"] = "seconds"
    model = MMDiT(**config, position_reference_rate="25")
    batches = tiny_batches()
    tables = model.plan(batches).tables
    for name, rate in (("fast", 50), ("slow", 15)):
        n = batches[name].num_frames
        positions = (torch.arange(n, dtype=torch.float64) * (25 / rate))[None].float()
        expected = rotary_table(model.backbones[name].rotary_embed(positions))
        for got, want in zip(tables[name], expected, strict=True):
            torch.testing.assert_close(got, want)


class _PreparingDiT(DiTBackbone):
    """A DiT whose step-invariant features (the visible context) are made by ``prepare`` and whose output is
    zero on padding, as a plugin backbone may do: ``MMDiT`` must hand each the stream's batch and drops."""

    def prepare(self, batch, drop):
        self.prepare_calls = getattr(self, "prepare_calls", 0) + 1
        return hide_dropped(batch.context(), drop).sum(-1, keepdim=True)

    def embed(self, x_t, t, batch, drop, prepared=None):
        h, c = super().embed(x_t, t, batch, drop)
        return h + (self.prepare(batch, drop) if prepared is None else prepared), c

    def output(self, h, c, batch):
        return super().output(h, c, batch) * batch.valid[..., None]


def _preparing_model():
    model = tiny_model()
    for backbone in model.backbones.values():
        backbone.__class__ = _PreparingDiT
    return model


def test_prepare_gets_each_streams_batch_and_drops():
    model, batches = _preparing_model(), tiny_batches()
    plan = model.plan(batches, drop={"slow": torch.tensor([True, False])})
    for name, drop in (("fast", [False, False]), ("slow", [True, False])):
        expected = hide_dropped(batches[name].context(), torch.tensor(drop)).sum(-1, keepdim=True)
        torch.testing.assert_close(plan.prepared[name], expected)


def test_forward_uses_the_plans_prepared_features_and_the_batch_in_output():
    model, batches = _preparing_model(), tiny_batches()
    x = {n: torch.randn(b.latent.shape, generator=torch.Generator().manual_seed(4)) for n, b in batches.items()}
    plan = model.plan(batches)
    calls = {n: model.backbones[n].prepare_calls for n in batches}
    planned = model(x, 0.5, batches, plan=plan)
    assert {n: model.backbones[n].prepare_calls for n in batches} == calls  # not redone in the forward pass
    for name, batch in batches.items():
        assert torch.equal(planned[name][~batch.valid], torch.zeros_like(planned[name][~batch.valid]))
        assert bool((planned[name][batch.valid] != 0).any())
    plan.prepared["fast"] = torch.zeros_like(plan.prepared["fast"])
    assert not torch.allclose(model(x, 0.5, batches, plan=plan)["fast"], planned["fast"])


def test_strict_loading_refuses_mismatched_weights_and_stray_arguments(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    with pytest.raises(TypeError):
        MMDiT.from_pretrained(tmp_path, "stray")  # diffusers takes options by name only: not silently dropped
    weights = next(tmp_path.glob("*.safetensors"))
    state = load_file(weights)
    name = next(k for k, v in sorted(state.items()) if v.ndim == 2)
    state[name] = torch.zeros(state[name].shape[0] + 1, state[name].shape[1])
    save_file(state, weights)
    with pytest.raises(ValueError, match="mismatched_keys"):
        MMDiT.from_pretrained(tmp_path, ignore_mismatched_sizes=True, low_cpu_mem_usage=False)
