import json

import pytest

from mmflow.cli import main as cli_main


@pytest.mark.slow
def test_toy_demo_learns_the_cross_stream_relation(tmp_path, capsys):
    out = tmp_path / "toy"
    assert cli_main(["demo", "toy", "--steps", "150", "--eval-clips", "16", "--nfe", "8", "--out", str(out)]) == 0
    report = json.loads((out / "coherence.json").read_text())
    assert (out / "model" / "config.json").exists() and (out / "model" / "diffusion_pytorch_model.safetensors").exists()
    # the gesture follows the given signal only through joint attention
    assert report["joint"]["gesture_from_signal"] > 0.8
    assert abs(report["joint_off"]["gesture_from_signal"]) < 0.3
    assert report["joint"]["signal_from_gesture"] > report["joint_off"]["signal_from_gesture"] + 0.2
    assert "gesture_from_signal" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind
