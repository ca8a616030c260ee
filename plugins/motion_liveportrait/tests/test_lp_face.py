"""Face preparation on scikit-image's astronaut (public domain): detection, LivePortrait crop geometry, paste-back,
input conversions and the errors for unusable inputs."""

import builtins
import importlib.util
import logging

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib", reason="face tests need dlib-bin")
skimage_data = pytest.importorskip("skimage.data", reason="face tests use scikit-image's astronaut")

from mmflow_motion_liveportrait import face  # noqa: E402


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # 512×512×3 uint8


@pytest.fixture(scope="module")
def detector() -> face.LandmarkDetector:
    return face.default_detector()


@pytest.fixture(scope="module")
def crop(astronaut, detector) -> face.FaceCrop:
    return face.crop_face(astronaut, detector)


def test_astronaut_face_found(astronaut, detector):
    detection = detector.detect(astronaut)
    assert detection.landmarks.shape == (68, 2)
    left, top, right, bottom = detection.box
    assert 150 < left < right < 290 and 50 < top < bottom < 190  # her face, not the spacesuit false positive
    assert detection.score > 0.5


def test_crop_geometry_matches_liveportrait_conventions(crop):
    assert crop.image.shape == (256, 256, 3) and crop.image.dtype == np.uint8
    points = crop.landmarks_crop
    eyes = points[[36, 39, 42, 45]].mean(axis=0)
    lips = points[[48, 54]].mean(axis=0)
    assert abs(eyes[0] - lips[0]) < 1e-3  # rotation makes the eye→lip axis vertical
    assert lips[1] > eyes[1]
    # The crop side is 2.3 × the landmark extent (along the face axes), shifted up by 0.125 of the side.
    low, high = points.min(axis=0), points.max(axis=0)
    assert max(high - low) == pytest.approx(256 / 2.3, abs=0.5)
    assert (low + high) / 2 == pytest.approx([128 - 0.5, 128 - 0.5 + 0.125 * 256], abs=0.6)


def test_crop_transform_round_trips(crop):
    points = crop.landmarks
    back = face.apply_matrix(crop.crop_to_frame, crop.landmarks_crop)
    assert np.abs(back - points).max() < 1e-3
    at_512 = face.apply_matrix(crop.matrix_for(512), points)
    assert np.abs(at_512 - (2 * crop.landmarks_crop + 0.5)).max() < 1e-3  # same area, pixel centres kept


def test_crop_follows_the_face_when_the_image_shifts(astronaut, detector, crop):
    shift = np.array([23, 37])  # x, y
    shifted = np.pad(astronaut, ((shift[1], 0), (shift[0], 0), (0, 0)), mode="edge")
    found = detector.detect(shifted).landmarks
    assert np.abs(found - crop.landmarks - shift).max() <= 1.5  # dlib's detection grid jitters by ~1 px
    moved = face.crop_from_landmarks(shifted, crop.landmarks + shift)
    inner = (slice(32, 224), slice(32, 224))  # away from the crop border, which the padding changes
    assert np.abs(moved.image[inner].astype(int) - crop.image[inner].astype(int)).max() <= 1


def test_tilted_face_is_cropped_upright(astronaut, detector):
    tilted = np.asarray(Image.fromarray(astronaut).rotate(15, resample=Image.BICUBIC, center=(220, 130)))
    points = face.crop_face(tilted, detector).landmarks_crop
    assert abs(points[36, 1] - points[45, 1]) < 4  # eye line level again (dlib noise ~ 1-2 px)


def test_paste_back_of_the_unchanged_crop_restores_the_frame(astronaut, crop):
    rendered = np.asarray(Image.fromarray(crop.image).resize((512, 512), Image.BICUBIC))
    pasted = face.paste_back(astronaut, rendered, crop)
    assert pasted.shape == astronaut.shape
    difference = np.abs(pasted.astype(int) - astronaut.astype(int))
    assert difference.mean() < 1.5
    corners = face.apply_matrix(crop.crop_to_frame, np.array([[0.0, 0], [255, 0], [0, 255], [255, 255]]))
    below = int(np.ceil(corners[:, 1].max())) + 1
    assert below < 400
    assert difference[below:].max() == 0  # outside the crop the frame is untouched


def test_paste_back_blends_softly(astronaut, crop):
    white = np.full((256, 256, 3), 255, np.uint8)
    pasted = face.paste_back(astronaut, white, crop).astype(int)
    centre = face.apply_matrix(crop.crop_to_frame, np.array([[128.0, 128.0]]))[0].round().astype(int)
    assert (pasted[centre[1], centre[0]] == 255).all()
    changed = np.abs(pasted - astronaut.astype(int)).max(axis=-1)
    partial = (changed > 0) & (pasted.min(axis=-1) < 250)
    assert partial.sum() > 1000  # a feathered band, not a hard square edge


def test_files_and_conversions(tmp_path, astronaut, detector, caplog):
    gray_path = tmp_path / "gray.png"
    Image.fromarray(astronaut).convert("L").save(gray_path)
    with caplog.at_level(logging.INFO, logger="mmflow_motion_liveportrait.face"):
        gray = face.crop_face(gray_path, detector)
    assert gray.image.shape == (256, 256, 3)
    assert np.ptp(gray.image.astype(int), axis=-1).max() <= 1  # replicated channels
    assert "grayscale" in caplog.text

    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:100, :100, 3] = 0  # transparent corner
    rgba_path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(rgba_path)
    loaded = face.load_image(rgba_path)
    assert loaded.shape == astronaut.shape
    assert (loaded[:100, :100] == 255).all()  # composited over white
    assert (loaded[200:] == astronaut[200:]).all()
    assert face.crop_face(rgba_path, detector).image.shape == (256, 256, 3)

    floats = face.load_image(astronaut.astype(np.float32) / 255)
    assert np.abs(floats.astype(int) - astronaut).max() <= 1


def test_non_image_file_is_an_error_naming_it(tmp_path, detector):
    fake = tmp_path / "portrait.png"
    fake.write_text("this is not an image")
    with pytest.raises(face.ImageReadError, match="portrait.png.*PNG, JPEG"):
        face.crop_face(fake, detector)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        face.crop_face(tmp_path / "missing.jpg", detector)
    with pytest.raises(face.ImageReadError, match="H×W×3"):
        face.load_image(np.zeros((4, 64, 64, 3), np.uint8))


def test_no_face_is_an_error(detector):
    with pytest.raises(face.NoFaceError, match="no face found"):
        face.crop_face(skimage_data.coffee(), detector)
    with pytest.raises(face.NoFaceError):
        face.crop_face(np.full((300, 300, 3), 128, np.uint8), detector)


def test_tiny_face_is_an_error(astronaut, detector):
    small = np.asarray(Image.fromarray(astronaut).resize((160, 160), Image.BILINEAR))
    with pytest.raises(face.FaceTooSmallError, match=r"only \d+ px wide.*higher-resolution"):
        face.crop_face(small, detector)


def test_several_faces_use_the_largest_with_a_warning(astronaut, detector, caplog):
    smaller = np.asarray(Image.fromarray(astronaut).resize((384, 384), Image.BILINEAR))
    canvas = np.full((512, 512 + 384, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[:384, 512:] = smaller
    with caplog.at_level(logging.WARNING, logger="mmflow_motion_liveportrait.face"):
        chosen = detector.detect(canvas, "two.png")
    assert "2 faces found; using the largest" in caplog.text
    assert chosen.box[2] < 512  # the full-size face on the left


def test_missing_detector_packages_name_the_pip_packages(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a),
    )
    with pytest.raises(face.DetectorUnavailableError, match="pip install dlib-bin.*face-recognition-models"):
        face.shape_predictor_path()

    real_import = builtins.__import__

    def no_dlib(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(face.DetectorUnavailableError, match="pip install dlib-bin"):
        face.LandmarkDetector()


def test_bundled_demo_portrait(detector):
    path = face.demo_portrait_path()
    assert path.stat().st_size < 200_000
    assert (path.parent / "LICENSE.md").read_text().count("public domain") >= 1
    assert face.crop_face(path, detector).image.shape == (256, 256, 3)


def test_tracker_follows_a_moving_face(astronaut, detector):
    tracker = face.FaceTracker(detector)
    first = tracker(astronaut)
    moved = tracker(np.roll(astronaut, (9, -7), axis=(0, 1)))
    assert np.abs(moved - first - [-7, 9]).mean() < 1.5
    blank = tracker(np.full_like(astronaut, 128))  # no face any more: keeps going with a warning, no error
    assert blank.shape == (68, 2)
