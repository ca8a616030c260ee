"""LSE-C / LSE-D: the MFCC front end, the SyncNet v2 weights file, the offset search and the face crop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mmflow_motion_liveportrait.metrics import lse as lse_module
from mmflow_motion_liveportrait.metrics.lse import (
    crop_face,
    make_lse,
    shifted_distances,
    sync_scores,
    syncnet_features,
    track,
)
from mmflow_motion_liveportrait.metrics.mfcc import frame_signal, mel_filterbank, mfcc
from mmflow_motion_liveportrait.metrics.syncnet import SyncNetV2, load_syncnet

from mmflow.codecs import InputError
from mmflow.evaluation.metric import Sample

# ------------------------------------------------------------------------------------------------ MFCC


def _tone(count: int = 1000) -> np.ndarray:
    n = np.arange(count)
    return np.round(8000 * np.sin(2 * np.pi * 440 * n / 16000)
                    + 3000 * np.sin(2 * np.pi * 1234 * n / 16000 + 0.3)).astype(np.int16)


# python_speech_features.mfcc(_tone(), 16000), release 0.6.1 (jameslyons/python_speech_features e280ac2b)
TONE_ROW_0 = [19.770398326, 18.8415224619, -15.0292116932, -18.781666156, -9.9243648022, -5.4596949076,
              -26.2138631069, -41.5491014086, -22.6079187515, 20.4968293013, 43.7993733064, 27.5922375173,
              -3.1054025609]
TONE_ROW_3 = [19.7833107548, 19.0160649095, -11.5418685843, -22.0019252629, -9.3570718697, -3.9253375805,
              -21.8426931947, -39.2355944975, -21.955712665, 19.2263428025, 43.2625179557, 28.1084933063,
              -1.3535809155]


def test_mfcc_of_silence_is_log_eps_energy_and_zero_cepstra():
    # all filter energies are eps: the log is a constant, whose orthonormal DCT has only c0, replaced by log(eps)
    features = mfcc(np.zeros(399), 16000)
    assert features.shape == (1, 13)
    assert features[0, 0] == pytest.approx(math.log(np.finfo(float).eps))
    np.testing.assert_allclose(features[0, 1:], 0.0, atol=1e-12)


def test_mfcc_frames_are_25_ms_every_10_ms_with_a_padded_tail():
    assert mfcc(np.ones(400), 16000).shape == (1, 13)
    assert mfcc(np.ones(401), 16000).shape == (2, 13)
    assert mfcc(_tone(1000), 16000).shape == (1 + math.ceil((1000 - 400) / 160), 13)  # 5
    frames = frame_signal(np.arange(1, 501, dtype=float), 400, 160)  # 1 + ceil(100 / 160) frames
    assert frames.shape == (2, 400) and frames[1, 0] == 161 and frames[1, 339] == 500
    assert (frames[1, 340:] == 0).all()  # zero padding


def test_mel_filterbank_bins_by_hand():
    # 16 kHz, nfft 512: mel points 0, 105.19, 210.37, ... → 0, 68.4, 143.6 Hz → FFT bins floor(513 f / 16000) = 0, 2, 4
    bank = mel_filterbank(26, 512, 16000)
    assert bank.shape == (26, 257)
    np.testing.assert_allclose(bank[0, :5], [0.0, 0.5, 1.0, 0.5, 0.0])
    assert bank[-1, 256] == 0.0 and bank[-1].max() == 1.0


def test_mfcc_matches_python_speech_features_values():
    features = mfcc(_tone(), 16000)
    np.testing.assert_allclose(features[0], TONE_ROW_0, rtol=0, atol=1e-8)
    np.testing.assert_allclose(features[3], TONE_ROW_3, rtol=0, atol=1e-8)
    # lifter by hand: c1 is scaled by 1 + 11 sin(pi/22) = 2.5654632
    unlifted = mfcc(_tone(), 16000)[0, 1] / (1 + 11 * math.sin(math.pi / 22))
    assert unlifted == pytest.approx(18.8415224619 / 2.5654632210, rel=1e-9)


# ------------------------------------------------------------------------------------------------ weights file

# a few of syncnet_python's SyncNetModel.S keys and shapes, written out from its source
REFERENCE_SHAPES = {
    "netcnnaud.0.weight": (64, 1, 3, 3),
    "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_var": (512,),
    "netfcaud.1.running_mean": (512,),
    "netfcaud.3.weight": (1024, 512),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7),
    "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netfclip.3.bias": (1024,),
}


def _official_layout(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names of syncnet_v2.model (no num_batches_tracked: saved before PyTorch 0.4.1)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=generator) + 0.5 if "running_var" in k else
            torch.randn(v.shape, generator=generator) * 0.05
            for k, v in SyncNetV2().state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(_official_layout(), path, _use_new_zipfile_serialization=False)  # the legacy format of 2017 files
    return path


def test_key_layout_is_syncnet_pythons():
    shapes = {k: tuple(v.shape) for k, v in SyncNetV2().state_dict().items()}
    for key, shape in REFERENCE_SHAPES.items():
        assert shapes[key] == shape, key
    # 2 towers × 6 (conv: 2 tensors + BatchNorm: 4) + 2 heads × (2 + 4 + 2)
    assert len([k for k in shapes if not k.endswith("num_batches_tracked")]) == 2 * 6 * 6 + 2 * 8


def test_official_layout_loads_every_tensor_unchanged(weights):
    model = load_syncnet(weights)
    state = model.state_dict()
    saved = torch.load(weights, weights_only=True)
    assert not model.training
    for key, value in saved.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_num_batches_tracked_may_be_present(tmp_path):
    path = tmp_path / "with_counters.model"
    torch.save(SyncNetV2().state_dict(), path)
    load_syncnet(path)


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_a_different_layout_is_refused(tmp_path, change):
    state = _official_layout()
    if change == "missing":
        del state["netfclip.3.bias"]
    elif change == "extra":
        state["netfclip.4.weight"] = torch.zeros(3)
    else:
        state["netcnnaud.0.weight"] = torch.zeros(64, 1, 3, 4)
    path = tmp_path / "bad.model"
    torch.save(state, path)
    with pytest.raises(InputError, match="netfclip.3.bias|netfclip.4.weight|netcnnaud.0.weight"):
        load_syncnet(path)


def test_a_pickled_module_is_refused_without_running_it(tmp_path):
    path = tmp_path / "module.model"
    torch.save(SyncNetV2(), path)  # a whole nn.Module: unpickling it would import and build classes
    with pytest.raises(InputError, match="weights_only"):
        load_syncnet(path)


def test_factory_names_the_option_and_the_file(tmp_path):
    with pytest.raises(InputError, match=r"lse\.weights=.*syncnet_v2\.model"):
        make_lse({}, tmp_path)
    with pytest.raises(InputError, match="syncnet_v2.model"):
        make_lse({"weights": str(tmp_path / "nope.model")}, tmp_path)
    with pytest.raises(InputError, match="lse.audio"):
        make_lse({"weights": "x", "audio": "ground_truth"}, tmp_path)
    with pytest.raises(InputError, match="set one of them"):
        make_lse({"weights": "x", "audio": "reference", "video": "reference"}, tmp_path)
    with pytest.raises(InputError, match="unknown option"):
        make_lse({"weights": "x", "vshfit": "15"}, tmp_path)
    with pytest.raises(InputError, match=r"--metric-option lse\.vshift=-1: expected a whole number ≥ 0 \(vshift: frames"):
        make_lse({"weights": "x", "vshift": "-1"}, tmp_path)


# ------------------------------------------------------------------------------------------------ offset search


def test_sync_scores_by_hand():
    # v = a = [0, 1, 2], vshift 1: mean distances per shift (2/3, 0, 4/3) up to pairwise_distance's 1e-6
    feats = torch.tensor([[0.0], [1.0], [2.0]])
    result = sync_scores(feats, feats.clone(), vshift=1)
    assert result.offset == 0
    assert result.min_dist == pytest.approx(1e-6, abs=1e-9)
    assert result.conf == pytest.approx(2 / 3, abs=1e-6)
    np.testing.assert_allclose(result.mean_dists, [2 / 3, 0.0, 4 / 3], atol=1e-5)


def test_shifted_distances_pad_with_zero_features():
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    audio = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    dists = shifted_distances(video, audio, vshift=1)
    # row 0 sees (pad, a0, a1); row 1 sees (a0, a1, pad)
    np.testing.assert_allclose(dists.numpy(), [[1, math.sqrt(4 + 16), 1], [math.sqrt(9 + 9), 1, 1]], atol=1e-5)


class _SharedSignalNet(torch.nn.Module):
    """Stands in for SyncNet: both towers decode the same per-frame signal u_t, so the true offset is known.

    Video frame t is filled with grey ``40 + 200 u_t``; its audio is a 1 kHz tone of amplitude ``1000 e^{2 u_t}``,
    whose MFCC c0 (log frame energy) is ``4 u_t + const`` on a 25 ms frame inside video frame t. Each tower returns
    its 5 per-frame values, centred on their mean (which removes the constants)."""

    def forward_lip(self, lips):  # N × 3 × 5 × H × W, BGR
        values = (lips.mean(dim=(1, 3, 4)) - 40) / 200
        return values - values.mean(1, keepdim=True)

    def forward_aud(self, mels):  # N × 1 × 13 × 20: MFCC frames 4j, j = 0..4, start inside video frame j
        values = mels[:, 0, 0, ::4] / 4
        return values - values.mean(1, keepdim=True)


def _clip(u: np.ndarray, audio_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    crops = np.repeat(np.round(40 + 200 * u)[:, None, None, None], 8, axis=1).repeat(8, 2).repeat(3, 3)
    n = np.arange(640)
    audio = np.concatenate([1000 * math.exp(2 * value) * np.sin(2 * np.pi * 1000 * (n + 640 * i) / 16000)
                            for i, value in enumerate(audio_u)])
    return crops.astype(np.uint8), np.round(audio).astype(np.int16)


@pytest.mark.parametrize("shift", [0, 3, -2, 15])
def test_a_shifted_audio_track_gives_the_shift_as_offset(shift):
    frames, margin = 60, 20
    u = np.random.default_rng(1).random(frames + 2 * margin)
    crops, audio = _clip(u[margin:margin + frames], u[margin + shift:margin + shift + frames])
    video_feats, audio_feats = syncnet_features(_SharedSignalNet(), crops, audio)
    assert len(video_feats) == frames - 5
    result = sync_scores(video_feats, audio_feats)
    assert result.offset == shift
    assert result.conf > 0.3  # aligned windows agree, the others do not
    if abs(shift) < 5:  # at 15, 15 of the 55 windows meet the zero padding past the audio's end
        assert result.min_dist < 0.05


def test_too_short_a_clip_is_refused():
    crops, audio = _clip(np.zeros(5), np.zeros(5))
    with pytest.raises(InputError, match="at least 6 frames"):
        syncnet_features(_SharedSignalNet(), crops, audio)


# ------------------------------------------------------------------------------------------------ face crop


def test_crop_geometry_of_crop_video():
    rows, cols = np.meshgrid(np.arange(100), np.arange(100), indexing="ij")
    frame = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    # s = 10, centre (50, 50), c = 0.4: rows [50 - 10, 50 + 18) = 40..67, cols [50 - 14, 50 + 14) = 36..63, ×8
    crop = crop_face(frame, 10.0, 50.0, 50.0)
    assert crop.shape == (224, 224, 3)
    assert tuple(crop[0, 0, :2]) == (40, 36) and tuple(crop[-1, -1, :2]) == (67, 63)
    assert tuple(crop[4 + 8 * 10, 4 + 8 * 14, :2]) == (50, 50)  # the face centre, 10 rows and 14 columns in


def test_crop_outside_the_frame_is_grey_110():
    frame = np.zeros((100, 100, 3), dtype=np.uint8)
    crop = crop_face(frame, 10.0, 5.0, 5.0)  # rows -5..23, cols -9..19
    assert (crop[:8 * 4] == 110).all() and (crop[:, :8 * 8] == 110).all()
    assert (crop[-1, -1] == 0).all()


def test_track_interpolates_gaps_and_spans_first_to_last_detection():
    boxes = [None, None] + [(0.0, 0.0, 20.0, 20.0)] * 8 + [None] * 4 + [(10.0, 10.0, 30.0, 30.0)] * 8 + [None]
    first, dets = track(boxes)
    assert first == 2 and len(dets) == 20
    assert dets[0].tolist() == [10.0, 10.0, 10.0]  # size max(w, h)/2, centre y, centre x
    assert dets[-1].tolist() == [10.0, 20.0, 20.0]
    assert track([None, None]) is None


# ------------------------------------------------------------------------------------------------ end to end


def _write_clip(path, frames, audio=None):
    from mmflow_motion_liveportrait.video import write_video

    write_video(path, frames, fps=25, audio=None if audio is None else audio / 32768.0,
                sample_rate=None if audio is None else 16000)
    return path


@pytest.fixture(scope="module")
def face_clip(astronaut):
    frames = np.repeat(astronaut[None], 8, axis=0)  # the 512² portrait, 8 frames: 3 windows
    tone = np.round(6000 * np.sin(2 * np.pi * 300 * np.arange(8 * 640) / 16000)).astype(np.int16)
    return frames, tone


def test_lse_scores_a_face_video_with_random_weights(tmp_path, weights, face_clip):
    frames, tone = face_clip
    video = _write_clip(tmp_path / "clip.mp4", frames, tone)
    metric = make_lse({"weights": str(weights), "device": "cpu"}, tmp_path)
    rows = metric.score([Sample("a", {"video": video})])
    row = rows[0]
    assert row["scored"] and row["frames"] == 8 and row["first_frame"] == 0
    assert -15 <= row["offset"] <= 15 and math.isfinite(row["lse_d"]) and row["lse_c"] >= 0
    summary = metric.summarise(rows + [{"scored": False, "reason": "no face found"}])
    assert list(summary)[:2] == ["lse_c", "lse_d"]
    assert metric.directions == {"lse_c": True, "lse_d": False}  # distance: lower is better
    assert summary["lse_c"] == pytest.approx(row["lse_c"]) and summary["unscored"] == 1


def test_reference_audio_mode_reads_the_reference(tmp_path, weights, face_clip, monkeypatch):
    frames, tone = face_clip
    silent = _write_clip(tmp_path / "silent.mp4", frames)
    reference = _write_clip(tmp_path / "reference.mp4", frames[:, :32, :32], tone)
    generated = make_lse({"weights": str(weights), "device": "cpu"}, tmp_path)
    with pytest.raises(InputError, match="no sound"):
        generated.score([Sample("a", {"video": silent})])
    ablation = make_lse({"weights": str(weights), "device": "cpu", "audio": "reference"}, tmp_path)
    assert ablation.reference_needs == frozenset({"audio"})
    row = ablation.score([Sample("a", {"video": silent}, reference={"audio": reference})])[0]
    assert row["scored"] and row["audio"] == str(reference)
    # dubbing: the generated speech over the original clip
    dubbing = make_lse({"weights": str(weights), "device": "cpu", "video": "reference"}, tmp_path)
    assert dubbing.needs == frozenset({"audio"}) and dubbing.reference_needs == frozenset({"video"})
    row = dubbing.score([Sample("a", {"audio": reference}, reference={"video": silent})])[0]
    assert row["scored"] and row["audio"] == str(reference) and row["frames"] == 8


def test_a_video_without_a_face_is_reported_unscored(tmp_path, weights, monkeypatch):
    frames = np.full((8, 64, 64, 3), 128, dtype=np.uint8)
    tone = np.zeros(8 * 640, dtype=np.int16) + 1
    video = _write_clip(tmp_path / "grey.mp4", frames, tone)
    metric = make_lse({"weights": str(weights), "device": "cpu"}, tmp_path)
    row = metric.score([Sample("a", {"video": video})])[0]
    assert row == {"scored": False, "reason": "no face found", "audio": str(video)}
    assert lse_module.LSEMetric.name == "lse"


@pytest.mark.parametrize("fps, count, expected", [(50, 20, [0, 20, 40, 60, 80, 100, 120, 140, 160, 180]),
                                                  (12.5, 5, [0, 0, 10, 10, 20, 20, 30, 30, 40])])
def test_frames_come_on_the_25_fps_grid(tmp_path, fps, count, expected):
    from mmflow_motion_liveportrait.metrics.lse import iter_frames
    from mmflow_motion_liveportrait.video import write_video

    levels = np.arange(count, dtype=np.uint8) * 10
    path = write_video(tmp_path / "clip.mp4", np.repeat(levels[:, None, None, None], 16, 1).repeat(16, 2).repeat(3, 3),
                       fps=fps)
    means = [float(frame.mean()) for frame in iter_frames(path)]
    np.testing.assert_allclose(means, expected, atol=3)
