import math

import pytest
import torch

from mmflow.flow import (
    FlowMatchingObjective,
    Guidance,
    GuidedVelocity,
    generate,
    integrate,
    interpolate,
    masked_mse,
    random_span_mask,
    time_grid,
)
from mmflow.testing import tiny_batches, tiny_model


def test_linear_path_noise_at_zero_data_at_one():
    x0, x1 = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    xt, target = interpolate(x0, x1, torch.tensor([0.0, 1.0, 0.25]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], x1[1])
    torch.testing.assert_close(xt[2], 0.75 * x0[2] + 0.25 * x1[2])
    assert torch.equal(target, x1 - x0)


def test_loss_ignores_given_and_padding_frames():
    batches = tiny_batches()
    model = tiny_model()
    loss = FlowMatchingObjective()(model, batches, torch.Generator().manual_seed(0))
    assert set(loss.per_stream) == {"fast", "slow"}
    pred = torch.zeros(2, 5, 3, requires_grad=True)
    weight = torch.tensor([[0, 0, 1, 1, 0], [1, 0, 0, 0, 0]]).bool()
    masked_mse(pred, torch.randn(2, 5, 3), weight).backward()
    assert (pred.grad[~weight] == 0).all() and (pred.grad[weight] != 0).all()


def test_condition_dropout_reaches_the_model():
    seen = {}

    def model(x, t, batches, drop=None):
        seen.update(drop)
        return {n: torch.zeros_like(v) for n, v in x.items()}

    FlowMatchingObjective(condition_dropout={"fast": 1.0})(model, tiny_batches())
    assert seen["fast"].all() and not seen["slow"].any()


def test_random_spans_cover_the_requested_fraction():
    lengths = torch.tensor([100, 40, 10])
    mask = random_span_mask(lengths, 100, (0.7, 1.0), torch.Generator().manual_seed(0))
    for row, n in zip(mask, lengths.tolist(), strict=True):
        span = row.nonzero().flatten()
        assert 0.7 * n - 1 <= len(span) <= n and span[-1] < n
        assert (span.diff() == 1).all()  # one contiguous span


def test_sway_grid():
    plain = time_grid(8)
    torch.testing.assert_close(plain, torch.linspace(0, 1, 9))
    sway = time_grid(8, sway=-1.0)
    assert sway[0] == 0 and sway[-1] == pytest.approx(1.0) and (sway.diff() > 0).all()
    t = plain[3]
    assert sway[3] == pytest.approx(float(t - (math.cos(math.pi / 2 * t) - 1 + t)))
    assert (sway[1:-1] < plain[1:-1]).all()  # s < 0 spends more steps at small t


def gaussian_velocity(mu, sigma):
    """Marginal velocity of the linear path from N(0, 1) to N(mu, sigma²) (independent coupling)."""

    def velocity(x, t):
        var = (1 - t) ** 2 + (t * sigma) ** 2
        slope = (t * sigma**2 - (1 - t)) / var
        return {"x": mu + slope * (x["x"] - t * mu)}

    return velocity


def exact_map(x0, mu, sigma):
    return mu + sigma * x0  # the flow is a monotone linear map between the two Gaussians


def test_euler_integrates_gaussian_to_gaussian():
    mu, sigma = 2.0, 0.5
    x0 = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = integrate(gaussian_velocity(mu, sigma), {"x": x0}, time_grid(200).double())["x"]
    assert x1.mean().item() == pytest.approx(mu, abs=0.02)
    assert x1.std().item() == pytest.approx(sigma, abs=0.02)
    err_euler = (x1 - exact_map(x0, mu, sigma)).abs().max()
    assert err_euler < 0.03  # first-order error at 200 steps, over samples out to |x0| ≈ 4
    coarse = time_grid(8).double()
    euler = integrate(gaussian_velocity(mu, sigma), {"x": x0}, coarse)["x"]
    midpoint = integrate(gaussian_velocity(mu, sigma), {"x": x0}, coarse, method="midpoint")["x"]
    exact = exact_map(x0, mu, sigma)
    assert (midpoint - exact).abs().max() < 0.2 * (euler - exact).abs().max()  # second order beats first
    with pytest.raises(ValueError, match="unknown sampler"):
        integrate(gaussian_velocity(mu, sigma), {"x": x0}, coarse, method="rk45")


def test_guidance_formula_and_batched_passes():
    calls = []

    def model(x, t, batches, drop=None, joint_view=None):
        calls.append((x["fast"].shape[0], drop, joint_view))
        # conditional rows predict 1, unconditional rows predict 0 (per stream)
        return {n: (~drop[n]).float().view(-1, 1, 1).expand_as(v).clone() for n, v in x.items()}

    batches = tiny_batches()
    x = {n: torch.zeros_like(b.latent) for n, b in batches.items()}
    guided = GuidedVelocity(model, batches, Guidance(scales={"fast": 2.0}, joint_view={"slow": False}))
    v = guided(x, torch.tensor(0.5))
    assert len(calls) == 1 and calls[0][0] == 4  # cond and uncond in one batch
    assert torch.equal(v["fast"], torch.full_like(v["fast"], 3.0))  # 1 + 2·(1 − 0)
    assert torch.equal(v["slow"], torch.ones_like(v["slow"]))  # no scale: conditional only
    assert calls[0][2]["slow"].tolist() == [True, True, False, False]
    with pytest.raises(KeyError, match="unknown stream"):
        GuidedVelocity(model, batches, Guidance(scales={"audio": 2.0}))


def test_generation_is_seeded_and_keeps_given_frames():
    model, batches = tiny_model(), tiny_batches()
    run = lambda seed: generate(model, batches, steps=3, guidance=Guidance({"fast": 2.0, "slow": 1.0}),  # noqa: E731
                                generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    for name, batch in batches.items():
        assert torch.equal(a[name], b[name]) and not torch.equal(a[name], c[name])
        assert torch.equal(a[name][batch.given], batch.latent[batch.given])
        assert (a[name][~batch.valid] == 0).all()


def test_per_sample_seeds_make_batches_equal_one_by_one():
    model = tiny_model()  # masks padding
    batches = tiny_batches(seconds=(1.0, 0.6))
    guidance = Guidance({"fast": 2.0, "slow": 1.5})
    both = generate(model, batches, steps=3, guidance=guidance, seeds=[3, 5])
    frames = {"fast": [50, 30], "slow": [15, 9]}
    for i, seed in enumerate((3, 5)):
        alone_batches = {
            n: b.select(slice(i, i + 1)).map(lambda t, k=frames[n][i]: t[:, :k] if t.ndim > 1 else t)
            for n, b in batches.items()
        }
        alone = generate(model, alone_batches, steps=3, guidance=guidance, seeds=[seed])
        for n in batches:
            torch.testing.assert_close(both[n][i, : frames[n][i]], alone[n][0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one seed per sample"):
        generate(model, batches, steps=1, seeds=[1])


def test_scheduler_component_round_trip_and_sampling(tmp_path):
    from mmflow.scheduler import FlowMatchingScheduler

    scheduler = FlowMatchingScheduler(num_inference_steps=6, sway_coefficient=-1.0, solver="midpoint")
    assert scheduler.model_calls == 12
    torch.testing.assert_close(scheduler.grid, time_grid(6, sway=-1.0))
    scheduler.save_pretrained(tmp_path / "scheduler")
    again = FlowMatchingScheduler.from_pretrained(tmp_path / "scheduler")
    assert dict(again.config) == dict(scheduler.config)
    model, batches = tiny_model(), tiny_batches()
    by_scheduler = generate(model, batches, scheduler=again, generator=torch.Generator().manual_seed(0))
    by_arguments = generate(model, batches, steps=6, sway=-1.0, method="midpoint",
                            generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(by_scheduler[n], by_arguments[n]) for n in batches)
    with pytest.raises(ValueError, match="unknown solver"):
        FlowMatchingScheduler(solver="rk4")
