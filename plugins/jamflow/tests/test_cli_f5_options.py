"""``mmflow generate`` takes F5-TTS's options with F5-TTS's meanings: --gen-file, --remove-silence, --sway,
--cross-fade, --target-rms, --vocoder, --output-file, --config FILE.toml (F5-TTS's keys too), and
--joint-attention/--no-joint-attention."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import soundfile

pytest.importorskip("espeakng_loader")

from mmflow_jamflow import JAMFlowPipeline  # noqa: E402
from mmflow_jamflow.default_model import default_model_path  # noqa: E402
from mmflow_jamflow.outputs import JAMFlowOutput  # noqa: E402

from mmflow.cli import main  # noqa: E402
from mmflow.validation import InputRangeError  # noqa: E402

FAST = ["--steps", "2", "--no-video"]


@pytest.fixture(scope="module")
def pipe():
    return JAMFlowPipeline.from_pretrained(default_model_path())


def _wave(path):
    data, rate = soundfile.read(path, dtype="float32")
    return data, rate


def test_gen_file_output_file_and_a_toml_config_with_f5_keys(tmp_path):
    (tmp_path / "story.txt").write_text("Open the window, please.\n", encoding="utf-8")
    config = tmp_path / "basic.toml"
    config.write_text(f'gen_file = "{tmp_path / "story.txt"}"\nnfe_step = 2\ncfg_strength = 1.5\n'
                      f'output_dir = "{tmp_path / "out"}"\noutput_file = "speech.wav"\nremove_silence = false\n'
                      f'ref_text = ""\n')
    assert main(["generate", "--config", str(config), "--no-video", "--seed", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["speech.npz", "speech.pkl", "speech.wav"]
    # the same run from flags alone writes the same speech
    assert main(["generate", "--gen-file", str(tmp_path / "story.txt"), "--cfg", "1.5", "--seed", "3", *FAST,
                 "--out", str(tmp_path / "flags")]) == 0
    np.testing.assert_array_equal(_wave(tmp_path / "out" / "speech.wav")[0], _wave(tmp_path / "flags" / "sample.wav")[0])


@pytest.mark.parametrize(("lines", "message"), [
    ('ckpt_file = "model.pt"', "key 'ckpt_file' is not supported here: build a JAM-Flow folder"),
    ("nfe_stepz = 4", "unknown key 'nfe_stepz'"),
])
def test_bad_config_keys_are_named(tmp_path, capsys, lines, message):
    config = tmp_path / "bad.toml"
    config.write_text(f'{lines}\noutput_dir = "{tmp_path / "out"}"\n')
    assert main(["generate", "--config", str(config), "--text", "Hi."]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_gen_file_and_text_together_are_refused(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("Hello.")
    assert main(["generate", "--text", "Hi.", "--gen-file", str(tmp_path / "t.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "--text or --gen-file, not both" in capsys.readouterr().err


def test_output_file_must_be_a_wav_name(tmp_path, capsys):
    assert main(["generate", "--text", "Hi.", "--output-file", "sub/x.wav", "--out", str(tmp_path / "o")]) == 2
    assert "must be a file name ending in .wav" in capsys.readouterr().err


def test_vocoder_choice_and_joint_attention_switch_change_the_run(tmp_path):
    common = ["generate", "--text", "Good morning.", "--seed", "1", *FAST]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--vocoder", "griffin-lim", "--out", str(tmp_path / "b")]) == 0
    assert main([*common, "--no-joint-attention", "--out", str(tmp_path / "c")]) == 0
    a, b, c = (_wave(tmp_path / x / "sample.wav")[0] for x in "abc")
    assert a.shape == b.shape and not np.allclose(a, b)  # the same mel, another vocoder
    motion = {x: np.load(tmp_path / x / "sample.npz")["exp"] for x in "ac"}
    assert not np.allclose(motion["a"], motion["c"])  # the motion stream no longer sees the speech


def test_sway_cross_fade_and_target_rms_reach_the_pipeline(pipe, tmp_path):
    common = {"num_inference_steps": 3, "progress": False, "seed": 0, "output_type": "latent"}
    swayed = pipe("tts", "Good morning.", **common).mels[0]
    uniform = pipe("tts", "Good morning.", sway_coefficient=0.0, **common).mels[0]
    assert swayed.shape == uniform.shape and not np.allclose(swayed, uniform)
    with pytest.raises(InputRangeError, match=r"sway_coefficient \(--sway\) must be a number in \[-1, 1\]"):
        pipe("tts", "Good morning.", sway_coefficient=2.0, **common)
    with pytest.raises(InputRangeError, match=r"cross_fade \(--cross-fade, seconds\)"):
        pipe("tts", "Good morning.", cross_fade=-1.0, **common)
    a, b = np.ones((20, 2), np.float32), np.zeros((20, 2), np.float32)
    import torch

    joined = pipe._join([torch.from_numpy(a), torch.from_numpy(b)], "audio", Fraction(4, 25))
    assert joined.shape[0] == 40 - 15 and 0 < float(joined[12, 0]) < 1  # 0.16 s = 15 mel frames faded (5..19)
    assert pipe._join([torch.from_numpy(a), torch.from_numpy(b)], "audio", Fraction(0)).shape[0] == 40
    # target_rms: a quiet reference is raised to it before it conditions the model
    t = np.arange(24000 * 2) / 24000
    soundfile.write(tmp_path / "quiet.wav", (0.01 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 24000)
    voice = {"ref_audio": str(tmp_path / "quiet.wav"), "ref_text": "Hello there."}
    low = pipe("tts", "Good morning.", target_rms=0.05, **voice, **common).mels[0]
    default = pipe("tts", "Good morning.", **voice, **common).mels[0]
    assert not np.allclose(low, default)


def test_remove_silence_cuts_speech_motion_and_mel_at_the_same_instants():
    rate, fps = 24000, 25
    tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate)).astype(np.float32)
    audio = np.concatenate([tone, np.zeros(3 * rate, np.float32), tone])  # 1 s, 3 s silence, 1 s
    motion = np.repeat(np.arange(5 * fps, dtype=np.float32)[:, None, None], 21, axis=1).repeat(3, axis=2)
    out = JAMFlowOutput(audios=[audio], motions=[motion], videos=None, mels=[np.zeros((469, 100), np.float32)])
    cut = out.remove_silence()
    assert len(cut.audios[0]) == round(3.04 * rate)  # 1 s + 0.52 s + 0.52 s + 1 s (0.5 s on the motion grid)
    assert cut.motions[0].shape[0] == 76 and cut.motions[0][38, 0, 0] == 87  # frames 38..87 of silence are gone
    assert abs(cut.mels[0].shape[0] - 3.04 * rate / 256) <= 1
    assert out.audios[0] is audio and len(out.audios[0]) == 5 * rate  # the original output is unchanged


def test_a_given_templates_head_pose_survives_generate_and_remove_silence(tmp_path):
    """Dubbing a template with head motion: the saved templates keep its pose, also after --remove-silence."""
    import torch
    from mmflow_motion_liveportrait.keypoints import rotation_matrix
    from mmflow_motion_liveportrait.motion_template import (
        MotionTemplate,
        load_motion_template,
        save_motion_template,
    )

    frames = 40
    rotation = rotation_matrix(torch.zeros(frames), torch.zeros(frames), torch.linspace(0, 10, frames)).numpy()
    template = MotionTemplate(scale=np.full((frames, 1), 1.2, np.float32), R=rotation.astype(np.float32),
                              exp=np.zeros((frames, 21, 3), np.float32), t=np.zeros((frames, 3), np.float32), fps=25.0)
    save_motion_template(template, tmp_path / "head.npz")
    for extra, out in (([], "plain"), (["--remove-silence"], "trimmed")):
        assert main(["generate", "--task", "dubbing", "--motion", str(tmp_path / "head.npz"), "--text", "Close it.",
                     *FAST, *extra, "--out", str(tmp_path / out)]) == 0
        saved = load_motion_template(tmp_path / out / "sample.npz")
        n = saved.num_frames
        np.testing.assert_allclose(saved.R, rotation[np.minimum(np.arange(n), frames - 1)], atol=1e-6)
        assert np.allclose(saved.scale, 1.2)
