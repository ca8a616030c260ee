"""Each re-implemented network equals mimic-head's original LivePortrait module on random weights.

The reference state dict is loaded with ``strict=True``, which proves our parameter names are the official ones.
F, W and G use the reduced configs of environment.md §7 and half-size inputs (all three are fully convolutional;
the full-size chain costs ~10 s/frame on CPU); M and the three MLPs run at full size.
"""

import lp_reference as ref
import pytest
import torch
from mmflow_motion_liveportrait import networks

RTOL = 1e-4


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm() / theirs.norm()).item()


def paired(reference_cls, our_cls, config: dict, seed: int):
    """Randomised reference module and our module carrying the same weights (strict load), both in eval mode."""
    reference = ref.randomize_(reference_cls(**config), seed)
    ours = our_cls(**config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours.eval()


@pytest.fixture(scope="module")
def source_image() -> torch.Tensor:
    return torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_appearance_feature_extractor_matches_reference(source_image):
    config = ref.REDUCED_CONFIGS["appearance_feature_extractor_params"]
    reference, ours = paired(
        ref.AppearanceFeatureExtractor, networks.AppearanceFeatureExtractor, config, seed=1
    )
    image = source_image[:, :, ::2, ::2]  # 128×128 keeps the test fast; same code path
    expected = reference(image)
    result = ours(image)
    assert result.shape == expected.shape == (2, 4, 16, 32, 32)
    assert relative_error(result, expected) < RTOL


@torch.no_grad()
def test_motion_extractor_full_size_matches_reference(source_image):
    config = ref.official_configs()["motion_extractor_params"]
    reference, ours = paired(ref.MotionExtractor, networks.MotionExtractor, config, seed=2)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    expected = reference(source_image)
    result = ours(source_image)
    assert set(result.keys()) == set(expected) == {"pitch", "yaw", "roll", "t", "exp", "scale", "kp"}
    for key, value in expected.items():
        assert result[key].shape == value.shape, key
        assert relative_error(result[key], value) < RTOL, key
    assert result.pitch.shape == (2, 66) and result.kp.shape == (2, 63)


@torch.no_grad()
def test_warping_module_matches_reference():
    config = ref.REDUCED_CONFIGS["warping_module_params"]
    reference, ours = paired(ref.WarpingNetwork, networks.WarpingNetwork, config, seed=3)
    generator = torch.Generator().manual_seed(3)
    feature = torch.randn(2, 4, 16, 32, 32, generator=generator)  # depth must equal reshape_depth
    kp_source = 0.4 * torch.randn(2, 21, 3, generator=generator)
    kp_driving = kp_source + 0.05 * torch.randn(2, 21, 3, generator=generator)
    expected = reference(feature, kp_driving, kp_source)
    result = ours(feature, kp_driving=kp_driving, kp_source=kp_source)
    assert result.out.shape == (2, 32, 32, 32)
    assert result.occlusion_map.shape == (2, 1, 32, 32)
    assert result.deformation.shape == (2, 16, 32, 32, 3)
    for key in ("out", "occlusion_map", "deformation"):
        assert relative_error(result[key], expected[key]) < RTOL, key


@torch.no_grad()
def test_spade_generator_matches_reference_and_folds_spectral_norm():
    config = ref.REDUCED_CONFIGS["spade_generator_params"]
    reference, ours = paired(ref.SPADEDecoder, networks.SPADEDecoder, config, seed=4)
    assert not any(key.endswith(("weight_orig", "weight_u", "weight_v")) for key in ours.state_dict())
    feature = torch.randn(1, 32, 16, 16, generator=torch.Generator().manual_seed(4))
    expected = reference(feature)
    result = ours(feature)
    assert result.shape == (1, 3, 128, 128)  # two 2× upsamplings, then a 2× pixel shuffle
    assert relative_error(result, expected) < RTOL


@pytest.mark.parametrize("kind", ["stitching", "lip", "eye"])
@torch.no_grad()
def test_stitching_retargeting_full_size_matches_reference(kind):
    config = ref.official_configs()["stitching_retargeting_module_params"][kind]
    reference = ref.randomize_(ref.StitchingRetargetingNetwork(**config), seed=5)
    ours = networks.StitchingRetargetingNetwork.from_official_config(kind)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(4, config["input_size"], generator=torch.Generator().manual_seed(5))
    assert relative_error(ours.eval()(x), reference(x)) < RTOL


def test_constructor_defaults_are_the_official_models_yaml():
    official = ref.official_configs()
    for cls, section in (
        (networks.AppearanceFeatureExtractor, "appearance_feature_extractor_params"),
        (networks.WarpingNetwork, "warping_module_params"),
        (networks.SPADEDecoder, "spade_generator_params"),
    ):
        config = cls().config
        for key, value in official[section].items():
            assert config[key] == value, f"{cls.__name__}.{key}"
    motion = networks.MotionExtractor().config
    assert motion["num_kp"] == 21 and motion["backbone"] == "convnextv2_tiny" and motion["num_bins"] == 66
    for kind, config in official["stitching_retargeting_module_params"].items():
        ours = networks.StitchingRetargetingNetwork.from_official_config(kind).config
        assert (
            ours["input_size"] == config["input_size"]
            and list(ours["hidden_sizes"]) == config["hidden_sizes"]
        )


@torch.no_grad()
def test_diffusers_save_and_reload_keeps_weights_and_config(tmp_path):
    config = ref.REDUCED_CONFIGS["warping_module_params"]
    _, ours = paired(ref.WarpingNetwork, networks.WarpingNetwork, config, seed=6)
    ours.save_pretrained(tmp_path / "warping")
    reloaded, info = networks.WarpingNetwork.from_pretrained(tmp_path / "warping", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert reloaded.config.dense_motion_params == config["dense_motion_params"]
    for key, value in ours.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_bad_configs_are_rejected_with_clear_errors():
    with pytest.raises(ValueError, match="reshape_channel"):
        networks.AppearanceFeatureExtractor(reshape_channel=8, reshape_depth=16, max_features=512)
    with pytest.raises(ValueError, match="backbone"):
        networks.MotionExtractor(backbone="convnextv2_huge")
    with pytest.raises(ValueError, match="dense_motion_params"):
        networks.WarpingNetwork(dense_motion_params={"block_expansion": 32})
    with pytest.raises(ValueError, match="stitching/retargeting kind"):
        networks.StitchingRetargetingNetwork.from_official_config("mouth")
