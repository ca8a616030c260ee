"""Motion extraction: the weights-free mouth-opening signal follows a rendered driving signal (through an mp4),
and the motion-extractor path runs M on the same crops as face.py and fills a MotionTemplate."""

import numpy as np
import pytest
import torch

pytest.importorskip("dlib", reason="extraction tracks the face with dlib-bin")
skimage_data = pytest.importorskip("skimage.data", reason="extraction tests use scikit-image's astronaut")

from mmflow_motion_liveportrait import extract, face, networks, render, video  # noqa: E402
from mmflow_motion_liveportrait.keypoints import KeypointInfo  # noqa: E402
from mmflow_motion_liveportrait.motion_template import save_motion_template  # noqa: E402


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def driving_signal() -> np.ndarray:
    generator = np.random.default_rng(3)
    steps = np.arange(40)
    return np.clip(0.45 + 0.4 * np.sin(steps / 2.0) + 0.15 * generator.standard_normal(40), 0, 1)


@pytest.fixture(scope="module")
def talking_video(tmp_path_factory, astronaut, driving_signal):
    """The fallback renderer's talking astronaut, written as H.264 (a synthetic driving video)."""
    frames = render.LandmarkFallbackRenderer(astronaut).render_openings(driving_signal, progress=False)
    path = tmp_path_factory.mktemp("extract") / "talking.mp4"
    return video.write_video(path, frames, fps=25)


def test_mouth_opening_follows_the_driving_signal(talking_video, driving_signal):
    opening = extract.extract_mouth_opening(talking_video)
    assert opening.shape == driving_signal.shape and opening.dtype == np.float32
    assert np.corrcoef(opening, driving_signal)[0, 1] > 0.8
    assert opening[driving_signal.argmax()] > opening[driving_signal.argmin()] + 0.05


def test_mouth_opening_is_normalised_by_face_size():
    points = np.zeros((68, 2))
    points[36], points[45] = (0, 0), (100, 0)  # outer eye corners 100 px apart
    points[62], points[66] = (50, 80), (50, 95)  # inner lips 15 px apart
    assert extract.mouth_opening_from_landmarks(points) == pytest.approx(0.15)
    assert extract.mouth_opening_from_landmarks(2 * points[None])[0] == pytest.approx(0.15)


@torch.no_grad()
def test_motion_extraction_with_a_random_motion_extractor(astronaut, tmp_path):
    frames = [np.roll(astronaut, shift, axis=1) for shift in (0, 6, 12)]
    torch.manual_seed(0)
    model = networks.MotionExtractor().eval()
    template = extract.extract_motion(frames, model, fps=30, batch_size=2, progress=False)

    assert template.num_frames == 3 and template.fps == 30
    assert template.exp.shape == (3, 21, 3) and template.R.shape == (3, 3, 3)
    assert template.c_lip.shape == (3, 1) and template.c_eyes.shape == (3, 2)
    assert (template.t[:, 2] == 0).all()

    # Frame 1 by hand: the tracked landmarks agree with a fresh detection; crop via face.py and run M.
    landmarks = extract.track_landmarks(frames)
    assert np.abs(landmarks[1] - face.default_detector().detect(frames[1]).landmarks).max() < 3
    crop = face.crop_from_landmarks(frames[1], landmarks[1])
    info = KeypointInfo.from_motion_output(model(crop.tensor()))
    assert np.allclose(template.exp[1], info.exp[0].numpy(), atol=1e-4)
    assert np.allclose(template.R[1], info.rotation[0].numpy(), atol=1e-4)
    assert np.allclose(template.x_s[1], info.transformed()[0].numpy(), atol=1e-4)
    save_motion_template(template, tmp_path / "driving.pkl")  # the official layout accepts it


def test_bad_motion_extractor_argument(astronaut):
    with pytest.raises(TypeError, match="MotionExtractor, LivePortraitWeights"):
        extract.extract_motion([astronaut], 42)
