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
