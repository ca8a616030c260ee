"""Motion templates: LivePortrait .pkl layout and .npz round trips, atomic writes, malformed-file errors."""

import os
import pickle

import numpy as np
import pytest
from mmflow_motion_liveportrait import motion_template
from mmflow_motion_liveportrait.motion_template import (
    MotionTemplate,
    MotionTemplateError,
    load_motion_template,
    save_motion_template,
)


def random_template(num_frames: int = 5, full: bool = True) -> MotionTemplate:
    rng = np.random.default_rng(0)
    optional = {}
    if full:
        optional = dict(
            kp=rng.normal(size=(num_frames, 21, 3)),
            x_s=rng.normal(size=(num_frames, 21, 3)),
            c_eyes=rng.uniform(size=(num_frames, 2)),
            c_lip=rng.uniform(size=(num_frames, 1)),
        )
    return MotionTemplate(
        scale=1.0 + rng.uniform(size=(num_frames, 1)),
        R=rng.normal(size=(num_frames, 3, 3)),
        exp=0.05 * rng.normal(size=(num_frames, 21, 3)),
        t=np.concatenate([0.1 * rng.normal(size=(num_frames, 2)), np.zeros((num_frames, 1))], axis=1),
        fps=30.0,
        **optional,
    )


def assert_same(a: MotionTemplate, b: MotionTemplate) -> None:
    assert a.fps == b.fps and a.num_frames == b.num_frames
    assert a.arrays().keys() == b.arrays().keys()
    for name, value in a.arrays().items():
        assert value.dtype == np.float32 and np.array_equal(value, b.arrays()[name]), name


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
@pytest.mark.parametrize("full", [True, False])
def test_round_trip(tmp_path, suffix, full):
    template = random_template(full=full)
    path = save_motion_template(template, tmp_path / f"clip{suffix}")
    assert_same(load_motion_template(path), template)
    assert sorted(os.listdir(tmp_path)) == [f"clip{suffix}"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's usual mode, not a temp file's 0600


def test_pkl_has_liveportrait_layout(tmp_path):
    template = random_template(num_frames=3)
    path = save_motion_template(template, tmp_path / "clip.pkl")
    with open(path, "rb") as stream:
        payload = pickle.load(stream)
    assert payload["n_frames"] == 3 and payload["output_fps"] == 30.0
    frame = payload["motion"][1]
    assert frame["scale"].shape == (1, 1) and frame["R"].shape == (1, 3, 3)
    assert (
        frame["exp"].shape == (1, 21, 3) and frame["t"].shape == (1, 3) and frame["x_s"].shape == (1, 21, 3)
    )
    assert frame["exp"].dtype == np.float32
    assert payload["c_eyes_lst"][0].shape == (1, 2) and payload["c_lip_lst"][0].shape == (1, 1)


def test_reads_official_and_older_pkl_layouts(tmp_path):
    rng = np.random.default_rng(1)

    def frame(rotation_key):
        return {
            "scale": rng.uniform(size=(1, 1)).astype(np.float32),
            rotation_key: rng.normal(size=(1, 3, 3)).astype(np.float32),
            "exp": rng.normal(size=(1, 21, 3)).astype(np.float32),
            "t": rng.normal(size=(1, 3)).astype(np.float32),
        }

    current = {
        "n_frames": 2,
        "output_fps": 25,
        "motion": [frame("R"), frame("R")],
        "c_eyes_lst": [rng.uniform(size=(1, 2)).astype(np.float32) for _ in range(2)],
        "c_lip_lst": [rng.uniform(size=(1, 1)).astype(np.float32) for _ in range(2)],
    }
    older = {"n_frames": 2, "motion": [frame("R_d"), frame("R_d")], "c_d_eyes_lst": current["c_eyes_lst"]}
    for name, payload in (("current.pkl", current), ("older.pkl", older)):
        with open(tmp_path / name, "wb") as stream:
            pickle.dump(payload, stream)  # default protocol, as LivePortrait's dump()
    template = load_motion_template(tmp_path / "current.pkl")
    assert template.num_frames == 2 and template.fps == 25.0 and template.c_lip.shape == (2, 1)
    np.testing.assert_array_equal(template.R[1], current["motion"][1]["R"][0])
    old = load_motion_template(tmp_path / "older.pkl")
    np.testing.assert_array_equal(old.R[0], older["motion"][0]["R_d"][0])
    assert old.fps == 25.0 and old.c_lip is None and old.c_eyes.shape == (2, 2)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def write_pickle(path, payload):
    with open(path, "wb") as stream:
        pickle.dump(payload, stream)
    return path


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2, 3], "expected a dict with a 'motion' list"),
        ({"motion": []}, "non-empty list"),
        ({"n_frames": 3, "motion": [{"exp": np.zeros((1, 21, 3))}]}, "n_frames is 3"),
        (
            {"motion": [{"exp": np.zeros((1, 21, 3)), "R": np.zeros((1, 3, 3)), "t": np.zeros((1, 3))}]},
            "'scale'",
        ),
        (
            {
                "motion": [
                    {
                        "exp": np.zeros((1, 21, 3)),
                        "R": np.zeros((1, 3, 3)),
                        "t": np.zeros((1, 4)),
                        "scale": 1.0,
                    }
                ]
            },
            "field 't' has shape",
        ),
        ({"motion": [{"exp": np.zeros((1, 21, 3))}], "x": _RunsCode()}, "not allowed"),
    ],
)
def test_malformed_pkl_errors(tmp_path, payload, message):
    path = write_pickle(tmp_path / "bad.pkl", payload)
    with pytest.raises(MotionTemplateError, match=message) as error:
        load_motion_template(path)
    assert "bad.pkl" in str(error.value)


def test_truncated_files_are_reported(tmp_path):
    for suffix in (".pkl", ".npz"):
        path = save_motion_template(random_template(), tmp_path / f"clip{suffix}")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(MotionTemplateError, match=f"clip{suffix}"):
            load_motion_template(path)


def test_malformed_npz_errors(tmp_path):
    arrays = random_template().arrays()
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != "R"})
    with pytest.raises(MotionTemplateError, match=r"missing arrays \['R'\]"):
        load_motion_template(tmp_path / "missing.npz")
    np.savez(tmp_path / "short.npz", **{**arrays, "t": arrays["t"][:3]})
    with pytest.raises(MotionTemplateError, match=r"MotionTemplate.t must have shape \(5, 3\)"):
        load_motion_template(tmp_path / "short.npz")
    with pytest.raises(MotionTemplateError, match="extension"):
        save_motion_template(random_template(), tmp_path / "clip.json")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_motion_template(tmp_path / "absent.npz")


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = save_motion_template(random_template(num_frames=2), tmp_path / "clip.npz")
    before = path.read_bytes()

    def broken_write(template, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(motion_template, "_write_npz", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_motion_template(random_template(num_frames=4), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["clip.npz"]


def test_template_validation_names_the_field():
    template = random_template()
    with pytest.raises(ValueError, match="MotionTemplate.R"):
        MotionTemplate(scale=template.scale, R=template.R[:, :2], exp=template.exp, t=template.t)
    with pytest.raises(ValueError, match="fps"):
        MotionTemplate(scale=template.scale, R=template.R, exp=template.exp, t=template.t, fps=0)
    with pytest.raises(ValueError, match="NaN"):
        MotionTemplate(scale=template.scale * np.nan, R=template.R, exp=template.exp, t=template.t)


# Opcodes of tiny pickles that use only allowed globals yet ask numpy for 256 GiB (2**38 elements).
_HUGE_SHAPE = b"\x8a\x05\x00\x00\x00\x00\x40\x85"  # LONG1 2**38, TUPLE1
_ND = b"\x8c\x05numpy\x8c\x07ndarray\x93"
_HUGE_PICKLES = {
    "_reconstruct": b"\x80\x04\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93" + _ND + _HUGE_SHAPE
    + b"C\x01b\x87R.",
    "ndarray(shape)": b"\x80\x04" + _ND + _HUGE_SHAPE + b"\x85R.",
    "ndarray.__new__": b"\x80\x04" + _ND + _HUGE_SHAPE + b"\x85\x81.",
}


@pytest.mark.parametrize("name", sorted(_HUGE_PICKLES))
def test_allowed_globals_cannot_allocate_more_than_the_file_holds(tmp_path, name):
    path = tmp_path / "huge.pkl"
    path.write_bytes(_HUGE_PICKLES[name])
    assert path.stat().st_size < 128
    with pytest.raises(MotionTemplateError, match=r"huge\.pkl: .*larger than the file"):
        load_motion_template(path)


def test_npz_headers_are_checked_before_numpy_allocates(tmp_path):
    import zipfile

    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (68719476736,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with zipfile.ZipFile(tmp_path / "lies.npz", "w") as archive:
        archive.writestr("exp.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
                         + bytes(16))
    with pytest.raises(MotionTemplateError, match=r"lies\.npz: its arrays would take more than"):
        load_motion_template(tmp_path / "lies.npz")


@pytest.mark.parametrize("fps", [1e-9, 0.5, 1e4, float("inf")])
def test_fps_out_of_range_is_refused_by_file(tmp_path, fps):
    np.savez(tmp_path / "clip.npz", fps=np.float64(fps), **random_template().arrays())
    with pytest.raises(MotionTemplateError, match=r"clip\.npz: the motion's fps must be a number in \[1, 1000\]"):
        load_motion_template(tmp_path / "clip.npz")


def test_zero_frames_are_refused_by_file(tmp_path):
    np.savez(tmp_path / "empty.npz", **{k: v[:0] for k, v in random_template().arrays().items()})
    with pytest.raises(MotionTemplateError, match=r"empty\.npz: the motion has 0 frames"):
        load_motion_template(tmp_path / "empty.npz")


def test_oversized_files_are_refused_before_reading(tmp_path, monkeypatch):
    path = save_motion_template(random_template(), tmp_path / "clip.pkl")
    monkeypatch.setattr(motion_template, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(MotionTemplateError, match=r"clip\.pkl: .* larger than a motion template can be"):
        load_motion_template(path)
