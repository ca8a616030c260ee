import json

import pytest
import torch

from mmflow import MMDiT
from mmflow.testing import randomize, tiny_batches, tiny_config, tiny_model
from mmflow.transformer import resolve_joint_schedule


def noisy_inputs(batches, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(b.latent.shape, generator=g) for n, b in batches.items()}


def test_schedules_resolve():
    assert resolve_joint_schedule("half", [22, 22]) == tuple(range(11))
    assert resolve_joint_schedule("full", [4, 6]) == (0, 1, 2, 3)
    assert resolve_joint_schedule("none", [4, 4]) == ()
    assert resolve_joint_schedule([3, 1], [4, 4]) == (1, 3)
    with pytest.raises(ValueError, match="out of range"):
        resolve_joint_schedule([5], [4, 6])
    with pytest.raises(ValueError, match="joint_schedule must be"):
        resolve_joint_schedule("most", [4, 4])


def _cross_gradient(model, batches, source="slow", target="fast"):
    """d(target velocity) / d(source noisy input): zero iff the target cannot see the source."""
    x = noisy_inputs(batches)
    x[source].requires_grad_(True)
    out = model(x, torch.full((2,), 0.5), batches)
    out[target].pow(2).sum().backward()
    grad = x[source].grad  # None: no path from source to target at all
    return 0.0 if grad is None else grad.abs().sum().item()


def test_no_joint_layers_means_no_cross_stream_dependence():
    batches = tiny_batches()
    model = tiny_model(schedule="none")
    assert _cross_gradient(model, batches, "slow", "fast") == 0.0
    assert _cross_gradient(model, batches, "fast", "slow") == 0.0
    coupled = tiny_model(schedule="half")
    assert _cross_gradient(coupled, batches, "slow", "fast") > 0
    assert _cross_gradient(coupled, batches, "fast", "slow") > 0


def _hidden_after_each_step(model, x, batches):
    """Record each stream's hidden state after every block (via the blocks' ``finish``)."""
    record = {}
    for name, backbone in model.backbones.items():
        for i, block in enumerate(backbone.transformer_blocks):
            original = block.finish

            def finish(*args, _orig=original, _key=(name, i), **kwargs):
                out = _orig(*args, **kwargs)
                record[_key] = out.detach().clone()
                return out

            block.finish = finish
    model(x, torch.full((2,), 0.5), batches)
    for backbone in model.backbones.values():
        for block in backbone.transformer_blocks:
            del block.finish  # back to the class method
    return record


@pytest.mark.parametrize("schedule", [[1], [2, 3], "half"])
def test_only_scheduled_layers_couple(schedule):
    batches = tiny_batches()
    model = tiny_model(schedule=schedule)
    x = noisy_inputs(batches)
    before = _hidden_after_each_step(model, x, batches)
    x2 = dict(x, slow=x["slow"] + torch.randn_like(x["slow"]))  # change only the other stream
    after = _hidden_after_each_step(model, x2, batches)
    first_joint = min(model.joint_steps)
    for step in range(4):
        changed = not torch.equal(before[("fast", step)], after[("fast", step)])
        assert changed == (step >= first_joint), (schedule, step)


def test_joint_view_switch_cuts_one_direction_only():
    batches = tiny_batches()
    model = tiny_model(schedule="full")
    x = noisy_inputs(batches)
    x["slow"].requires_grad_(True)
    out = model(x, torch.full((2,), 0.5), batches, joint_view={"fast": False})
    out["fast"].pow(2).sum().backward()
    assert x["slow"].grad is None or x["slow"].grad.abs().sum() == 0  # fast ignores slow
    x = noisy_inputs(batches)
    x["fast"].requires_grad_(True)
    out = model(x, torch.full((2,), 0.5), batches, joint_view={"fast": False})
    out["slow"].pow(2).sum().backward()
    assert x["fast"].grad.abs().sum() > 0  # slow still sees fast


def test_streams_may_have_different_depths():
    model = tiny_model(schedule="full", depth_a=5, depth_b=3)
    assert model.joint_steps == (0, 1, 2) and model.num_steps == 5
    batches = tiny_batches()
    out = model(noisy_inputs(batches), torch.full((2,), 0.3), batches)
    assert out["fast"].shape == batches["fast"].latent.shape


def test_joint_heads_must_match():
    config = tiny_config()
    config["streams"]["slow"]["backbone_config"]["heads"] = 4
    with pytest.raises(ValueError, match="share heads"):
        MMDiT(**config)


def test_bad_configs_name_the_problem():
    config = tiny_config()
    config["mask_policy"] = {"rules": [{"query": "slow", "key": "video", "rule": "all"}]}
    with pytest.raises(ValueError, match="stream 'video'"):
        MMDiT(**config)
    config = tiny_config()
    config["streams"]["fast"]["backbone"] = "unet"
    with pytest.raises(Exception, match="no backbone named 'unet'"):
        MMDiT(**config)
    config = tiny_config()
    config["streams"]["fast"]["colour"] = "red"
    with pytest.raises(ValueError, match="unknown keys"):
        MMDiT(**config)


def test_batch_rows_are_independent_with_key_padding():
    """With padding masked, each sample's output equals running it alone."""
    model = tiny_model(schedule="half")
    batches = tiny_batches(seconds=(1.0, 0.6))
    x = noisy_inputs(batches)
    t = torch.tensor([0.3, 0.7])
    both = model(x, t, batches)
    for i, seconds in enumerate((1.0, 0.6)):
        rows = {n: b.select(slice(i, i + 1)) for n, b in batches.items()}
        n_frames = {"fast": round(seconds * 50), "slow": round(seconds * 15)}
        rows = {n: b.map(lambda t_, k=n_frames[n]: t_[:, :k] if t_.ndim > 1 else t_) for n, b in rows.items()}
        alone = model({n: x[n][i : i + 1, : n_frames[n]] for n in x}, t[i : i + 1], rows)
        for n in x:
            torch.testing.assert_close(both[n][i, : n_frames[n]], alone[n][0], rtol=1e-5, atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    batches = tiny_batches()
    x = noisy_inputs(batches)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["joint_schedule"] == "half" and config["streams"]["slow"]["frame_rate"] == "15"
    loaded = MMDiT.from_pretrained(tmp_path / "m")
    t = torch.full((2,), 0.4)
    assert all(torch.equal(model(x, t, batches)[n], loaded(x, t, batches)[n]) for n in x)


def test_loading_into_a_mismatched_config_fails(tmp_path):
    tiny_model().save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["streams"]["fast"]["backbone_config"]["depth"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match its config"):
        MMDiT.from_pretrained(tmp_path / "m")


def test_fresh_model_predicts_zero():
    model = MMDiT(**tiny_config())
    batches = tiny_batches()
    out = model(noisy_inputs(batches), torch.full((2,), 0.5), batches)
    assert all(v.abs().max() == 0 for v in out.values())
    randomize(model)


def test_a_prepared_plan_gives_the_same_velocities():
    model = tiny_model(schedule="half")
    batches = tiny_batches()
    x = noisy_inputs(batches)
    t = torch.tensor([0.2, 0.9])
    view = {"slow": torch.tensor([True, False])}
    plan = model.plan(batches, drop={"fast": True}, joint_view=view)
    direct = model(x, t, batches, drop={"fast": True}, joint_view=view)
    planned = model(x, t, batches, plan=plan)
    assert all(torch.equal(direct[n], planned[n]) for n in direct)


def test_a_stream_config_takes_its_spec_from_the_registered_stream(tmp_path):
    backbone = {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8}
    model = MMDiT(streams={"signal": {"frame_rate": "50", "channels": 1, "backbone_config": backbone},
                           "gesture": {"stream": "gesture", "backbone_config": backbone}})
    assert model.specs["gesture"].frame_rate == 15 and model.specs["gesture"].channels == 1
    model.save_pretrained(tmp_path)
    assert MMDiT.from_pretrained(tmp_path).stream_names == ["signal", "gesture"]  # not the JSON's sorted order
    with pytest.raises(ValueError, match=r"names the registered stream 'gesture' \(plugin 'toy_gesture'\).*"
                                         r"frame_rate: config '30/1' vs registered '15/1'"):
        MMDiT(streams={"g": {"stream": "gesture", "frame_rate": "30", "backbone_config": backbone}})
