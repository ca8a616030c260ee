"""Values pinned by hand for the flow-matching objective, the sampler's time grid, guidance and the EMA.

Each test compares against arithmetic written out here (float64 where it matters), not against another call
of the code under test, so a one-line slip in the formula fails it (issue 18's mutation study found four
such slips that the rest of the suite let through).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmflow.flow import FlowMatchingObjective, Guidance, GuidedVelocity, generate, time_grid
from mmflow.scheduler import FlowMatchingScheduler
from mmflow.testing import tiny_batches
from mmflow.training.ema import EMA

# ------------------------------------------------------------------------------------------------ objective


class Oracle:
    """A "model" that knows the clean latent, so it can predict the exact target velocity of the linear path.

    x_t = (1 − t)·x0 + t·x1 and target x1 − x0 give target = (x1 − x_t) / (1 − t). On generated frames it
    returns that plus ``offset[name]``; on given and padding frames it returns ``junk`` (which the loss must
    never see).
    """

    def __init__(self, offset: dict[str, float] | None = None, junk: float = 0.0):
        self.offset, self.junk = offset or {}, junk

    def __call__(self, x, t, batches, drop=None):
        out = {}
        for name, xt in x.items():
            batch = batches[name]
            target = (batch.latent - xt) / (1 - t).view(-1, 1, 1)
            exact = target + self.offset.get(name, 0.0)
            junk = torch.full_like(xt, self.junk)
            out[name] = torch.where(batch.generated.unsqueeze(-1), exact, junk)
        return out


def _batches64():
    return {n: b.map(lambda v: v.double() if v.is_floating_point() else v) for n, b in tiny_batches().items()}


def test_objective_is_zero_when_generated_frames_are_predicted_exactly():
    loss = FlowMatchingObjective()(Oracle(junk=123.0), _batches64(), torch.Generator().manual_seed(0))
    for name, value in loss.per_stream.items():
        assert value.item() == pytest.approx(0.0, abs=1e-10), name
    assert loss.total.item() == pytest.approx(0.0, abs=1e-10)


def test_objective_ignores_predictions_on_given_and_padding_frames():
    batches = _batches64()
    assert all(b.given.any() and (~b.valid).any() for b in batches.values())  # both kinds of frame present
    losses = [
        FlowMatchingObjective()(Oracle({"fast": 0.5, "slow": -2.0}, junk=junk), batches,
                                torch.Generator().manual_seed(0))
        for junk in (0.0, 1e3)
    ]
    for name in batches:
        assert losses[0].per_stream[name].item() == losses[1].per_stream[name].item(), name


def test_objective_is_the_mean_squared_error_over_generated_frames_and_weighted_per_stream():
    # a constant error e on every generated value gives a mean squared error of exactly e²
    objective = FlowMatchingObjective(stream_weights={"fast": 0.25})
    loss = objective(Oracle({"fast": 0.5, "slow": -2.0}, junk=7.0), _batches64(), torch.Generator().manual_seed(0))
    assert loss.per_stream["fast"].item() == pytest.approx(0.25, rel=1e-9)
    assert loss.per_stream["slow"].item() == pytest.approx(4.0, rel=1e-9)
    assert loss.total.item() == pytest.approx(0.25 * 0.25 + 1.0 * 4.0, rel=1e-9)  # missing weight: 1


def test_objective_error_on_some_generated_frames_is_averaged_over_all_generated_values():
    batches = _batches64()

    class OneFrameOff(Oracle):
        def __call__(self, x, t, batches, drop=None):
            out = super().__call__(x, t, batches, drop)
            out["fast"][0, -1 + int(batches["fast"].lengths[0])] += 3.0  # last valid frame of sample 0
            return out

    loss = FlowMatchingObjective()(OneFrameOff(), batches, torch.Generator().manual_seed(0))
    fast = batches["fast"]
    values = int(fast.generated.sum()) * fast.latent.shape[-1]
    assert fast.generated[0, int(fast.lengths[0]) - 1]
    assert loss.per_stream["fast"].item() == pytest.approx(9.0 * 3 / values, rel=1e-9)  # 3 channels off by 3
    assert loss.per_stream["slow"].item() == pytest.approx(0.0, abs=1e-10)


# ------------------------------------------------------------------------------------------------ time grid


def _sway_by_hand(steps: int, s: float) -> list[float]:
    times = [i / steps for i in range(steps + 1)]
    return [t + s * (math.cos(math.pi / 2 * t) - 1 + t) for t in times]


@pytest.mark.parametrize("sway", [-1.0, -0.4, 0.3, 1.0])
@pytest.mark.parametrize("steps", [1, 5, 16])
def test_time_grid_is_the_sway_formula(steps, sway):
    grid = time_grid(steps, sway=sway)
    assert grid.shape == (steps + 1,) and grid.dtype == torch.float32
    torch.testing.assert_close(grid.double(), torch.tensor(_sway_by_hand(steps, sway), dtype=torch.float64),
                               rtol=0, atol=1e-6)


def test_positive_sway_crowds_late_times_and_zero_sway_is_uniform():
    plain, late = time_grid(10), time_grid(10, sway=0.5)
    assert (late[1:-1] > plain[1:-1]).all()
    torch.testing.assert_close(plain, torch.tensor([i / 10 for i in range(11)]), rtol=0, atol=1e-7)


@pytest.mark.parametrize("sway", [0.7, -0.3])
def test_scheduler_and_generate_use_the_sway_they_are_given(sway):
    by_hand = torch.tensor(_sway_by_hand(4, sway), dtype=torch.float64)
    scheduler = FlowMatchingScheduler(num_inference_steps=4, sway_coefficient=sway)
    torch.testing.assert_close(scheduler.grid.double(), by_hand, rtol=0, atol=1e-6)
    scheduler.set_timesteps(3)
    torch.testing.assert_close(scheduler.grid.double(), torch.tensor(_sway_by_hand(3, sway), dtype=torch.float64),
                               rtol=0, atol=1e-6)

    seen = []

    def model(x, t, batches, drop=None, joint_view=None):
        seen.append(float(t[0]))
        return {n: torch.zeros_like(v) for n, v in x.items()}

    generate(model, tiny_batches(), steps=4, sway=sway)
    assert seen == pytest.approx(by_hand[:-1].tolist(), abs=1e-6)  # Euler: one call at each start time


# ------------------------------------------------------------------------------------------------ guidance


def _two_pass_model(cond: dict[str, torch.Tensor], uncond: dict[str, torch.Tensor]):
    """Rows whose conditions are kept predict ``cond``, dropped rows predict ``uncond`` (per stream)."""

    def model(x, t, batches, drop=None, joint_view=None):
        out = {}
        for name, v in x.items():
            dropped = torch.zeros(v.shape[0], dtype=torch.bool) if drop is None else drop[name]
            copies = v.shape[0] // cond[name].shape[0]  # 2 with guidance: cond rows, then uncond rows
            out[name] = torch.where(dropped.view(-1, 1, 1), uncond[name].repeat(copies, 1, 1),
                                    cond[name].repeat(copies, 1, 1))
        return out

    return model


@pytest.mark.parametrize(
    "scales",
    [{"fast": 1.0, "slow": 0.0}, {"fast": 0.0, "slow": 1.0}, {"fast": 2.0, "slow": 0.35},
     {"fast": 0.6, "slow": 1.0}, {"fast": 1.0, "slow": 2.0}],
)
def test_guided_velocity_is_cond_plus_scale_times_difference_per_stream(scales):
    batches = tiny_batches()
    g = torch.Generator().manual_seed(3)
    cond = {n: torch.randn(b.latent.shape, generator=g, dtype=torch.float64) for n, b in batches.items()}
    uncond = {n: torch.randn(b.latent.shape, generator=g, dtype=torch.float64) for n, b in batches.items()}
    x = {n: torch.zeros(b.latent.shape, dtype=torch.float64) for n, b in batches.items()}
    v = GuidedVelocity(_two_pass_model(cond, uncond), batches, Guidance(scales=scales))(x, torch.tensor(0.3))
    for name, s in scales.items():
        expected = cond[name] + s * (cond[name] - uncond[name])
        torch.testing.assert_close(v[name], expected, rtol=0, atol=1e-12, msg=f"{name} at scale {s}")


def test_scale_zero_everywhere_is_one_conditional_pass():
    batches = tiny_batches()
    calls = []
    cond = {n: torch.full(b.latent.shape, 2.0) for n, b in batches.items()}

    def model(x, t, batches, drop=None, joint_view=None):
        calls.append(drop)
        return _two_pass_model(cond, cond)(x, t, batches, drop)

    x = {n: torch.zeros_like(b.latent) for n, b in batches.items()}
    v = GuidedVelocity(model, batches, Guidance(scales={"fast": 0.0, "slow": 0.0}))(x, torch.tensor(0.1))
    assert calls == [None] and all(torch.equal(v[n], cond[n]) for n in batches)
    assert not Guidance(scales={"fast": 0.0}).enabled and Guidance(scales={"fast": 1.0}).enabled
    assert Guidance(scales={"fast": -0.5}).enabled


def test_guidance_drops_only_the_named_streams_in_the_unconditional_pass():
    batches = tiny_batches()
    guided = GuidedVelocity(_two_pass_model({}, {}), batches, Guidance(scales={"fast": 1.0}, drop=("slow",)))
    assert guided.drop["fast"].tolist() == [False] * 4
    assert guided.drop["slow"].tolist() == [False, False, True, True]
    everything = GuidedVelocity(_two_pass_model({}, {}), batches, Guidance(scales={"fast": 1.0}))
    assert all(everything.drop[n].tolist() == [False, False, True, True] for n in batches)


# ------------------------------------------------------------------------------------------------ EMA


class _Weights(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, -2.0, 4.0]))
        self.frozen = nn.Parameter(torch.tensor([5.0]), requires_grad=False)


def _set(model: _Weights, values: list[float]):
    with torch.no_grad():
        model.a.copy_(torch.tensor(values))


WEIGHTS = [[3.0, 0.0, -4.0], [2.0, 2.0, 2.0], [-1.0, 6.0, 0.5], [0.0, 1.0, 8.0], [10.0, -3.0, 1.0],
           [4.0, 4.0, -2.0]]


def test_ema_shadow_after_one_step():
    model = _Weights()
    ema = EMA(model, decay=0.9)
    _set(model, WEIGHTS[0])
    assert ema.step(model, 1)
    # 0.9 · start + 0.1 · new: [0.9 + 0.3, −1.8 + 0, 3.6 − 0.4]
    torch.testing.assert_close(ema.shadow["a"], torch.tensor([1.2, -1.8, 3.2]), rtol=0, atol=1e-6)
    assert set(ema.shadow) == {"a"} and ema.num_updates == 1


@pytest.mark.parametrize("update_every", [1, 2, 3])
def test_ema_shadow_after_several_steps(update_every):
    decay = 0.75
    model = _Weights()
    ema = EMA(model, decay=decay, update_every=update_every)
    expected = [1.0, -2.0, 4.0]  # no warm-up: the shadow starts at the weights and the decay is fixed
    for step, weights in enumerate(WEIGHTS, start=1):
        _set(model, weights)
        updated = ema.step(model, step)
        assert updated == (step % update_every == 0), step
        if updated:
            expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
        torch.testing.assert_close(ema.shadow["a"].double(), torch.tensor(expected, dtype=torch.float64),
                                   rtol=0, atol=1e-5, msg=f"step {step}")
    assert ema.num_updates == len(WEIGHTS) // update_every


def test_ema_swap_and_state_round_trip_keep_the_values():
    model = _Weights()
    ema = EMA(model, decay=0.8)
    for step, weights in enumerate(WEIGHTS[:3], start=1):
        _set(model, weights)
        ema.step(model, step)
    shadow = ema.shadow["a"].clone()
    with ema.swapped_into(model):
        assert torch.equal(model.a.detach(), shadow)
    assert model.a.tolist() == WEIGHTS[2]

    other = EMA(_Weights(), decay=0.8)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["a"], shadow) and other.num_updates == 3
    state = ema.state_dict()
    assert state["decay"] == 0.8 and state["update_every"] == 1
