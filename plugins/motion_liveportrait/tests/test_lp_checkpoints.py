"""Official-layout checkpoints: full-size reference modules saved like LivePortrait's pretrained_weights tree load
with our loader, no renaming; damaged or mismatched files fail with messages naming the file and the keys."""

import shutil

import pytest
import torch
from mmflow_motion_liveportrait.checkpoints import (
    OFFICIAL_CHECKPOINTS,
    CheckpointError,
    LivePortraitWeights,
    load_official_weights,
)
from mmflow_motion_liveportrait.networks import AppearanceFeatureExtractor, SPADEDecoder

# Network kind → reference class name in lp_reference.
BASE_MODELS = {
    "appearance_feature_extractor": "AppearanceFeatureExtractor",
    "motion_extractor": "MotionExtractor",
    "warping_module": "WarpingNetwork",
    "spade_generator": "SPADEDecoder",
}
# Official sub-state-dict names inside retargeting_models/stitching_retargeting_module.pth.
RETARGETING_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


@torch.no_grad()
def effective_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The reference state dict with each legacy spectral-norm triple replaced by the weight the reference
    itself computes in eval mode (its forward pre-hook sets ``conv.weight``)."""
    state = dict(module.state_dict())
    for name, conv in module.named_modules():
        if hasattr(conv, "weight_orig"):
            conv(
                torch.zeros(1, conv.in_channels, 1, 1)
            )  # runs torch's spectral-norm hook, no power iteration
            for suffix in ("weight_orig", "weight_u", "weight_v"):
                del state[f"{name}.{suffix}"]
            state[f"{name}.weight"] = conv.weight.detach().clone()
    return state


@pytest.fixture(scope="module")
def official_tree(tmp_path_factory):
    """``pretrained_weights/liveportrait/`` with random full-size weights in the official file layout."""
    import lp_reference as ref  # skips the tests that need this tree when mimic-head is missing

    root = tmp_path_factory.mktemp("pretrained_weights") / "liveportrait"
    (root / "base_models").mkdir(parents=True)
    (root / "retargeting_models").mkdir()
    configs = ref.official_configs()
    references = {}
    torch.manual_seed(0)
    for kind, class_name in BASE_MODELS.items():
        # torch's default init is random enough to tell tensors apart; randomize_ at full size would cost seconds.
        module = getattr(ref, class_name)(**configs[f"{kind}_params"]).eval()
        torch.save(module.state_dict(), root / OFFICIAL_CHECKPOINTS[kind].relative_path)
        references[kind] = module
    retargeting = {}
    for seed, (kind, file_key) in enumerate(RETARGETING_KEYS.items(), start=10):
        module = ref.randomize_(
            ref.StitchingRetargetingNetwork(**configs["stitching_retargeting_module_params"][kind]), seed
        )
        retargeting[file_key] = {f"module.{k}": v for k, v in module.state_dict().items()}  # saved from DDP
        references[kind] = module
    torch.save(retargeting, root / "retargeting_models" / "stitching_retargeting_module.pth")
    return root, references


@torch.no_grad()
def test_official_tree_loads_without_renaming(official_tree):
    root, references = official_tree
    weights = LivePortraitWeights(root.parent)  # the pretrained_weights/ folder above works too
    assert weights.missing() == []
    for kind, reference in references.items():
        model = weights.load(kind)
        assert not model.training
        expected = effective_weights(reference)
        ours = model.state_dict()
        assert ours.keys() == expected.keys(), kind
        folded = {key for key in expected if key not in reference.state_dict()}  # spectral-norm weights
        for key, value in expected.items():
            if key in folded:  # same formula, possibly a different summation order
                assert torch.allclose(ours[key], value, rtol=1e-6, atol=0), f"{kind}: {key}"
            else:
                assert torch.equal(ours[key], value), f"{kind}: {key}"
        assert (kind == "spade_generator") == bool(folded)
        if kind in RETARGETING_KEYS:  # cheap end-to-end check at full size
            x = torch.randn(3, reference.mlp[0].in_features, generator=torch.Generator().manual_seed(0))
            assert torch.allclose(model(x), reference.eval()(x), rtol=1e-5, atol=1e-6)


def test_spade_decoder_takes_the_official_file_directly(official_tree):
    root, _ = official_tree
    state = torch.load(root / "base_models" / "spade_generator.pth", map_location="cpu", weights_only=True)
    assert "G_middle_0.conv_0.weight_orig" in state
    SPADEDecoder().load_state_dict(state, strict=True)


def test_missing_file_names_the_expected_file_and_where_to_get_it(tmp_path):
    weights = LivePortraitWeights(tmp_path)
    assert len(weights.missing()) == 5
    with pytest.raises(FileNotFoundError) as error:
        weights.warping_module()
    assert "base_models/warping_module.pth" in str(error.value)
    assert "huggingface.co/KwaiVGI/LivePortrait" in str(error.value)


def test_truncated_file_fails_naming_the_file(official_tree, tmp_path):
    root, _ = official_tree
    path = tmp_path / "appearance_feature_extractor.pth"
    data = (root / "base_models" / "appearance_feature_extractor.pth").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="appearance_feature_extractor.pth.*truncated"):
        load_official_weights(AppearanceFeatureExtractor(), path, "appearance_feature_extractor")


def test_mismatched_keys_are_listed_with_both_shapes(official_tree, tmp_path):
    root, _ = official_tree
    state = torch.load(root / "base_models" / "appearance_feature_extractor.pth", weights_only=True)
    del state["second.bias"]
    state["extra.weight"] = torch.zeros(2, 5)
    state["first.conv.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "appearance_feature_extractor.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_official_weights(AppearanceFeatureExtractor(), path, "appearance_feature_extractor")
    message = str(error.value)
    assert str(path) in message
    assert "second.bias: model (512,), not in file" in message
    assert "extra.weight: file (2, 5), not in model" in message
    assert "first.conv.weight: file (64, 3, 5, 5) vs model (64, 3, 3, 3)" in message


def test_retargeting_file_without_a_sub_state_dict_is_reported(official_tree, tmp_path):
    root, _ = official_tree
    tree = tmp_path / "liveportrait"
    (tree / "retargeting_models").mkdir(parents=True)
    path = tree / "retargeting_models" / "stitching_retargeting_module.pth"
    shutil.copyfile(root / "retargeting_models" / "stitching_retargeting_module.pth", path)
    content = torch.load(path, weights_only=True)
    del content["retarget_eye"]
    torch.save(content, path)
    weights = LivePortraitWeights(tree)
    weights.lip_retargeting()  # the other two still load
    with pytest.raises(
        CheckpointError, match="retarget_eye.*found \\['retarget_mouth', 'retarget_shoulder'\\]"
    ):
        weights.eye_retargeting()


def test_unknown_kind_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unknown LivePortrait network kind 'mouth'"):
        LivePortraitWeights(tmp_path).load("mouth")


def test_ddp_prefixed_base_model_file_loads(official_tree, tmp_path):
    root, references = official_tree
    state = torch.load(root / "base_models" / "appearance_feature_extractor.pth", weights_only=True)
    path = tmp_path / "appearance_feature_extractor.pth"
    torch.save({f"module.{key}": value for key, value in state.items()}, path)
    model = load_official_weights(AppearanceFeatureExtractor(), path, "appearance_feature_extractor")
    assert torch.equal(model.second.weight, references["appearance_feature_extractor"].second.weight)
