"""FlowMatchingScheduler's argument rules by value, where the mutation study (benchmarks/mutation.py) found
them unguarded: custom sigma checks at their edges, the EPSS grid's default, the begin index."""

from __future__ import annotations

import pytest
import torch

from mmflow.scheduler import EPSS_GRIDS, FlowMatchingScheduler, epss_grid


def test_custom_sigmas_at_their_edges():
    scheduler = FlowMatchingScheduler(num_inference_steps=4)
    scheduler.set_timesteps(sigmas=[1.0])  # one step is enough
    assert scheduler.num_inference_steps == 1 and scheduler.sigmas.tolist() == [1.0, 0.0]
    for bad in ([1.0, 1.0, 0.5], [1.0, 0.5, 0.7]):  # equal neighbours; a rise below the first
        with pytest.raises(ValueError, match="strictly decreasing"):
            scheduler.set_timesteps(sigmas=bad)
    scheduler.set_timesteps(sigmas=torch.tensor([0.9, 0.3], dtype=torch.float64))
    assert scheduler.sigmas.dtype == torch.float32


def test_epss_grid_default_has_no_sway():
    expected = torch.tensor(EPSS_GRIDS[5], dtype=torch.float32) / 32
    torch.testing.assert_close(epss_grid(5), expected, rtol=0, atol=0)


def test_begin_index():
    scheduler = FlowMatchingScheduler(num_inference_steps=4)
    scheduler.set_begin_index()
    assert scheduler.begin_index == 0
    scheduler.set_begin_index(2)
    assert scheduler.begin_index == 2
    midpoint = FlowMatchingScheduler(num_inference_steps=4, solver="midpoint")
    with pytest.raises(ValueError, match="inside a midpoint step"):
        midpoint.set_begin_index(1)
    midpoint.set_begin_index(2)
    assert midpoint.begin_index == 2


def test_a_begin_index_is_where_the_loop_starts():
    """Set, it decides the first step: a loop that starts elsewhere fails even with a value of the grid."""
    scheduler = FlowMatchingScheduler(num_inference_steps=4, sway_coefficient=0.0)
    scheduler.set_begin_index(2)
    sample = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="step 2 expects"):
        scheduler.step(torch.ones(1, 3), scheduler.timesteps[0], sample)
    out = scheduler.step(torch.ones(1, 3), scheduler.timesteps[2], sample).prev_sample
    torch.testing.assert_close(out, torch.full((1, 3), 0.25), rtol=0, atol=0)  # one step of dt = 1/4


def test_float64_timesteps_are_matched_at_the_grid_precision():
    """A float64 pipeline's copy of the grid (off in float64, equal in float32) steps through the whole loop."""
    scheduler = FlowMatchingScheduler(num_inference_steps=3)
    scheduler.set_timesteps(sigmas=[0.9, 0.5, 0.2])
    grid = scheduler.timesteps.double() * (1 + 1e-12)
    assert not bool((grid == scheduler.timesteps).any())  # they differ as float64
    sample = torch.zeros(2)
    for t in grid:
        sample = scheduler.step(torch.ones(2), t, sample).prev_sample
    torch.testing.assert_close(sample, torch.full((2,), 0.9))  # from t = 0.1 to 1 at unit velocity


def test_scale_noise_in_float64_keeps_the_time_in_float64():
    noise, data = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    t = torch.tensor(1 / 3, dtype=torch.float64)
    for time in (t, 1 / 3):  # a float64 tensor or a Python float
        out = FlowMatchingScheduler().scale_noise(data, time, noise)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=0)


def test_from_config_passes_its_options_on():
    config = dict(FlowMatchingScheduler(num_inference_steps=4).config)
    scheduler, unused = FlowMatchingScheduler.from_config(config, return_unused_kwargs=True, bogus=1)
    assert isinstance(scheduler, FlowMatchingScheduler) and unused == {"bogus": 1}
    assert FlowMatchingScheduler.from_config(config, num_inference_steps=7).num_inference_steps == 7
    with pytest.raises(ValueError, match=r"a config with keys \['shift'\]"):
        FlowMatchingScheduler.from_config({**config, "shift": 3.0})
