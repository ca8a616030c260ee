from fractions import Fraction

import pytest
import torch

from mmflow.streams import StreamBatch, StreamSpec, as_fraction, check_batches

AUDIO = StreamSpec("audio", Fraction(375, 4), channels=4)
MOTION = StreamSpec("motion", 25, channels=3, cond_channels=2)


def test_lengths_follow_duration_and_rate():
    assert AUDIO.frame_rate == Fraction(375, 4)
    assert AUDIO.num_frames(10) == 938  # 937.5 rounds up
    assert AUDIO.num_frames("4") == 375
    assert MOTION.num_frames(10) == 250
    assert MOTION.num_frames(0.1) == 3  # 2.5 rounds up, exactly (no float drift)
    assert AUDIO.seconds(375) == 4.0
    torch.testing.assert_close(MOTION.frame_times(3), torch.tensor([0.0, 0.04, 0.08]))


def test_rates_parse_exactly():
    assert as_fraction("93.75") == as_fraction(93.75) == as_fraction("375/4") == Fraction(375, 4)
    with pytest.raises(ValueError, match="not a number"):
        as_fraction("fast")


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError, match="position policy"):
        StreamSpec("a", 10, 1, position="absolute")
    with pytest.raises(ValueError, match="positive"):
        StreamSpec("a", 0, 1)
    with pytest.raises(ValueError, match="identifier"):
        StreamSpec("my stream", 10, 1)


def test_batch_record_derives_masks():
    batch = StreamBatch.from_lengths(torch.randn(2, 5, 4), [5, 3], given=torch.tensor([[1, 1, 0, 0, 0]] * 2).bool())
    assert batch.lengths.tolist() == [5, 3]
    assert batch.generated.tolist() == [[False, False, True, True, True], [False, False, True, False, False]]
    assert (batch.context()[:, 2:] == 0).all() and (batch.context()[:, :2] == batch.latent[:, :2]).all()
    doubled = batch.repeat(2)
    assert doubled.batch_size == 4 and torch.equal(doubled.latent[2:], batch.latent)
    with pytest.raises(ValueError, match="bool"):
        StreamBatch(torch.randn(1, 2, 1), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="lengths"):
        StreamBatch.from_lengths(torch.randn(2, 5, 4), [6, 2])


def test_check_batches_names_problems():
    specs = {"audio": AUDIO, "motion": MOTION}
    audio = StreamBatch.from_lengths(torch.randn(1, 375, 4))
    motion = StreamBatch.from_lengths(torch.randn(1, 100, 3), cond=torch.randn(1, 100, 2))
    check_batches(specs, {"audio": audio, "motion": motion})
    with pytest.raises(KeyError, match="unknown stream"):
        check_batches(specs, {"audio": audio, "motion": motion, "video": motion})
    with pytest.raises(KeyError, match="missing stream"):
        check_batches(specs, {"audio": audio})
    short = StreamBatch.from_lengths(torch.randn(1, 90, 3), cond=torch.randn(1, 90, 2))
    with pytest.raises(ValueError, match="different durations"):
        check_batches(specs, {"audio": audio, "motion": short})
    with pytest.raises(ValueError, match="expects a"):
        check_batches(specs, {"audio": audio, "motion": StreamBatch.from_lengths(torch.randn(1, 100, 3))})
