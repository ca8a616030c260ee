"""Renderers: the LivePortrait renderer equals the manual F→M→W→G chain (reduced random weights), and the
weights-free fallback opens the mouth when the mouth keypoints say so."""

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("dlib", reason="render tests detect the face with dlib-bin")
skimage_data = pytest.importorskip("skimage.data", reason="render tests use scikit-image's astronaut")

from mmflow_motion_liveportrait import extract, face, networks, render  # noqa: E402
from mmflow_motion_liveportrait.keypoints import (  # noqa: E402
    MOUTH_KEYPOINT_INDICES,
    KeypointInfo,
    rotation_matrix,
    split_expression,
    transform_keypoints,
)
from mmflow_motion_liveportrait.motion_template import MotionTemplate  # noqa: E402

# Small F/W/G with the official code paths (2 down blocks, 16-deep volume, occlusion map, 2× pixel shuffle);
# M and S are full size (they are cheap).
REDUCED_F = dict(block_expansion=8, max_features=64, reshape_channel=4, reshape_depth=16, num_resblocks=2)
REDUCED_W = dict(
    block_expansion=8,
    max_features=64,
    reshape_channel=4,
    dense_motion_params=dict(block_expansion=8, max_features=64, num_blocks=3, reshape_depth=16, compress=2),
)
REDUCED_G = dict(block_expansion=8, max_features=64)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def source_face(astronaut) -> face.FaceCrop:
    return face.crop_face(astronaut)


@pytest.fixture(scope="module")
def small_face(astronaut) -> face.FaceCrop:
    """A 128² crop: F, W and G are fully convolutional, and W+G at 64² features cost ~4 s/frame even reduced."""
    return face.crop_face(astronaut, config=face.CropConfig(size=128, warp_size=256))


@pytest.fixture(scope="module")
def reduced_networks() -> render.LivePortraitNetworks:
    torch.manual_seed(0)
    motion_extractor = networks.MotionExtractor()
    with torch.no_grad():
        motion_extractor.detector.fc_scale.bias.fill_(1.5)  # a plausible keypoint scale instead of ~0
    bundle = render.LivePortraitNetworks(
        appearance_feature_extractor=networks.AppearanceFeatureExtractor(**REDUCED_F),
        motion_extractor=motion_extractor,
        warping_module=networks.WarpingNetwork(**REDUCED_W),
        spade_generator=networks.SPADEDecoder(**REDUCED_G),
        stitching=networks.StitchingRetargetingNetwork.from_official_config("stitching"),
    )
    return bundle.to("cpu")


def driving_motion(frames: int, seed: int = 0) -> render.DrivingMotion:
    generator = np.random.default_rng(seed)
    return render.DrivingMotion(
        exp=0.02 * generator.standard_normal((frames, 21, 3)),
        pitch=generator.uniform(-10, 10, frames),
        yaw=generator.uniform(-10, 10, frames),
        roll=generator.uniform(-5, 5, frames),
        scale=generator.uniform(1.3, 1.6, (frames, 1)),
        t=np.concatenate([generator.uniform(-0.05, 0.05, (frames, 2)), np.zeros((frames, 1))], axis=1),
    )


# --------------------------------------------------------------------------------------------------------------
# LivePortrait renderer
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_one_frame_equals_the_manual_chain(astronaut, small_face, reduced_networks):
    renderer = render.LivePortraitRenderer(
        reduced_networks, astronaut, face=small_face, paste=False, use_stitching=False
    )
    motion = driving_motion(1)
    rendered = renderer.render(motion, progress=False)

    # F → M on the source crop, Eq. 2 for source and driving keypoints, W(f_s, x_d, x_s) → G.
    image = small_face.tensor()
    f_s = reduced_networks.appearance_feature_extractor(image)
    source = KeypointInfo.from_motion_output(reduced_networks.motion_extractor(image))
    x_s = source.transformed()
    rotation = rotation_matrix(motion.pitch, motion.yaw, motion.roll)
    x_d = transform_keypoints(source.kp, rotation, motion.exp, motion.scale, motion.t)
    warped = reduced_networks.warping_module(f_s, kp_driving=x_d, kp_source=x_s)
    expected = face.to_uint8(reduced_networks.spade_generator(warped.out))

    assert rendered.shape == (1, 256, 256, 3) and rendered.dtype == np.uint8
    assert np.abs(rendered.astype(int) - expected.astype(int)).max() <= 1


@torch.no_grad()
def test_batched_render_with_stitching_and_paste_back(astronaut, small_face, reduced_networks):
    renderer = render.LivePortraitRenderer(reduced_networks, astronaut, face=small_face, batch_size=2)
    motion = driving_motion(3, seed=1)
    frames = renderer.render(motion, progress=False)
    assert frames.shape == (3, 512, 512, 3) and frames.dtype == np.uint8
    assert (frames[:, 450:] == astronaut[450:]).all()  # below the face crop the frame is the source

    # Batching does not change a frame; stitching moves the keypoints as S says.
    single = renderer.render(motion.slice(2, 3), progress=False)
    assert np.abs(single[0].astype(int) - frames[2].astype(int)).max() <= 1
    x_d = renderer.driving_keypoints(motion)
    delta = reduced_networks.stitching(torch.cat([renderer.x_s.expand(3, -1, -1).reshape(3, -1),
                                                  x_d.reshape(3, -1)], dim=1))
    stitched = render.stitch(reduced_networks.stitching, renderer.x_s, x_d)
    assert torch.allclose(stitched[..., 2], x_d[..., 2] + delta[:, :63].reshape(3, 21, 3)[..., 2])
    assert torch.allclose(stitched[..., :2], x_d[..., :2] + delta[:, :63].reshape(3, 21, 3)[..., :2]
                          + delta[:, None, 63:65])


def test_driving_keypoints_defaults_and_relative_mode(astronaut, small_face, reduced_networks):
    renderer = render.LivePortraitRenderer(reduced_networks, astronaut, face=small_face)
    source = renderer.source_info
    # Only an expression given: pose, scale and t come from the source; the source's own exp gives x_s back.
    same = renderer.driving_keypoints(source.exp.expand(2, -1, -1))
    assert torch.allclose(same, renderer.x_s.expand(2, -1, -1), atol=1e-6)
    # Relative mode: a driving video that never moves reproduces the source keypoints.
    relative = render.LivePortraitRenderer(reduced_networks, astronaut, face=small_face, relative=True)
    still = driving_motion(1, seed=3)
    repeated = render.DrivingMotion(
        exp=still.exp.expand(4, -1, -1), rotation=still.rotations().expand(4, -1, -1),
        scale=still.scale.expand(4, -1), t=still.t.expand(4, -1),
    )
    assert torch.allclose(relative.driving_keypoints(repeated), renderer.x_s.expand(4, -1, -1), atol=1e-5)


def test_driving_motion_inputs():
    exp = np.random.default_rng(0).standard_normal((5, 21, 3)).astype(np.float32)
    e_mouth, e_rest = split_expression(exp, MOUTH_KEYPOINT_INDICES)
    merged = render.DrivingMotion.from_mouth(e_mouth, e_rest)
    assert torch.equal(merged.exp, torch.from_numpy(exp))
    template = MotionTemplate(
        scale=np.ones((5, 1)), R=np.tile(np.eye(3), (5, 1, 1)), exp=exp, t=np.zeros((5, 3))
    )
    assert torch.equal(render.as_driving_motion(template).rotations(), torch.eye(3).expand(5, 3, 3))
    with pytest.raises(ValueError, match=r"exp must have shape T×21×3"):
        render.DrivingMotion(exp=np.zeros((5, 20, 3)))
    with pytest.raises(ValueError, match="pitch, yaw and roll"):
        render.DrivingMotion(exp=exp, pitch=np.zeros(5))
    with pytest.raises(ValueError, match=r"scale must have shape 5×1"):
        render.DrivingMotion(exp=exp, scale=np.ones((4, 1)))


# --------------------------------------------------------------------------------------------------------------
# Fallback renderer
# --------------------------------------------------------------------------------------------------------------


def test_fallback_opens_the_mouth_when_the_mouth_keypoints_say_so(astronaut, source_face, caplog):
    with caplog.at_level(logging.WARNING, logger="mmflow_motion_liveportrait.render"):
        renderer = render.make_renderer(astronaut)
    assert isinstance(renderer, render.LandmarkFallbackRenderer)
    assert "landmark fallback renderer" in caplog.text

    generator = np.random.default_rng(7)
    steps = np.arange(24)
    opening = np.clip(0.5 + 0.45 * np.sin(steps / 2.3) + 0.1 * generator.standard_normal(24), 0, 1)
    exp = render.expression_for_opening(opening)
    exp[:, [i for i in range(21) if i != render.MOUTH_OPEN_KEYPOINT]] += 0.01 * generator.standard_normal((24, 20, 3))
    assert np.allclose(renderer.openings(exp), opening, atol=1e-5)

    frames = renderer.render(exp, progress=False)
    assert frames.shape == (24, *astronaut.shape) and frames.dtype == np.uint8
    # Measured as the lip-sync figure is: dlib's inner-lip gap on the rendered frames.
    measured = extract.mouth_opening_from_landmarks(extract.track_landmarks(frames))
    assert np.corrcoef(measured, opening)[0, 1] > 0.9
    assert measured[opening.argmax()] > measured[opening.argmin()] + 0.1
    assert (frames[:, :40] == astronaut[:40]).all()  # only the face is pasted back


def test_fallback_closed_mouth_is_the_source(astronaut, source_face):
    renderer = render.LandmarkFallbackRenderer(astronaut, face=source_face)
    frame = renderer.render_openings([0.0], progress=False)[0]
    assert np.abs(frame.astype(int) - astronaut.astype(int)).mean() < 0.5


def test_half_precision_on_cpu_is_a_clear_error(astronaut, small_face, reduced_networks):
    with pytest.raises(ValueError, match="not supported on CPU.*float32"):
        render.LivePortraitRenderer(reduced_networks, astronaut, face=small_face, dtype=torch.bfloat16)


@torch.no_grad()
def test_one_frame_equals_the_reference_networks_chain(astronaut, small_face):
    """The same frame through the original LivePortrait modules (mimic-head): random reference weights are
    loaded into our networks (spectral-norm keys included), then both chains render the same driving frame."""
    lp = pytest.importorskip("lp_reference")
    reduced, official = lp.REDUCED_CONFIGS, lp.official_configs()
    ref_f = lp.randomize_(lp.AppearanceFeatureExtractor(**reduced["appearance_feature_extractor_params"]), 1)
    ref_m = lp.randomize_(lp.MotionExtractor(**official["motion_extractor_params"]), 2)
    ref_w = lp.randomize_(lp.WarpingNetwork(**reduced["warping_module_params"]), 3)
    ref_g = lp.randomize_(lp.SPADEDecoder(**reduced["spade_generator_params"]), 4)
    ref_m.detector.fc_scale.bias.fill_(1.5)  # a plausible keypoint scale
    ours = render.LivePortraitNetworks(
        appearance_feature_extractor=networks.AppearanceFeatureExtractor(**REDUCED_F),
        motion_extractor=networks.MotionExtractor(),
        warping_module=networks.WarpingNetwork(**REDUCED_W),
        spade_generator=networks.SPADEDecoder(**REDUCED_G),
        stitching=networks.StitchingRetargetingNetwork.from_official_config("stitching"),
    )
    for mine, ref in ((ours.appearance_feature_extractor, ref_f), (ours.motion_extractor, ref_m),
                      (ours.warping_module, ref_w), (ours.spade_generator, ref_g)):
        mine.load_state_dict(ref.state_dict(), strict=True)
        mine.eval()

    renderer = render.LivePortraitRenderer(ours, astronaut, face=small_face, paste=False, use_stitching=False)
    motion = driving_motion(1, seed=3)
    rendered = renderer.render(motion, progress=False)

    image = small_face.tensor()
    out = ref_m(image)
    degrees = [lp.camera.headpose_pred_to_degree(out[k]) for k in ("pitch", "yaw", "roll")]
    kp, exp = out["kp"].view(1, 21, 3), out["exp"].view(1, 21, 3)
    t_s = out["t"].clone()
    t_s[:, 2] = 0  # LivePortrait drops the depth translation
    x_s = out["scale"][..., None] * (kp @ lp.camera.get_rotation_matrix(*degrees) + exp) + t_s[:, None, :]
    pose_d = [torch.as_tensor(v, dtype=torch.float32) for v in (motion.pitch, motion.yaw, motion.roll)]
    scale_d, t_d, exp_d = (torch.as_tensor(v, dtype=torch.float32) for v in (motion.scale, motion.t, motion.exp))
    x_d = scale_d[..., None] * (kp @ lp.camera.get_rotation_matrix(*pose_d) + exp_d) + t_d[:, None, :]
    warped = ref_w(ref_f(image), kp_driving=x_d, kp_source=x_s)
    expected = face.to_uint8(ref_g(warped["out"]))
    assert expected.std() > 5  # a real image, not a saturated one that any chain would match
    assert np.abs(rendered.astype(int) - expected.astype(int)).max() <= 1


@torch.no_grad()
def test_liveportrait_renderer_plumbing_for_the_idle_face_and_size(astronaut, reduced_networks):
    """With weights the same motion reaches W: the idle face's blink lowers the eyelid keypoints of x_d, and
    ``size`` sets the pasted frame's size. Random reduced weights: this proves the plumbing, not the look."""
    from mmflow_motion_liveportrait.expression_layout import BLINK, amount
    from mmflow_motion_liveportrait.idle import idle_motion
    from mmflow_motion_liveportrait.plugin import MOTION

    config = face.CropConfig(size=128, warp_size=256)
    renderer = render.LivePortraitRenderer(reduced_networks, astronaut, crop_config=config, size=192)
    exp = idle_motion(40, seed=3, frame_rate=MOTION.frame_rate)
    closure = amount(exp, BLINK)
    x_d = renderer.driving_keypoints(exp)
    lowered = (x_d[:, 11, 1] - x_d[0, 11, 1]).numpy()
    assert np.corrcoef(lowered, closure)[0, 1] > 0.99  # the eyelid keypoint follows the closure
    frames = renderer.render(exp[:2], progress=False)
    assert frames.shape == (2, 192, 192, 3)
