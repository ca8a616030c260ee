"""JAMFlowPipeline on a tiny random JAM-Flow: every task end to end, time alignment, exact given spans, seeds,
batches, save/load, parity with the audio plugin's TTS, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmflow_audio_f5tts.audio_io import write_wav
from mmflow_audio_f5tts.checkpoint import audio_stream_config
from mmflow_audio_f5tts.tokenizer import F5Tokenizer
from mmflow_jamflow import build_jamflow
from mmflow_jamflow.model import jamflow_config
from mmflow_jamflow.pipeline import JAMFlowPipeline, MissingInputError
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer
from mmflow_motion_liveportrait.motion_template import MotionTemplate, save_motion_template

from mmflow import FlowMatchingScheduler, MMDiT
from mmflow.testing import randomize

AUDIO = {"dim": 48, "depth": 2, "heads": 4, "dim_head": 16, "ff_mult": 2, "text_dim": 16, "conv_layers": 1,
         "text_mask_padding": True}
VOCAB = [" ", *"abcdefghijklmnopqrstuvwxyz.,'"]
MEL_RATE, MOTION_RATE = 93.75, 25


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("jamflow")
    (root / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB))
    t = np.arange(int(24000 * 1.5)) / 24000
    write_wav(root / "ref.wav", (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32))
    speech = (0.2 * np.sin(2 * np.pi * 140 * np.arange(int(24000 * 1.2)) / 24000)).astype(np.float32)
    write_wav(root / "speech.wav", speech)
    rng = np.random.default_rng(0)
    motion = MotionTemplate(
        scale=np.ones((30, 1), np.float32), R=np.tile(np.eye(3, dtype=np.float32), (30, 1, 1)),
        exp=(rng.standard_normal((30, 21, 3)) * 0.01).astype(np.float32), t=np.zeros((30, 3), np.float32),
    )
    save_motion_template(motion, root / "motion.npz")
    return root


def _pipeline(files, max_seconds=30.0) -> JAMFlowPipeline:
    torch.manual_seed(0)
    config = jamflow_config(audio_stream_config(AUDIO, len(VOCAB), True), motion_dim=32)
    model = randomize(MMDiT(**config), std=0.05).eval()
    normalizer = MotionNormalizer()
    normalizer.mouth_std.fill_(0.01)
    normalizer.rest_std.fill_(0.01)
    tokenizer = F5Tokenizer(str(files / "vocab.txt"), tokenizer_mode="char")
    return JAMFlowPipeline(model, FlowMatchingScheduler(num_inference_steps=3), tokenizer, normalizer,
                           max_seconds=max_seconds)


@pytest.fixture(scope="module")
def pipe(files):
    return _pipeline(files)


def _voice(files):
    return {"ref_audio": files / "ref.wav", "ref_text": "some words here."}


def _assert_aligned(out, i=0):
    seconds = len(out.audios[i]) / out.sample_rate
    assert abs(len(out.motions[i]) - seconds * MOTION_RATE) <= 1
    assert abs(len(out.mels[i]) - seconds * MEL_RATE) <= 1


def test_talking_head_streams_agree_in_time_and_render(pipe, files):
    from mmflow_motion_liveportrait.face import demo_portrait_path

    out = pipe("talking_head", "hello there.", portrait=demo_portrait_path(), **_voice(files), progress=False)
    _assert_aligned(out)
    assert out.motions[0].shape[1:] == (21, 3) and np.isfinite(out.motions[0]).all()
    assert out.videos[0].shape[0] == out.motions[0].shape[0] and out.videos[0].dtype == np.uint8
    written = out.save(files / "out", stem="talk")
    assert sorted(p.suffix for p in written) == [".mp4", ".npz", ".pkl", ".wav"]


def test_seed_reproducible_and_batch_equals_one_by_one(pipe, files):
    texts = ["hello there.", "a longer sentence to say, with a pause."]
    batch = pipe("talking_head", texts, seed=[3, 7], output_type="latent", **_voice(files), progress=False)
    again = pipe("talking_head", texts, seed=[3, 7], output_type="latent", **_voice(files), progress=False)
    for i, (text, seed) in enumerate(zip(texts, [3, 7], strict=True)):
        alone = pipe("talking_head", text, seed=seed, output_type="latent", **_voice(files), progress=False)
        torch.testing.assert_close(batch.mels[i], alone.mels[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(batch.motions[i], alone.motions[0], rtol=1e-4, atol=1e-4)
        assert np.array_equal(batch.mels[i], again.mels[i])
    other = pipe("talking_head", texts[0], seed=4, output_type="latent", **_voice(files), progress=False)
    assert not np.allclose(other.mels[0], batch.mels[0])


def test_audio_to_motion_keeps_the_given_speech(pipe, files):
    out = pipe("audio_to_motion", audio=files / "speech.wav", progress=False)
    _assert_aligned(out)
    from mmflow_audio_f5tts.audio_io import load_audio

    np.testing.assert_allclose(out.audios[0], load_audio(files / "speech.wav"), atol=1e-6)


def test_dubbing_takes_its_timing_from_the_motion(pipe, files):
    out = pipe("dubbing", "say this now.", motion=files / "motion.npz", **_voice(files), progress=False)
    assert len(out.motions[0]) == 30  # 1.2 s at 25 fps
    assert abs(len(out.audios[0]) / out.sample_rate - 1.2) < 1.5 / MEL_RATE
    np.testing.assert_allclose(out.motions[0], np.load(files / "motion.npz")["exp"], atol=1e-5)


def test_video_to_video_keeps_e_rest_and_regenerates_the_mouth(pipe, files):
    from mmflow_motion_liveportrait.keypoints import split_expression

    out = pipe("video_to_video", "say this now.", motion=files / "motion.npz", **_voice(files), progress=False)
    given = torch.from_numpy(np.load(files / "motion.npz")["exp"])
    got = torch.from_numpy(out.motions[0])
    torch.testing.assert_close(split_expression(got)[1], split_expression(given)[1], atol=1e-5, rtol=0)
    assert not torch.allclose(split_expression(got)[0], split_expression(given)[0], atol=1e-3)


def test_edit_regenerates_only_the_spans(pipe, files):
    out = pipe("edit", "the whole new transcript.", audio=files / "speech.wav", motion=files / "motion.npz",
               spans={"audio": [(0.4, 0.8)], "motion": [(0.4, 0.8)]}, output_type="latent", progress=False)
    from mmflow_audio_f5tts.audio_io import load_audio, normalize_rms
    from mmflow_audio_f5tts.mel import MelSpectrogram

    mel = MelSpectrogram().time_major(torch.from_numpy(normalize_rms(load_audio(files / "speech.wav"))[0]))[0]
    first, last = int(0.4 * MEL_RATE), int(np.ceil(0.8 * MEL_RATE))
    edited = torch.from_numpy(out.mels[0])
    assert torch.equal(edited[:first], mel[:first]) and torch.equal(edited[last + 1 :], mel[last + 1 :])
    assert not torch.allclose(edited[first + 1 : last - 1], mel[first + 1 : last - 1])
    a, b = int(0.4 * MOTION_RATE), int(0.8 * MOTION_RATE)
    mouth, _ = pipe.motion_normalizer.normalize(torch.from_numpy(np.load(files / "motion.npz")["exp"]))
    got = torch.from_numpy(out.motions[0][:, :12])  # latent output: normalised e_mouth then e_rest
    assert torch.equal(got[:a], mouth[:a]) and torch.equal(got[b:], mouth[b:])
    assert not torch.allclose(got[a:b], mouth[a:b])


def test_tts_with_the_audio_stream_alone(pipe, files):
    out = pipe("tts", "hello there.", **_voice(files), progress=False)
    assert out.motions is None and out.videos is None and len(out.audios[0]) > 0


def test_long_text_is_chunked_and_cross_faded(files):
    pipe = _pipeline(files, max_seconds=4.0)
    text = "first part of it. second part here, and more. third and last piece of the text."
    out = pipe("talking_head", text, **_voice(files), output_type="latent", progress=False)
    seconds = len(out.mels[0]) / MEL_RATE
    assert seconds > 4.0
    assert abs(len(out.motions[0]) - seconds * MOTION_RATE) <= 1


def test_save_and_from_pretrained_reproduce_outputs(pipe, files, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = JAMFlowPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.config.max_seconds == pipe.config.max_seconds
    a = pipe("talking_head", "hello there.", output_type="latent", **_voice(files), progress=False)
    b = loaded("talking_head", "hello there.", output_type="latent", **_voice(files), progress=False)
    assert np.array_equal(a.mels[0], b.mels[0]) and np.array_equal(a.motions[0], b.motions[0])


def test_missing_plugin_names_the_package(pipe, tmp_path):
    import json

    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    index["tokenizer"] = ["mmflow_audio_nonexistent.tokenizer", "F5Tokenizer"]
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ImportError, match="pip install mmflow-audio-nonexistent"):
        JAMFlowPipeline.from_pretrained(tmp_path / "pipe")


def test_tts_matches_the_audio_plugin_alone(files):
    """A pipeline built the paper's way from an official-layout F5-TTS checkpoint speaks like F5TTSSynthesizer."""
    from mmflow_audio_f5tts.backbone import F5TTSBackbone
    from mmflow_audio_f5tts.tts import F5TTSSynthesizer
    from mmflow_audio_f5tts.vocoder import GriffinLimVocoder
    from safetensors.torch import save_file

    torch.manual_seed(1)
    backbone = F5TTSBackbone(channels=100, text_num_embeds=len(VOCAB), **AUDIO)
    state = {f"ema_model.transformer.{k}": torch.randn_like(v) * 0.05 for k, v in backbone.state_dict().items()}
    save_file(state, files / "model_10.safetensors")
    model, vocab = build_jamflow(files / "model_10.safetensors", files / "vocab.txt", AUDIO, motion_dim=32)
    tokenizer = F5Tokenizer(str(files / "vocab.txt"), tokenizer_mode="char")
    pipe = JAMFlowPipeline(model, FlowMatchingScheduler(num_inference_steps=6), tokenizer, MotionNormalizer())
    ours = pipe("tts", "hello there.", seed=5, **_voice(files), output_type="latent", progress=False)

    from mmflow_audio_f5tts.checkpoint import from_f5tts

    alone, _ = from_f5tts(files / "model_10.safetensors", files / "vocab.txt", AUDIO, mask_padding=True)
    synth = F5TTSSynthesizer(alone, vocab, GriffinLimVocoder(), steps=6, tokenizer="char")
    reference = synth.synthesize(files / "ref.wav", "some words here.", "hello there.", seed=5, progress=False)
    # the synthesizer keeps the last reference frame in front of the generated ones
    torch.testing.assert_close(torch.from_numpy(ours.mels[0]), reference.mels[0][1:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("task", "kwargs", "match"),
    [
        ("talking_head", {}, "needs text"),
        ("audio_to_motion", {}, "needs audio="),
        ("dubbing", {"text": "hi."}, "needs motion="),
        ("tts", {"text": "hi.", "audio": "x.wav"}, "takes no audio="),
        ("edit", {"text": "hi."}, "needs audio="),
        ("no_such_task", {"text": "hi."}, "unknown task"),
    ],
)
def test_bad_input_is_named(pipe, files, task, kwargs, match):
    with pytest.raises((MissingInputError, ValueError), match=match):
        pipe(task, **{**_voice(files), **kwargs}, progress=False)


def test_filler_model_without_reference_is_refused(pipe):
    with pytest.raises(MissingInputError, match="ref_audio="):
        pipe("talking_head", "hello.", progress=False)


def test_contradicting_durations_are_refused(pipe, files):
    with pytest.raises(MissingInputError, match="same duration"):
        long_motion = np.zeros((80, 21, 3), np.float32)
        pipe("edit", "hi.", audio=files / "speech.wav", motion=long_motion, spans={"audio": [(0.1, 0.2)]},
             progress=False)


def test_portrait_without_a_face_fails_before_sampling(pipe, files):
    from mmflow_motion_liveportrait.face import FaceError

    blank = np.full((256, 256, 3), 200, np.uint8)
    with pytest.raises(FaceError):
        pipe("talking_head", "hello.", portrait=blank, **_voice(files), progress=False)


def test_command_line_generate_and_build(pipe, files, tmp_path):
    from mmflow.cli import main

    pipe.save_pretrained(tmp_path / "pipe")
    status = main(["generate", "--model", str(tmp_path / "pipe"), "--text", "hello there.", "--ref-audio",
                   str(files / "ref.wav"), "--ref-text", "some words here.", "--steps", "2", "--out",
                   str(tmp_path / "out"), "--outputs", "wav,npz,mp4"])
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample.mp4", "sample.npz", "sample.wav"]

    from mmflow_audio_f5tts.backbone import F5TTSBackbone
    from safetensors.torch import save_file

    backbone = F5TTSBackbone(channels=100, text_num_embeds=len(VOCAB), **AUDIO)
    save_file({f"ema_model.transformer.{k}": v for k, v in backbone.state_dict().items()}, tmp_path / "f5.safetensors")
    import json

    (tmp_path / "arch.json").write_text(json.dumps(AUDIO))
    assert main(["build-jamflow", "--checkpoint", str(tmp_path / "f5.safetensors"), "--vocab", str(files / "vocab.txt"),
                 "--config", str(tmp_path / "arch.json"), "--tokenizer", "char", "--motion-dim", "32",
                 "--out", str(tmp_path / "built")]) == 0
    built = JAMFlowPipeline.from_pretrained(tmp_path / "built")
    assert built.transformer.joint_steps == (0,)


def test_unwritable_output_fails_before_work(pipe, tmp_path, capsys):
    from mmflow.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--text", "hi.", "--out", str(blocker / "sub")]) == 2
    assert "mmflow: error: cannot create the output folder" in capsys.readouterr().err


def test_more_bad_inputs_are_named(pipe, files):
    with pytest.raises(MissingInputError, match="unknown stream"):
        pipe("edit", "hi.", audio=files / "speech.wav", motion=files / "motion.npz", spans={"audo": [(0.1, 0.2)]},
             progress=False)
    with pytest.raises(MissingInputError, match="takes no ref_audio"):
        pipe("audio_to_motion", audio=files / "speech.wav", **_voice(files), progress=False)


def test_command_line_errors_are_one_line(capsys, tmp_path):
    from mmflow.cli import main

    assert main(["generate", "--model", str(tmp_path / "missing"), "--text", "hi.", "--out", str(tmp_path)]) == 2
    assert "mmflow: error:" in capsys.readouterr().err
    assert main(["generate", "--text", "hi.", "--outputs", "wav,gif", "--out", str(tmp_path)]) == 2
    assert "unknown kind(s) ['gif']" in capsys.readouterr().err


def test_liveportrait_renderer_is_a_saved_component(pipe, files, tmp_path):
    """LivePortrait's networks travel with the pipeline and render the generated motion on the portrait."""
    from mmflow_motion_liveportrait import networks
    from mmflow_motion_liveportrait.face import CropConfig, demo_portrait_path
    from mmflow_motion_liveportrait.render import LivePortraitNetworks, LivePortraitRenderer
    from mmflow_motion_liveportrait.renderer_weights import LivePortraitComponents

    torch.manual_seed(0)
    small = dict(block_expansion=8, max_features=64)
    nets = LivePortraitNetworks(
        networks.AppearanceFeatureExtractor(**small, reshape_channel=4, reshape_depth=16, num_resblocks=1),
        networks.MotionExtractor(),
        networks.WarpingNetwork(**small, reshape_channel=4, dense_motion_params=dict(
            block_expansion=8, max_features=64, num_blocks=3, reshape_depth=16, compress=2)),
        networks.SPADEDecoder(**small),
        networks.StitchingRetargetingNetwork.from_official_config("stitching"),
    )
    with_renderer = JAMFlowPipeline(**{**pipe.components, "renderer": LivePortraitComponents.from_networks(nets)},
                                    max_seconds=pipe.config.max_seconds)
    with_renderer.save_pretrained(tmp_path / "pipe")
    loaded = JAMFlowPipeline.from_pretrained(tmp_path / "pipe")
    saved, restored = with_renderer.renderer.state_dict(), loaded.renderer.state_dict()
    assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)
    renderer = loaded.renderer.renderer(demo_portrait_path(), crop_config=CropConfig(size=128, warp_size=256))
    assert isinstance(renderer, LivePortraitRenderer)
    out = loaded("dubbing", "hi.", motion=np.zeros((3, 21, 3), np.float32), renderer=renderer, **_voice(files),
                 num_inference_steps=1, progress=False)
    assert out.videos[0].shape[0] == 3 and out.videos[0].dtype == np.uint8
