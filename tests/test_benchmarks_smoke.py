"""The end-to-end benchmark scripts run at tiny sizes on CPU and write the JSON their docs promise; the training
benchmark's FLOP count agrees with torch's own counter."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mmflow import MMDiT, StreamBatch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import clip_e2e  # noqa: E402
import joint_nfe  # noqa: E402
import train  # noqa: E402

TINY_AUDIO = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "ff_mult": 2, "text_dim": 16, "conv_layers": 1}


@pytest.fixture
def tiny_jamflow_config(tmp_path):
    """The paper config's shape (filler text, half schedule, JAM mask) at a tiny size."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"jamflow": {"audio": TINY_AUDIO, "motion_dim": 16, "joint_schedule": "half"}}))
    return path


def test_joint_nfe_writes_both_variants_and_their_ratio(tiny_jamflow_config, tmp_path):
    out = tmp_path / "joint.json"
    assert joint_nfe.main(["--config", str(tiny_jamflow_config), "--seconds", "0.5", "--repeats", "1",
                           "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["joint_steps"] == [0] and result["device"] == "cpu" and result["dtype"] == "fp32"
    (row,) = result["rows"]
    assert (row["audio_frames"], row["motion_frames"], row["cfg_batch"]) == (47, 13, 2)
    times = row["ms_per_nfe"]
    assert set(times) == {"joint", "audio_absent", "f5_alone"} and all(ms > 0 for ms in times.values())
    assert row["ratio_joint_over_audio"] == pytest.approx(times["joint"] / times["audio_absent"])
    cpu = row["process_cpu_ms_per_nfe"]
    assert row["cpu_time_ratio_joint_over_audio"] == pytest.approx(cpu["joint"] / cpu["audio_absent"])


def test_joint_nfe_variants_compute_what_they_claim(tiny_jamflow_config):
    """audio_absent is the audio stream alone: the same velocity as the audio-only MMDiT with the same weights."""
    args = joint_nfe.parse_args(["--config", str(tiny_jamflow_config)])
    models = joint_nfe.build_models(args, torch.device("cpu"), torch.float32)
    batches = joint_nfe.clip_batches(models["joint"], 0.5, "cpu", torch.float32)
    absent = joint_nfe.velocity(models["joint"], batches, ("audio",), 2.0, absent=("motion",))()
    alone = joint_nfe.velocity(models["f5_alone"], batches, ("audio",), 2.0)()
    joint = joint_nfe.velocity(models["joint"], batches, ("audio", "motion"), 2.0)()
    torch.testing.assert_close(absent["audio"], alone["audio"])
    assert set(joint) == {"audio", "motion"}
    assert not torch.allclose(joint["audio"], alone["audio"])  # the joint layers let audio hear motion


def test_a_config_without_a_jamflow_section_is_refused(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("seed: 0\n")
    with pytest.raises(ValueError, match="no jamflow: section"):
        joint_nfe.paper_model_config(path)


def test_clip_e2e_writes_a_breakdown_that_adds_up(tiny_jamflow_config, tmp_path):
    out = tmp_path / "clip.json"
    assert clip_e2e.main(["--model", "paper", "--config", str(tiny_jamflow_config), "--steps", "1", "--seconds", "0.5",
                          "--size", "64", "--reference", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    clip, tts = result["runs"]
    assert clip["task"] == "talking_head" and tts["task"] == "tts" and not result["as_issue_19_row"]
    assert clip["outputs"] == ["sample.mp4", "sample.wav"] and clip["video_frames"] > 0
    phases = clip["phases_s"]
    for phase in ("text_front_end", "sampling", "vocoder", "render", "mux", "renderer_setup"):
        assert phases[phase] > 0, phase
    assert phases["frames (in render)"] <= phases["render"]
    covered = sum(v for k, v in phases.items() if "(in" not in k)
    assert covered + clip["other_s"] == pytest.approx(clip["total_s"], abs=1e-3)
    assert 0 <= clip["other_s"] < 0.5 * clip["total_s"]
    assert "render" not in tts["phases_s"] and tts["outputs"] == ["sample.wav"]


def test_train_flop_count_matches_torchs_counter():
    """forward_flops (FLOPS_FORMULA) equals the matrix products torch counts in one MMDiT forward (math SDPA so
    the attention's products are visible), within the small layers the formula leaves out."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = {"dim": 128, "depth": 4, "heads": 4, "dim_head": 32, "ff_mult": 2}
    streams = {"a": {"frame_rate": "50", "channels": 4, "backbone_config": config},
               "b": {"frame_rate": "25", "channels": 4, "backbone_config": {**config, "dim": 64}}}
    model = MMDiT(streams=streams, joint_schedule="half").eval()
    frames = {"a": 120, "b": 60}
    batches = {name: StreamBatch.from_lengths(torch.zeros(2, n, 4)) for name, n in frames.items()}
    x = {name: torch.randn(2, n, 4) for name, n in frames.items()}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, torch.tensor([0.5, 0.5]), batches)
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    attention = 2 * sum(4 * 128 * frames[s] * (sum(frames.values()) if step < 2 else frames[s])
                        for s in frames for step in range(4))
    assert counts["aten.bmm"] == attention  # scores and weighted values, joint layers seeing every stream
    products = counts["aten.bmm"] + counts["aten.addmm"]
    assert train.forward_flops(model, frames, 2) == pytest.approx(products, rel=0.02)


def test_train_counts_flops_and_reports_mfu_only_with_a_peak(tmp_path):
    out = tmp_path / "train.json"
    config = BENCHMARKS.parent / "examples" / "toy_gesture" / "mmflow_toy_gesture" / "configs" / "toy.yaml"
    assert train.main(["--config", str(config), "--steps", "2", "--warmup", "1", "--num-clips", "16",
                       "--peak-tflops", "0.5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tokens_per_second"] == result["frames_per_second"] > 0
    assert result["flops_per_step"] > 0 and "3 × forward" in result["flops_formula"]
    assert result["mfu"] == pytest.approx(result["model_tflops_per_second"] / 0.5)
    assert train.parse_args([]).peak_tflops is None  # no made-up default peak


def test_gloo_exit_writes_its_counts(tmp_path):
    import gloo_exit

    out = tmp_path / "gloo.json"
    assert gloo_exit.main(["--launches", "1", "--variants", "handler", "--endings", "raise", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["launches_per_variant"] == 1 and list(report["results"]) == ["raise"]
    # the handler destroys the group and waits for gloo's threads: no abort, the rank's error keeps its exit code
    assert report["results"]["raise"] == {"handler": {"launches": 1, "aborted": 0, "exit_codes": {"1": 1}}}
