"""mmflow.flow pinned where the mutation study (benchmarks/mutation.py) found it unguarded: span masks, seeded
randomness, dtypes and devices (on PyTorch's "meta" device), the midpoint step, and what GuidedVelocity hands
the model (masks, joint views, the precomputed plan)."""

from __future__ import annotations

import pytest
import torch

from mmflow.flow import (
    FlowMatchingObjective,
    Guidance,
    GuidedVelocity,
    integrate,
    interpolate,
    masked_mse,
    random_span_mask,
    sample_noise,
    time_grid,
)
from mmflow.testing import tiny_batches


def _on(batches, device=None, dtype=None):
    return {n: b.map(lambda v: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
            for n, b in batches.items()}


class Recorder:
    """A model that returns zeros and remembers every call, with a ``plan`` like MMDiT's."""

    def __init__(self):
        self.calls, self.plans = [], []

    def plan(self, batches, drop, joint_view, absent=()):
        self.plans.append((drop, joint_view, absent))
        return "the plan"

    def __call__(self, x, t, batches, drop=None, joint_view=None, plan=None):
        self.calls.append({"x": x, "t": t, "drop": drop, "joint_view": joint_view, "plan": plan})
        return {n: torch.zeros_like(v) for n, v in x.items()}


# ------------------------------------------------------------------------------------------------ training


def test_random_span_fraction_bounds():
    lengths = torch.tensor([10])
    for bad in [(0.0, 0.5), (0.6, 0.5), (0.5, 1.5)]:
        with pytest.raises(ValueError, match="span fraction"):
            random_span_mask(lengths, 10, bad)
    for good in [(0.5, 0.5), (1.0, 1.0), (0.01, 1.0)]:
        random_span_mask(lengths, 10, good)


def test_random_span_exact_length_every_start_and_seeded():
    lengths = torch.full((400,), 10)
    mask = random_span_mask(lengths, 12, (0.5, 0.5), torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 5).all()  # exactly round(0.5 · 10) frames
    starts = mask.float().argmax(1)
    assert sorted(set(starts.tolist())) == [0, 1, 2, 3, 4, 5]  # every start that keeps the span inside
    assert not mask[:, 10:].any()
    torch.manual_seed(1)
    again = random_span_mask(lengths, 12, (0.5, 0.5), torch.Generator().manual_seed(0))
    torch.manual_seed(2)
    assert torch.equal(mask, again) and torch.equal(
        mask, random_span_mask(lengths, 12, (0.5, 0.5), torch.Generator().manual_seed(0)))


def test_random_span_fraction_is_drawn_from_the_generator():
    lengths = torch.full((50,), 40)
    masks = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        masks.append(random_span_mask(lengths, 40, (0.2, 1.0), torch.Generator().manual_seed(0)))
    assert torch.equal(*masks) and len(set(masks[0].sum(1).tolist())) > 5


def test_random_span_is_at_least_one_frame():
    mask = random_span_mask(torch.tensor([1, 2, 3]), 3, (0.1, 0.1), torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [1, 1, 1]
    assert not mask[0, 1:].any() and not mask[1, 2:].any()


def test_masked_mse_single_value_and_no_value():
    pred, target = torch.zeros(1, 3, 1), torch.zeros(1, 3, 1)
    pred[0, 1, 0] = 3.0
    assert masked_mse(pred, target, torch.tensor([[False, True, False]])).item() == 9.0
    assert masked_mse(pred, target, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_interpolate_keeps_the_latent_dtype():
    x1 = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    xt, target = interpolate(torch.randn(2, 3, 4, dtype=torch.bfloat16), x1, torch.tensor([0.3, 0.7]))
    assert xt.dtype == torch.bfloat16 and target.dtype == torch.bfloat16


def test_objective_is_seeded_by_its_generator_alone():
    model, batches = Recorder(), tiny_batches()
    objective = FlowMatchingObjective(condition_dropout={"fast": 0.5, "slow": 0.5})
    torch.manual_seed(1)
    objective(model, batches, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    objective(model, batches, torch.Generator().manual_seed(7))
    first, second = model.calls
    assert torch.equal(first["t"], second["t"])
    assert all(torch.equal(first["x"][n], second["x"][n]) for n in batches)
    assert all(torch.equal(first["drop"][n], second["drop"][n]) for n in batches)


def test_objective_noise_and_time_follow_the_latent_dtype_and_device():
    model = Recorder()
    FlowMatchingObjective(condition_dropout={"fast": 0.5})(model, _on(tiny_batches(), dtype=torch.float16))
    assert all(v.dtype == torch.float16 for v in model.calls[0]["x"].values())
    loss = FlowMatchingObjective(condition_dropout={"fast": 0.5})(model, _on(tiny_batches(), device="meta"))
    call = model.calls[1]
    assert call["t"].device.type == "meta" and loss.total.device.type == "meta"
    assert all(v.device.type == "meta" for v in [*call["x"].values(), *call["drop"].values()])


# ------------------------------------------------------------------------------------------------ sampling


def test_time_grid_is_float32_on_the_requested_device():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert time_grid(4).dtype == torch.float32 and time_grid(4, sway=-1.0).dtype == torch.float32
    finally:
        torch.set_default_dtype(previous)
    assert time_grid(4, device="meta").device.type == "meta"


def test_one_step_of_euler_and_midpoint_by_hand():
    grow = lambda x, t: {"x": x["x"]}  # noqa: E731  (dx/dt = x)
    grid = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x = {"x": torch.tensor([1.0], dtype=torch.float64)}
    assert integrate(grow, x, grid)["x"].item() == 2.0  # 1 + 1·1
    assert integrate(grow, x, grid, "midpoint")["x"].item() == 2.5  # half step to 1.5, then 1 + 1·1.5
    clock = lambda x, t: {"x": torch.ones_like(x["x"]) * t}  # noqa: E731  (dx/dt = t)
    assert integrate(clock, {"x": torch.zeros(1, dtype=torch.float64)}, grid, "midpoint")["x"].item() == 0.5


def test_sample_noise_values_dtype_and_device():
    batches = tiny_batches()
    noise = sample_noise(_on(batches, dtype=torch.float64), torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    for name, batch in batches.items():  # stream order, one generator
        assert noise[name].dtype == torch.float64
        torch.testing.assert_close(noise[name], torch.randn(batch.latent.shape, generator=g).double())
    per_sample = sample_noise(_on(batches, dtype=torch.float64), seeds=[3, 5])
    gens = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(5)]
    for name, batch in batches.items():
        assert per_sample[name].dtype == torch.float64
        for i, length in enumerate(batch.lengths.tolist()):
            expected = torch.randn(length, batch.latent.shape[-1], generator=gens[i]).double()
            torch.testing.assert_close(per_sample[name][i, :length], expected)
            assert (per_sample[name][i, length:] == 0).all()
    on_meta = _on(batches, device="meta")
    assert all(v.device.type == "meta" for v in sample_noise(on_meta).values())
    latent_on_meta = {n: b.replace(latent=b.latent.to("meta")) for n, b in batches.items()}  # lengths on the CPU
    assert all(v.device.type == "meta" for v in sample_noise(latent_on_meta, seeds=[1, 2]).values())


def test_guided_velocity_passes_plan_masks_and_views_to_the_model():
    batches = tiny_batches()
    x = {n: torch.zeros_like(b.latent) for n, b in batches.items()}
    model = Recorder()
    guided = GuidedVelocity(model, batches, Guidance(scales={"fast": 1.0}, joint_view={"slow": False}),
                            joint_view={"fast": False}, absent=("slow",))
    guided(x, torch.tensor(0.5))
    drop, view, absent = model.plans[0]
    call = model.calls[0]
    assert call["plan"] == "the plan" and absent == ("slow",)
    assert call["drop"] is drop and call["joint_view"] is view
    assert view["fast"].tolist() == [False] * 4  # off in both passes: the base view wins
    assert view["slow"].tolist() == [True, True, False, False]
    assert drop["fast"].tolist() == drop["slow"].tolist() == [False, False, True, True]

    plain = Recorder()
    unguided = GuidedVelocity(plain, batches, joint_view={"slow": False})
    unguided(x, torch.tensor(0.5))
    assert plain.plans[0][0] is None and plain.calls[0]["plan"] == "the plan"
    assert plain.calls[0]["joint_view"]["fast"].tolist() == [True, True]
    assert plain.calls[0]["joint_view"]["slow"].tolist() == [False, False]
    assert plain.calls[0]["joint_view"] is plain.plans[0][1]


def test_uncond_pass_keeps_the_joint_view_of_unnamed_streams():
    model = Recorder()
    GuidedVelocity(model, tiny_batches(), Guidance(scales={"slow": 2.0}, joint_view={"slow": False}))
    view = model.plans[0][1]
    assert view["fast"].tolist() == [True] * 4 and view["slow"].tolist() == [True, True, False, False]


def test_guidance_with_an_odd_batch_and_on_another_device():
    batches = tiny_batches(batch=3, seconds=(1.0, 0.6, 0.8))
    cond = {n: torch.randn(b.latent.shape) for n, b in batches.items()}

    def model(x, t, batches, drop=None, joint_view=None):
        return {n: torch.where(drop[n].view(-1, 1, 1), torch.zeros_like(v), torch.cat([cond[n], cond[n]]))
                for n, v in x.items()}

    x = {n: torch.zeros_like(b.latent) for n, b in batches.items()}
    v = GuidedVelocity(model, batches, Guidance(scales={"fast": 0.5}))(x, torch.tensor(0.2))
    torch.testing.assert_close(v["fast"], 1.5 * cond["fast"])
    torch.testing.assert_close(v["slow"], cond["slow"])

    on_meta = Recorder()
    GuidedVelocity(on_meta, _on(tiny_batches(), device="meta"), Guidance(scales={"fast": 1.0}))
    drop, view, _ = on_meta.plans[0]
    assert all(t.device.type == "meta" for t in [*drop.values(), *view.values()])
    unguided = Recorder()
    GuidedVelocity(unguided, _on(tiny_batches(), device="meta"))
    assert all(t.device.type == "meta" for t in unguided.plans[0][1].values())


def test_a_model_without_plan_cannot_leave_streams_out():
    with pytest.raises(ValueError, match="absent streams"):
        GuidedVelocity(lambda *a, **k: None, tiny_batches(), absent=("slow",))


def test_scheduler_puts_its_grid_on_the_requested_device():
    from mmflow.scheduler import FlowMatchingScheduler

    scheduler = FlowMatchingScheduler(num_inference_steps=4, sway_coefficient=0.5)
    scheduler.set_timesteps(3, device="meta")
    assert scheduler.timesteps.device.type == "meta"
