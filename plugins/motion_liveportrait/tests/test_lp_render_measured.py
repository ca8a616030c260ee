"""The weights-free renderer checked by measurement: dlib's 68 landmarks, fitted on the rendered frames, follow
the motion it was given (eyelids, brows, mouth, lip rounding, head pose), and a half-open mouth has no thin dark
line.

Head pose is read back by fitting the generic 3-D face (``face3d.fit_pose``, weak perspective) to dlib's
landmarks of each frame. The renderer turns the portrait's landmarks with depths from that same face, so the fit
alone cannot tell whether those depths are right; what it checks is that the detected face turns rigidly by the
template's angles. The check independent of any depth model: a yaw of ψ shortens the line between the outer eye
corners (two points at one depth, by the face's symmetry) to cos ψ of its length, whatever the depths are.
"""

import numpy as np
import pytest

pytest.importorskip("dlib", reason="the measurements fit dlib's 68 landmarks")

from mmflow_motion_liveportrait import extract, face3d, render  # noqa: E402
from mmflow_motion_liveportrait.expression_layout import BLINK, amount  # noqa: E402
from mmflow_motion_liveportrait.idle import idle_motion  # noqa: E402
from mmflow_motion_liveportrait.keypoints import MOUTH_KEYPOINT_INDICES  # noqa: E402
from mmflow_motion_liveportrait.plugin import MOTION  # noqa: E402


@pytest.fixture(scope="module")
def renderer(astronaut) -> render.LandmarkFallbackRenderer:
    return render.LandmarkFallbackRenderer(astronaut)


def speech_like_opening(frames: int, seed: int = 0) -> np.ndarray:
    generator = np.random.default_rng(seed)
    steps = np.arange(frames)
    return np.clip(0.45 + 0.4 * np.sin(steps / 2.1) + 0.12 * generator.standard_normal(frames), 0, 1)


def test_eyes_blink_and_the_mouth_speaks_as_measured_by_dlib(renderer):
    frames = int(6 * MOTION.frame_rate)  # 6 s of the idle face (blinks, brows, gaze, drift) while speaking
    opening = speech_like_opening(frames)
    exp = render.expression_for_opening(opening) + idle_motion(frames, seed=3, frame_rate=MOTION.frame_rate)
    closure = amount(exp, BLINK)
    assert closure.max() > 0.9 and (np.diff((closure > 0.5).astype(int)) == 1).sum() >= 2  # at least two blinks

    landmarks = extract.track_landmarks(renderer.render(exp, progress=False))
    eye_aspect = extract.eye_open_ratios(landmarks).mean(axis=-1)
    assert np.corrcoef(eye_aspect, closure)[0, 1] < -0.8  # the eyes close when the motion says so
    assert eye_aspect[closure > 0.9].max() < 0.6 * np.median(eye_aspect)
    mouth = extract.mouth_opening_from_landmarks(landmarks)
    assert np.corrcoef(mouth, opening)[0, 1] > 0.9  # lip sync kept while the rest of the face moves
    # Brows: their height above the eye corners follows the brow raise (a ±1 px motion in this small face).
    brow_height = landmarks[:, [36, 39, 42, 45], 1].mean(axis=1) - landmarks[:, 17:27, 1].mean(axis=1)
    assert np.corrcoef(brow_height, renderer.controls(exp)["brow"])[0, 1] > 0.6


def eye_line(landmarks: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Angle (degrees, y down), length and centre of the line between the eye centres."""
    left, right = landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)
    delta = right - left
    return float(np.degrees(np.arctan2(delta[1], delta[0]))), float(np.linalg.norm(delta)), (left + right) / 2


def test_a_pose_carrying_template_moves_the_detected_face_by_its_pose(astronaut, renderer):
    frames = 5
    roll = np.array([0.0, 4.0, 8.0, -6.0, 3.0])
    scale = np.array([1.0, 1.0, 1.05, 0.95, 1.0])[:, None] * 1.4
    t = np.zeros((frames, 3))
    t[4, :2] = (0.04, -0.03)
    motion = render.DrivingMotion(exp=np.zeros((frames, 21, 3)), pitch=np.zeros(frames), yaw=np.zeros(frames),
                                  roll=roll, scale=scale, t=t)
    rendered = renderer.render(motion, progress=False)
    landmarks = extract.track_landmarks(rendered)
    angle0, length0, centre0 = eye_line(landmarks[0])
    pixels_per_unit = renderer.face.size / 2 * np.linalg.norm(renderer.face.crop_to_frame[:2, 0])
    for k in range(1, frames):
        angle, length, centre = eye_line(landmarks[k])
        assert abs((angle - angle0) - (roll[k] - roll[0])) < 2.0  # degrees, as LivePortrait's roll turns kps
        assert abs(length / length0 - scale[k, 0] / scale[0, 0]) < 0.03
    shift = eye_line(landmarks[4])[2] - centre0
    np.testing.assert_allclose(shift, t[4, :2] * pixels_per_unit, atol=1.5)


def test_the_pose_fit_recovers_known_rotations_of_the_mean_face():
    generator = np.random.default_rng(0)
    for pitch, yaw, roll in ((0, 0, 0), (10, -15, 5), (-20, 25, -8)):
        points = 3.0 * (face3d.MEAN_FACE @ face3d.rotation(pitch, yaw, roll).T)[:, :2] + (120, 80)
        fit = face3d.fit_pose(points + generator.normal(0, 0.05, points.shape))
        np.testing.assert_allclose([fit["pitch"], fit["yaw"], fit["roll"], fit["scale"]], [pitch, yaw, roll, 3.0],
                                   atol=0.3)
        np.testing.assert_allclose(face3d.angles(face3d.rotation(pitch, yaw, roll)), (pitch, yaw, roll), atol=1e-9)
    nose_tip = 30
    turned = face3d.MEAN_FACE @ face3d.rotation(0, 10, 0).T
    assert turned[nose_tip, 0] < face3d.MEAN_FACE[nose_tip, 0]  # positive yaw: the nose goes to image-left
    turned = face3d.MEAN_FACE @ face3d.rotation(10, 0, 0).T
    assert turned[nose_tip, 1] > face3d.MEAN_FACE[nose_tip, 1]  # positive pitch: down
    with pytest.raises(ValueError, match="N×2"):
        face3d.fit_pose(np.zeros((68, 3)))


def test_yaw_and_pitch_turn_the_detected_face_by_the_templates_angles(renderer):
    pitch = np.array([0.0, 0.0, 0.0, 12.0, -12.0, 8.0])
    yaw = np.array([0.0, 15.0, -15.0, 0.0, 0.0, -12.0])
    roll = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 6.0])
    motion = render.DrivingMotion(exp=np.zeros((len(yaw), 21, 3)), pitch=pitch, yaw=yaw, roll=roll)
    landmarks = extract.track_landmarks(renderer.render(motion, progress=False))
    first = face3d.fit_pose(landmarks[0])["R"]
    measured = np.array([face3d.angles(face3d.fit_pose(frame)["R"] @ first.T) for frame in landmarks])
    np.testing.assert_allclose(measured[:, 0], pitch, atol=4.0)  # degrees
    np.testing.assert_allclose(measured[:, 1], yaw, atol=4.0)
    np.testing.assert_allclose(measured[:, 2], roll, atol=2.0)
    # Depth-free: the outer eye corners' distance shrinks to cos(yaw), and pitch and roll leave it alone.
    corners = np.linalg.norm(landmarks[:, 45] - landmarks[:, 36], axis=1)
    np.testing.assert_allclose(corners / corners[0], np.cos(np.radians(yaw)), atol=0.012)


def test_rounded_vowels_narrow_the_mouth_and_spread_ones_widen_it(renderer):
    visemes = pytest.importorskip("mmflow_jamflow.data.visemes", reason="the visemes are JAM-Flow's corpus's")
    width = {}
    for vowel in ("i:", "oU", "u:"):
        # 0.6 s of the vowel between pauses; the face besides the mouth held at its first frame (no blinks).
        exp = visemes.motion_from_phones([("_", 0.0, 0.2), (vowel, 0.2, 0.8), ("_", 0.8, 1.0)], 25, seed=0)
        rest = [k for k in range(21) if k not in MOUTH_KEYPOINT_INDICES]
        exp[:, rest] = exp[:1, rest]
        landmarks = extract.track_landmarks(renderer.render(exp, progress=False))
        mouth = np.linalg.norm(landmarks[:, 54] - landmarks[:, 48], axis=1)  # dlib's mouth corners
        width[vowel] = float(np.median(mouth[9:16])) / float(mouth[0])  # the held vowel vs the closed mouth
    assert width["i:"] > 1.05  # spread
    assert width["oU"] < 0.98 and width["u:"] < 0.95  # rounded
    assert width["oU"] < width["i:"] - 0.1 and width["u:"] < width["i:"] - 0.1


def dark_runs(profile: np.ndarray, threshold: float = 70) -> list[int]:
    runs, length = [], 0
    for dark in profile < threshold:
        if dark:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs + ([length] if length else [])


@pytest.mark.parametrize("size", [None, 1024])
def test_no_thin_dark_line_across_the_teeth_at_any_opening(astronaut, size):
    renderer = render.LandmarkFallbackRenderer(astronaut, **({} if size is None else {"size": size}))
    openings = np.linspace(0.0, 1.0, 41)
    frames = renderer.render_openings(openings, progress=False)
    lm = renderer.face.landmarks
    mouth_width = float(np.linalg.norm(lm[54] - lm[48]))
    to_frame = np.linalg.norm(renderer.face.crop_to_frame[:2, 0])
    column = int(round(lm[[62, 66], 0].mean()))
    for opening, frame in zip(openings, frames, strict=True):
        # Through the lip centre, from the upper lip to the lower lip (moved down by the jaw drop).
        top = int(lm[62, 1] - 0.1 * mouth_width)
        bottom = int(np.ceil(lm[57, 1] + opening * renderer.drop_px * to_frame))
        profile = frame[top:bottom, column - 1 : column + 2].astype(float).mean(axis=(1, 2))
        runs = dark_runs(profile)
        assert not runs or min(runs) >= 0.05 * mouth_width, f"opening {opening:.3f}: dark runs {runs} px"
