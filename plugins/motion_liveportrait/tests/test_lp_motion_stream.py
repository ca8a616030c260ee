import pytest
import torch
from mmflow_motion_liveportrait.keypoints import MOUTH_KEYPOINT_INDICES
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer, motion_stream_config

from mmflow import MMDiT, StreamBatch


def test_normalizer_round_trip_and_standardises(tmp_path):
    g = torch.Generator().manual_seed(0)
    scales = torch.rand(21, 3, generator=g) * 0.05
    clips = [torch.randn(40, 21, 3, generator=g) * scales + 0.01 for _ in range(3)]
    norm = MotionNormalizer().fit(clips)
    mouth, rest = norm.normalize(torch.cat(clips))
    assert mouth.shape == (120, 12) and rest.shape == (120, 51)
    torch.testing.assert_close(mouth.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(mouth.std(0, unbiased=False), torch.ones(12), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.denormalize(mouth, rest), torch.cat(clips), atol=1e-6, rtol=1e-5)
    norm.save_pretrained(tmp_path / "norm")
    again = MotionNormalizer.from_pretrained(tmp_path / "norm")
    assert torch.equal(again.mouth_std, norm.mouth_std) and list(again.config.mouth_indices) == list(MOUTH_KEYPOINT_INDICES)


def test_custom_mouth_set_and_bad_shape():
    norm = MotionNormalizer(mouth_indices=(6, 12, 14, 17, 19, 20))
    mouth, rest = norm.normalize(torch.zeros(5, 21, 3))
    assert mouth.shape == (5, 18) and rest.shape == (5, 45)
    with pytest.raises(ValueError, match=r"\(\.\.\., 21, 3\)"):
        norm.normalize(torch.zeros(5, 63))


def test_motion_stream_runs_in_an_mmdit():
    config = {"streams": {"motion": motion_stream_config(dim=32, depth=2, heads=2, dim_head=16)}}
    model = MMDiT(**config)
    assert model.specs["motion"].frame_rate == 25 and model.specs["motion"].cond_channels == 51
    batch = {"motion": StreamBatch.from_lengths(torch.randn(1, 25, 12), cond=torch.randn(1, 25, 51))}
    out = model({"motion": torch.randn(1, 25, 12)}, torch.tensor([0.5]), batch)
    assert out["motion"].shape == (1, 25, 12)
