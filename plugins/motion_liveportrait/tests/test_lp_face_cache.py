"""Portrait detections kept on disk: the same result as detecting, never a stale one, no code run on reading."""

import json
import logging

import numpy as np
import pytest
from mmflow_motion_liveportrait import face, face_cache

pytest.importorskip("dlib", reason="detections come from dlib")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("MMFLOW_FACE_CACHE", raising=False)
    return tmp_path / "mmflow" / "faces"


def assert_same(a: face.Detection, b: face.Detection) -> None:
    assert a.box == b.box and a.score == b.score
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


def forbid_detection(monkeypatch):
    def refuse(*_):
        raise AssertionError("the detector ran although the portrait is cached")

    monkeypatch.setattr(face.LandmarkDetector, "detect_all", refuse)


def test_the_shipped_entry_is_what_the_detector_finds_on_the_demo_portrait(cache):
    portrait = face.load_portrait(face.demo_portrait_path())
    shipped = face_cache.SHIPPED / f"{face_cache.detection_key(portrait)}.json"
    assert shipped.is_file(), "assets/faces lacks the demo portrait's entry: run face_cache.detect_portrait on it"
    stored = face_cache._read(shipped)
    assert stored is not None
    assert_same(stored[0], face.default_detector().detect(portrait))


def test_a_portrait_is_detected_once_then_read_back(cache, astronaut, monkeypatch):
    portrait = np.ascontiguousarray(astronaut[:, ::-1])  # not the shipped portrait
    first = face_cache.detect_portrait(portrait, "flipped")
    assert_same(first, face.default_detector().detect(portrait))
    entries = list(cache.glob("*.json"))
    assert [p.stem for p in entries] == [face_cache.detection_key(portrait)]
    forbid_detection(monkeypatch)
    assert_same(face_cache.detect_portrait(portrait, "flipped"), first)


def test_other_pixels_or_settings_give_another_key(astronaut, monkeypatch):
    key = face_cache.detection_key(astronaut)
    touched = astronaut.copy()
    touched[0, 0, 0] ^= 1
    assert face_cache.detection_key(touched) != key
    assert face_cache.detection_key(astronaut[:256]) != key
    monkeypatch.setattr(face_cache, "DETECTION_MAX_SIDE", 320)
    assert face_cache.detection_key(astronaut) != key


def test_a_damaged_entry_is_ignored_and_rewritten(cache, astronaut):
    portrait = np.ascontiguousarray(astronaut[:, ::-1])
    cache.mkdir(parents=True)
    entry = cache / f"{face_cache.detection_key(portrait)}.json"
    entry.write_text(json.dumps({"format": 1, "box": [0, 0, 1, 1], "score": 1.0, "landmarks": [[0, 0]] * 5}))
    found = face_cache.detect_portrait(portrait)
    assert_same(found, face.default_detector().detect(portrait))
    assert json.loads(entry.read_text())["landmarks"] == found.landmarks.tolist()
    entry.write_text("{not json")
    assert_same(face_cache.detect_portrait(portrait), found)


def test_switched_off_it_neither_reads_nor_writes(cache, astronaut, monkeypatch):
    portrait = np.ascontiguousarray(astronaut[:, ::-1])
    monkeypatch.setenv("MMFLOW_FACE_CACHE", "off")
    face_cache.detect_portrait(portrait)
    assert not cache.exists()


def test_a_face_that_is_refused_is_refused_every_time_and_not_kept(cache):
    blank = np.full((128, 128, 3), 200, np.uint8)
    for _ in range(2):
        with pytest.raises(face.NoFaceError, match="no face found"):
            face_cache.detect_portrait(blank, "blank.png")
    assert not list(cache.glob("*.json"))


def test_a_cached_portrait_with_several_faces_still_warns(cache, astronaut, monkeypatch, caplog):
    portrait = np.ascontiguousarray(astronaut[:, ::-1])
    found = face.default_detector().detect(portrait)
    cache.mkdir(parents=True)
    entry = {"format": 1, "box": list(found.box), "score": found.score, "landmarks": found.landmarks.tolist(),
             "faces": 2}
    (cache / f"{face_cache.detection_key(portrait)}.json").write_text(json.dumps(entry))
    forbid_detection(monkeypatch)
    with caplog.at_level(logging.WARNING):
        face_cache.detect_portrait(portrait, "two.png")
    assert "two.png: 2 faces found; using the largest" in caplog.text
