"""FlowMatchingScheduler as a diffusers scheduler: the diffusers-style loop equals ``generate``, F5-TTS's EPSS
grids bit for bit, diffusers' time convention, and strict config loading."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmflow.flow import Guidance, GuidedVelocity, generate, interpolate, sample_noise, time_grid
from mmflow.scheduler import EPSS_GRIDS, FlowMatchingScheduler
from mmflow.testing import tiny_batches, tiny_model

F5_REFERENCE = Path(__file__).parents[1] / "plugins" / "audio_f5tts" / "tests" / "reference.py"


def diffusers_style_loop(model, batches, scheduler, seed, guidance=None):
    """What a diffusers user writes: noise, then ``step`` at every timestep, then the given frames put back."""
    velocity = GuidedVelocity(model, batches, guidance)
    x = sample_noise(batches, torch.Generator().manual_seed(seed))
    for t in scheduler.timesteps:
        v = velocity(x, t)
        x = scheduler.step(v, t, x).prev_sample
    return {
        name: torch.where(b.given.unsqueeze(-1), b.latent, x[name]).masked_fill(~b.valid.unsqueeze(-1), 0.0)
        for name, b in batches.items()
    }


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
@pytest.mark.parametrize("steps, use_epss", [(3, False), (5, True)])
def test_diffusers_style_loop_equals_generate_exactly(solver, steps, use_epss):
    model, batches = tiny_model(), tiny_batches()
    guidance = Guidance(scales={"fast": 1.5})
    scheduler = FlowMatchingScheduler(num_inference_steps=steps, solver=solver, use_epss=use_epss)
    expected = generate(model, batches, scheduler=scheduler, guidance=guidance,
                        generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = diffusers_style_loop(model, batches, scheduler, seed=7, guidance=guidance)
    assert all(torch.equal(got[n], expected[n]) for n in batches)
    assert scheduler.step_index == len(scheduler.timesteps) == steps * scheduler.order


def test_timesteps_sigmas_and_order_follow_diffusers_conventions():
    euler = FlowMatchingScheduler(num_inference_steps=4, sway_coefficient=0.0)
    assert euler.order == 1 and euler.init_noise_sigma == 1.0
    assert torch.equal(euler.grid, time_grid(4))
    assert torch.equal(euler.timesteps, time_grid(4)[:-1])  # one model call per step, never at t = 1
    assert torch.equal(euler.sigmas, 1 - time_grid(4)) and euler.sigmas[-1] == 0  # noise levels, terminal 0
    midpoint = FlowMatchingScheduler(num_inference_steps=2, sway_coefficient=0.0, solver="midpoint")
    assert midpoint.order == 2 and midpoint.model_calls == 4
    torch.testing.assert_close(midpoint.timesteps, torch.tensor([0.0, 0.25, 0.5, 0.75]), rtol=0, atol=0)
    x, v = torch.zeros(1, 3), torch.ones(1, 3)
    half = midpoint.step(v, 0.0, x).prev_sample
    assert not midpoint.state_in_first_order
    torch.testing.assert_close(half, torch.full((1, 3), 0.25))  # x + v·dt/2: the model's next input
    end = midpoint.step(2 * v, 0.25, half).prev_sample
    torch.testing.assert_close(end, torch.full((1, 3), 1.0))  # x_start + v_mid·dt
    assert midpoint.state_in_first_order
    (again,) = midpoint.step(v, 0.5, end, return_dict=False)
    torch.testing.assert_close(again, torch.full((1, 3), 1.25))


def test_step_refuses_a_loop_out_of_step():
    scheduler = FlowMatchingScheduler(num_inference_steps=2, sway_coefficient=0.0)
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="not in this scheduler's timesteps"):
        scheduler.step(x, 0.3, x)
    scheduler.step(x, 0.0, x)
    with pytest.raises(ValueError, match="expects timestep 0.5"):
        scheduler.step(x, 0.0, x)
    scheduler.step(x, 0.5, x)
    with pytest.raises(ValueError, match="call set_timesteps"):
        scheduler.step(x, 0.5, x)
    scheduler.set_timesteps(2)
    scheduler.step(x, torch.zeros(2), x)  # per-sample timesteps are fine when they agree
    with pytest.raises(ValueError, match="inside a midpoint step"):
        FlowMatchingScheduler(solver="midpoint").set_begin_index(1)


def test_set_timesteps_updates_the_config_and_custom_sigmas_survive_saving(tmp_path):
    scheduler = FlowMatchingScheduler(num_inference_steps=8)
    scheduler.set_timesteps(3)
    assert scheduler.config.num_inference_steps == 3 and scheduler.config.sigmas is None
    scheduler.set_timesteps(sigmas=[1.0, 0.6, 0.1])
    assert scheduler.config.num_inference_steps == 3
    torch.testing.assert_close(scheduler.grid, torch.tensor([0.0, 0.4, 0.9, 1.0]))
    scheduler.save_pretrained(tmp_path)
    again = FlowMatchingScheduler.from_pretrained(tmp_path)
    assert torch.equal(again.grid, scheduler.grid) and torch.equal(again.timesteps, scheduler.timesteps)
    foreign = FlowMatchEulerDiscreteScheduler(shift=3.0)
    foreign.set_timesteps(7)
    scheduler.set_timesteps(sigmas=foreign.sigmas[:-1])  # values with every bit of a float32 in use
    scheduler.save_pretrained(tmp_path / "foreign")
    assert torch.equal(FlowMatchingScheduler.from_pretrained(tmp_path / "foreign").grid, scheduler.grid)
    for bad in ([0.5, 0.7], [1.0, 0.0], [1.5], []):
        with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
            scheduler.set_timesteps(sigmas=bad)
    with pytest.raises(ValueError, match="one sigma per step"):
        scheduler.set_timesteps(4, sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match="num_inference_steps must be"):
        scheduler.set_timesteps(0)


def test_epss_is_off_by_default_and_only_changes_the_counts_f5_tts_prunes():
    for steps in range(1, 33):
        default = FlowMatchingScheduler(num_inference_steps=steps)
        assert torch.equal(default.grid, time_grid(steps, -1.0))
        epss = FlowMatchingScheduler(num_inference_steps=steps, use_epss=True)
        assert torch.equal(epss.grid, default.grid) == (steps not in EPSS_GRIDS)


def _f5_tts():
    """``f5_tts.model.utils`` and ``f5_tts.model.cfm`` (with the plugin tests' stand-ins for absent imports)."""
    for name in ("torchaudio", "x_transformers", "torchdiffeq", "pypinyin", "rjieba"):
        pytest.importorskip(name, reason=f"f5-tts imports {name}")
    pytest.importorskip("f5_tts", reason="reference package f5-tts not installed")
    name = "mmflow_audio_f5tts_tests_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, F5_REFERENCE)
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    sys.modules[name]._install_stand_ins()
    return importlib.import_module("f5_tts.model.utils"), importlib.import_module("f5_tts.model.cfm")


def _f5_sampling_grid(cfm, steps: int, sway: float | None, monkeypatch) -> torch.Tensor:
    """The time grid F5-TTS's ``CFM.sample`` hands its ODE solver (its defaults: EPSS on, t_start 0)."""
    seen = {}

    def odeint(fn, y0, t, **kwargs):
        seen["t"] = t
        return y0[None]

    class Transformer(torch.nn.Module):
        dim = 8

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def clear_cache(self):
            pass

    monkeypatch.setattr(cfm, "odeint", odeint)
    model = cfm.CFM(Transformer(), num_channels=4)
    model.sample(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), 10, steps=steps,
                 sway_sampling_coef=sway)
    return seen["t"]


def test_epss_grids_equal_f5_tts_bit_for_bit(monkeypatch):
    utils, cfm = _f5_tts()
    defined = [n for n in range(1, 65)
               if not torch.equal(utils.get_epss_timesteps(n, "cpu", torch.float32), time_grid(n))]
    assert defined == sorted(EPSS_GRIDS)  # the same counts, found from F5-TTS's function, not copied
    for steps in range(1, 65):
        for sway in (None, -1.0, 0.5):
            reference = _f5_sampling_grid(cfm, steps, sway, monkeypatch)
            ours = FlowMatchingScheduler(num_inference_steps=steps, use_epss=True, sway_coefficient=sway or 0.0)
            assert ours.grid.dtype == reference.dtype
            assert torch.equal(ours.grid, reference), (steps, sway)


def test_from_config_refuses_a_flow_match_euler_config(tmp_path):
    foreign = FlowMatchEulerDiscreteScheduler(shift=3.0)
    with pytest.raises(ValueError, match="num_train_timesteps.*set_timesteps\\(sigmas="):
        FlowMatchingScheduler.from_config(foreign.config)
    foreign.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot load a FlowMatchEulerDiscreteScheduler config"):
        FlowMatchingScheduler.from_pretrained(tmp_path)
    own = FlowMatchingScheduler(num_inference_steps=5, solver="midpoint", use_epss=True)
    assert dict(FlowMatchingScheduler.from_config(own.config).config) == dict(own.config)


def test_flow_match_euler_grid_through_sigmas_samples_what_diffusers_samples():
    """sigma = 1 − t and diffusers' model output (noise − data) = −(mmflow velocity): same trajectory."""
    foreign = FlowMatchEulerDiscreteScheduler(shift=3.0)
    foreign.set_timesteps(6)
    ours = FlowMatchingScheduler()
    ours.set_timesteps(sigmas=foreign.sigmas[:-1])
    assert torch.equal(ours.sigmas, foreign.sigmas)
    target = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))

    def velocity(x, t):  # toward a fixed target, mmflow's sign
        return (target - x) / (1 - t).clamp(min=0.05)

    start = torch.randn(2, 5, generator=torch.Generator().manual_seed(2))
    x_ours, x_diffusers = start.clone(), start.clone()
    for t in ours.timesteps:
        x_ours = ours.step(velocity(x_ours, t), t, x_ours).prev_sample
    for sigma_t in foreign.timesteps:
        t = 1 - sigma_t / foreign.config.num_train_timesteps
        x_diffusers = foreign.step(-velocity(x_diffusers, t), sigma_t, x_diffusers).prev_sample
    torch.testing.assert_close(x_ours, x_diffusers, rtol=1e-5, atol=1e-5)


def test_scale_noise_and_add_noise_are_the_training_path():
    data, noise = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    scheduler = FlowMatchingScheduler()
    t = torch.tensor([0.0, 0.3, 1.0])
    expected = interpolate(noise, data, t)[0]
    torch.testing.assert_close(scheduler.add_noise(data, noise, t), expected, rtol=0, atol=0)
    assert torch.equal(scheduler.scale_noise(data, 0.0, noise), noise)
    streams = scheduler.scale_noise({"a": data}, 0.25, {"a": noise})
    torch.testing.assert_close(streams["a"], 0.75 * noise + 0.25 * data)
    foreign = FlowMatchEulerDiscreteScheduler()
    foreign.set_timesteps(4)
    sigma_t = foreign.timesteps[1:2]
    by_diffusers = foreign.scale_noise(data[:1], sigma_t, noise[:1])
    by_ours = scheduler.scale_noise(data[:1], 1 - sigma_t / 1000, noise[:1])
    torch.testing.assert_close(by_ours, by_diffusers, rtol=1e-6, atol=1e-6)
