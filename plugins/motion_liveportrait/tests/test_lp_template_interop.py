"""mmflow's motion ``.pkl`` files pass official LivePortrait's driving-template reader (``inference.py -d x.pkl``).

LivePortrait is not a package, so :func:`official_template_reader` repeats, line for line in logic, what its
reader does with a template, from KwaiVGI/LivePortrait at commit 1986663be3b6902605d32200c01f4bfd36cda83d:
``src/utils/io.py`` ``load`` (plain ``pickle.load``), ``src/live_portrait_pipeline.py`` lines 109-123 (the keys
read at load), 308-316 (each frame through ``src/utils/helper.py`` ``dct2device``, ``R``/``R_d``, frame 0 cached),
322, 335, 355, 359 and 386-387 (relative driving of an image) and 417-423 with ``src/live_portrait_wrapper.py``
lines 320-334 (the retargeting's use of ``c_d_eyes_lst`` / ``c_d_lip_lst``).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from mmflow_jamflow.outputs import JAMFlowOutput
from mmflow_motion_liveportrait.codec import LivePortraitMotionCodec
from mmflow_motion_liveportrait.keypoints import rotation_matrix
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer
from mmflow_motion_liveportrait.motion_template import (
    MotionTemplate,
    load_motion_template,
    open_ratios,
    save_motion_template,
    template_from_expressions,
)
from mmflow_motion_liveportrait.plugin import MOTION


def _dct2device(dct: dict, device: str) -> dict:
    """``src/utils/helper.py`` ``dct2device``: every value of a frame becomes a tensor."""
    for key in dct:
        dct[key] = dct[key].to(device) if isinstance(dct[key], torch.Tensor) else torch.tensor(dct[key]).to(device)
    return dct


def official_template_reader(path, x_c_s: torch.Tensor, device: str = "cpu") -> dict:
    """What official LivePortrait does with ``-d path.pkl`` for an image source, short of the networks.

    The source is canonical keypoints ``x_c_s`` (1×21×3) with the identity pose, zero expressions, scale 1 and no
    translation; its retargeting ratios are fixed. Returns the per-frame driving keypoints and retargeting inputs.
    """
    with open(path, "rb") as stream:
        driving_template_dct = pickle.load(stream)
    c_d_eyes_lst = driving_template_dct["c_eyes_lst"] if "c_eyes_lst" in driving_template_dct.keys() \
        else driving_template_dct["c_d_eyes_lst"]
    c_d_lip_lst = driving_template_dct["c_lip_lst"] if "c_lip_lst" in driving_template_dct.keys() \
        else driving_template_dct["c_d_lip_lst"]
    n_frames = driving_template_dct["n_frames"]
    flag_is_driving_video = n_frames > 1
    output_fps = driving_template_dct.get("output_fps", 25)

    x_s_info = {"kp": x_c_s, "exp": torch.zeros(1, 21, 3), "scale": torch.ones(1, 1),
                "t": torch.zeros(1, 3)}
    R_s = torch.eye(3)[None]
    c_s_eyes, c_s_lip = np.array([[0.3, 0.3]], np.float32), np.array([[0.1]], np.float32)
    driven, eye_ratios, lip_ratios = [], [], []
    for i in range(n_frames):
        x_d_i_info = _dct2device(driving_template_dct["motion"][i], device)
        R_d_i = x_d_i_info["R"] if "R" in x_d_i_info.keys() else x_d_i_info["R_d"]
        if i == 0:
            R_d_0, x_d_0_info = R_d_i, x_d_i_info.copy()
        R_new = (R_d_i @ R_d_0.permute(0, 2, 1)) @ R_s
        delta_new = x_s_info["exp"] + (x_d_i_info["exp"] - x_d_0_info["exp"])
        scale_new = x_s_info["scale"] * (x_d_i_info["scale"] / x_d_0_info["scale"])
        t_new = x_s_info["t"] + (x_d_i_info["t"] - x_d_0_info["t"])
        t_new[..., 2].fill_(0)
        driven.append(scale_new * (x_s_info["kp"] @ R_new + delta_new) + t_new)
        c_d_eyes_i_tensor = torch.Tensor([c_d_eyes_lst[i][0][0]]).reshape(1, 1)
        eye_ratios.append(torch.cat([torch.from_numpy(c_s_eyes).float(), c_d_eyes_i_tensor], dim=1))
        c_d_lip_i_tensor = torch.Tensor([c_d_lip_lst[i][0]]).reshape(1, 1)
        lip_ratios.append(torch.cat([torch.from_numpy(c_s_lip).float(), c_d_lip_i_tensor], dim=1))
    return {"n_frames": n_frames, "video": flag_is_driving_video, "fps": output_fps, "driven": driven,
            "eyes": eye_ratios, "lip": lip_ratios}


def _expressions(frames: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    exp = (0.01 * rng.normal(size=(frames, 21, 3))).astype(np.float32)
    exp[:, 19, 1] = np.linspace(-0.015, 0.05, frames)  # the mouth opens (kp 19 y is jaw opening)
    return exp


def _check_against_official_reader(path, template: MotionTemplate) -> dict:
    """The official reader's driving keypoints equal LivePortrait's relative-motion formula on ``template``."""
    x_c_s = np.random.default_rng(1).normal(scale=0.3, size=(21, 3)).astype(np.float32)
    read = official_template_reader(path, torch.from_numpy(x_c_s)[None])
    assert read["n_frames"] == template.num_frames and read["video"] and read["fps"] == template.fps
    s, R, exp, t = template.scale, template.R, template.exp, template.t
    for i, driven in enumerate(read["driven"]):
        assert driven.shape == (1, 21, 3) and driven.dtype == torch.float32
        shift = t[i] - t[0]
        shift[2] = 0.0  # LivePortrait zeroes t_z
        expected = s[i] / s[0] * (x_c_s @ (R[i] @ R[0].T) + exp[i] - exp[0]) + shift
        np.testing.assert_allclose(driven[0].numpy(), expected, atol=1e-5)
    assert all(r.shape == (1, 3) for r in read["eyes"]) and all(r.shape == (1, 2) for r in read["lip"])
    return read


# LivePortrait's own torch.Tensor([array]) for the lip ratio warns that it is slow; that is its code, kept as is.
pytestmark = pytest.mark.filterwarnings("ignore:Creating a tensor from a list of numpy.ndarrays")


def test_pipeline_output_pkl_passes_the_official_reader(tmp_path):
    exp = _expressions()
    JAMFlowOutput(audios=None, motions=[exp], videos=None, mels=None, fps=25.0).save(tmp_path, kinds=("pkl",))
    read = _check_against_official_reader(tmp_path / "sample.pkl", template_from_expressions(exp, 25.0))
    lips = [float(r[0, 1]) for r in read["lip"]]
    assert lips[-1] > lips[0]  # the ratio LivePortrait's lip retargeting reads follows the opening mouth


def test_pkl_has_liveportraits_keys_shapes_and_dtypes(tmp_path):
    path = save_motion_template(template_from_expressions(_expressions(3), 30.0), tmp_path / "clip.pkl")
    with open(path, "rb") as stream:
        payload = pickle.load(stream)
    assert set(payload) == {"n_frames", "output_fps", "motion", "c_eyes_lst", "c_lip_lst"}
    assert payload["n_frames"] == 3 and payload["output_fps"] == 30.0
    shapes = {"scale": (1, 1), "R": (1, 3, 3), "exp": (1, 21, 3), "t": (1, 3)}
    for frame in payload["motion"]:
        assert {key: value.shape for key, value in frame.items()} == shapes
        assert all(value.dtype == np.float32 for value in frame.values())
    assert all(c.shape == (1, 2) and c.dtype == np.float32 for c in payload["c_eyes_lst"])
    assert all(c.shape == (1, 1) and c.dtype == np.float32 for c in payload["c_lip_lst"])


def test_codec_save_keeps_the_given_templates_head_pose(tmp_path):
    frames = 8
    roll = torch.linspace(0, 12, frames)
    rotation = rotation_matrix(torch.zeros(frames), torch.zeros(frames), roll).numpy().astype(np.float32)
    given = MotionTemplate(scale=np.full((frames, 1), 1.2, np.float32), R=rotation, exp=_expressions(frames),
                           t=np.tile(np.float32([0.05, -0.02, 0.0]), (frames, 1)), fps=25.0)
    save_motion_template(given, tmp_path / "given.npz")

    class Pipeline:
        motion_normalizer = MotionNormalizer()
        renderer = None

    codec = LivePortraitMotionCodec(MOTION, Pipeline())
    encoded = codec.encode({"motion": str(tmp_path / "given.npz")}, "given")
    track = codec.fit(encoded, 0, frames + 2)
    outputs = codec.decode(track.latent, track.cond, encoded)
    codec.save(outputs, tmp_path, "out")
    saved = load_motion_template(tmp_path / "out.pkl")
    np.testing.assert_allclose(saved.R[:frames], rotation, atol=1e-6)
    np.testing.assert_allclose(saved.R[frames:], rotation[[-1, -1]], atol=1e-6)  # the last pose is held
    assert np.allclose(saved.scale, 1.2) and np.allclose(saved.t[:, 0], 0.05)
    read = _check_against_official_reader(tmp_path / "out.pkl", saved)
    turned = read["driven"][frames - 1] - read["driven"][0] - torch.from_numpy(saved.exp[frames - 1] - saved.exp[0])
    assert turned.abs().max() > 0.01  # the head rolls 12° in LivePortrait too, not only the expressions move


# LivePortrait's neutral closed-lip expression (src/utils/resources/lip_array.pkl at 1986663), y of kps 14, 17,
# 19, 20; its retargeting treats a lip ratio under 0.03 as closed (inference_config.py lip_normalize_threshold).
_CLOSED_LIP_Y = {14: -0.001796, 17: -0.001166, 19: -0.015091, 20: 0.005628}


@pytest.mark.parametrize("open_y, lip_range", [(None, (0.0, 0.03)), (0.05, (0.3, 0.7))])
def test_lip_ratio_of_closed_and_open_mouths(open_y, lip_range):
    exp = np.zeros((1, 21, 3), np.float32)
    for kp, y in _CLOSED_LIP_Y.items():
        exp[0, kp, 1] = y
    if open_y is not None:
        exp[0, 19, 1] = open_y  # jaw open as far as the official talking templates go
    c_eyes, c_lip = open_ratios(exp)
    assert c_eyes.shape == (1, 2) and c_lip.shape == (1, 1)
    assert lip_range[0] <= c_lip[0, 0] < lip_range[1]
    assert np.all((c_eyes > 0.2) & (c_eyes < 0.4))  # open eyes (the official templates' ratios span 0 to 0.57)
