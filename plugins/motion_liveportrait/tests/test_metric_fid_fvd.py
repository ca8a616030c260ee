"""FID and FVD: the evaluator networks load their official weight layouts strictly, the Fréchet maths, the metrics.

Weights are random tensors saved under the official files' key names and shapes (pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``; the Kinetics-400 I3D as VideoGPT/TATS's ``i3d_pretrained_400.pt`` and
piergiaj's ``rgb_imagenet.pt`` store it); the anchors below are
facts about those files (names, shapes, counts), not read from the networks under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmflow_motion_liveportrait.metrics import fid as fid_module
from mmflow_motion_liveportrait.metrics import frechet as frechet_module
from mmflow_motion_liveportrait.metrics import fvd as fvd_module
from mmflow_motion_liveportrait.metrics.evaluator_weights import EvaluatorWeightsError, load_official_weights
from mmflow_motion_liveportrait.metrics.fid import InceptionFeatures, fid_metric, sample_frames
from mmflow_motion_liveportrait.metrics.frechet import FrechetMetric, feature_statistics, frechet_distance
from mmflow_motion_liveportrait.metrics.fvd import clip_starts, fvd_metric, i3d_input
from mmflow_motion_liveportrait.metrics.i3d import InceptionI3d
from mmflow_motion_liveportrait.metrics.inception import FIDInceptionV3
from mmflow_motion_liveportrait.video import write_video

from mmflow.codecs import InputError
from mmflow.evaluation import Metric, Sample

# name -> shape of some tensors of the official files, and their sizes (keys without num_batches_tracked; values)
INCEPTION_ANCHORS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
INCEPTION_KEYS, INCEPTION_BATCH_NORMS, INCEPTION_VALUES = 472, 94, 23_885_392  # 95.5 MB of float32
I3D_ANCHORS = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_2c_3x3.bn.running_mean": (192,),
    "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
    "Mixed_4f.b2b.bn.bias": (128,),
    "Mixed_5c.b3b.conv3d.weight": (128, 832, 1, 1, 1),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}
I3D_KEYS, I3D_BATCH_NORMS = 287, 57


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The networks run on one thread: on a shared 2-core machine two OpenMP threads wait on each other (10× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_official_state(network: torch.nn.Module, seed: int, counters: bool = True) -> dict[str, torch.Tensor]:
    """Random tensors under the network's names (positive batch-norm scales and variances, so outputs are finite)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in network.state_dict().items():
        if key.endswith("num_batches_tracked"):
            if counters:
                state[key] = torch.tensor(0)
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = 0.75 + 0.5 * torch.rand(value.shape, generator=generator)
        else:
            state[key] = 0.05 * torch.randn(value.shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(random_official_state(FIDInceptionV3(), seed=1), path)
    return path


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    """As ``i3d_pretrained_400.pt`` (converted from TF-Hub): no batch-norm counters, batch-norm scales all 1."""
    path = tmp_path_factory.mktemp("fvd") / "i3d_pretrained_400.pt"
    state = random_official_state(InceptionI3d(), seed=2, counters=False)
    state.update({k: torch.ones_like(v) for k, v in state.items() if k.endswith("bn.weight")})
    torch.save(state, path)
    return path


# ------------------------------------------------------------------------------------------------------------
# The official layouts
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("network, anchors, keys, norms", [
    (FIDInceptionV3, INCEPTION_ANCHORS, INCEPTION_KEYS, INCEPTION_BATCH_NORMS),
    (InceptionI3d, I3D_ANCHORS, I3D_KEYS, I3D_BATCH_NORMS),
])
def test_networks_have_the_official_key_layout(network, anchors, keys, norms):
    state = network().state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(state) - len(counters) == keys and len(counters) == norms
    assert {k: tuple(state[k].shape) for k in anchors} == anchors


def test_inception_value_count_is_the_official_files():
    state = FIDInceptionV3().state_dict()
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == INCEPTION_VALUES


def test_fid_loads_official_weights_unchanged_and_runs(inception_file, tmp_path, monkeypatch):
    monkeypatch.setattr(fid_module, "FID_INPUT_SIZE", 75)  # 299 works the same, only slower
    metric = fid_metric({"weights": str(inception_file), "device": "cpu"}, tmp_path)
    assert isinstance(metric, Metric)
    model = metric.extract.model
    saved = torch.load(inception_file, weights_only=True)
    assert set(saved) == set(model.state_dict())
    for key, value in saved.items():
        assert torch.equal(model.state_dict()[key], value), key
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 52, 3), dtype=np.uint8)
    features = metric.extract.images(images)
    assert features.shape == (3, 2048) and np.isfinite(features).all() and features.std() > 0


def test_fvd_loads_official_weights_without_counters_and_runs(i3d_file, tmp_path, monkeypatch):
    monkeypatch.setattr(fvd_module, "I3D_INPUT_SIZE", 32)
    metric = fvd_metric({"weights": str(i3d_file), "device": "cpu"}, tmp_path)
    model = metric.extract.model
    for key, value in torch.load(i3d_file, weights_only=True).items():
        assert torch.equal(model.state_dict()[key], value), key
    clips = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 30, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = model(i3d_input(clips, 32))
    assert logits.shape == (2, 400) and torch.isfinite(logits).all() and logits.std() > 0


# Outputs of the reference code on the seeded random weights and inputs below, computed once with pytorch-fid 0.3.0
# on torchvision 0.29.1 (InceptionV3([3], resize_input=False)) and piergiaj/pytorch-i3d@05783d1 (its end points up
# to Mixed_5c); both matched the networks here exactly (max abs difference 0.0), also at 299² and 16×224².
REFERENCE_INCEPTION = {"sum": 511.5333557128906, "first": [0.17393819987773895, 0.0, 0.0, 0.5807156562805176],
                       "last": [0.0, 0.5018220543861389, 0.48710858821868896, 0.19607046246528625]}
REFERENCE_I3D_TRUNK = {"sum": 742.1296997070312, "first": [0.0, 0.0, 1.0837148427963257, 2.223383665084839],
                       "last": [0.5564441680908203, 0.5564441680908203, 0.26797226071357727, 0.26797226071357727]}


def _check_reference(output: torch.Tensor, reference: dict) -> None:
    flat = output.flatten()
    assert flat.sum().item() == pytest.approx(reference["sum"], rel=1e-5)
    assert flat[:4].tolist() == pytest.approx(reference["first"], rel=1e-5, abs=1e-6)
    assert flat[-4:].tolist() == pytest.approx(reference["last"], rel=1e-5, abs=1e-6)


def test_inception_matches_pytorch_fid():
    model = FIDInceptionV3(input_size=75).eval()
    model.load_state_dict(random_official_state(model, seed=1))
    with torch.no_grad():
        output = model(torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(7)))
    assert output.shape == (2, 2048)
    _check_reference(output, REFERENCE_INCEPTION)


def test_i3d_matches_piergiaj_pytorch_i3d():
    model = InceptionI3d().eval()
    model.load_state_dict(random_official_state(model, seed=2))
    with torch.no_grad():
        output = model.trunk(torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(8)) * 2 - 1)
    assert output.shape == (1, 1024, 2, 1, 1)
    _check_reference(output, REFERENCE_I3D_TRUNK)


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "not_a_state_dict"])
def test_a_file_that_is_not_the_official_layout_is_refused(tmp_path, change):
    state = random_official_state(InceptionI3d(), seed=3)
    if change == "missing":
        del state["Mixed_4c.b1b.bn.running_mean"]
    elif change == "extra":
        state["AuxLogits.fc.weight"] = torch.zeros(3)
    elif change == "shape":
        state["logits.conv3d.bias"] = torch.zeros(401)
    else:
        state = {"state_dict": state}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    with pytest.raises(EvaluatorWeightsError) as error:
        load_official_weights(InceptionI3d, path, "Kinetics-400 I3D")
    expected = {"missing": "Mixed_4c.b1b.bn.running_mean", "extra": "AuxLogits.fc.weight",
                "shape": "logits.conv3d.bias (401,) != (400,)", "not_a_state_dict": "plain state dict"}[change]
    assert expected in str(error.value)


@pytest.mark.parametrize("factory, option, file_name", [
    (fid_metric, "fid.weights", "pt_inception-2015-12-05-6726825d.pth"),
    (fvd_metric, "fvd.weights", "i3d_pretrained_400.pt"),
])
def test_missing_weights_name_the_option_and_the_file(factory, option, file_name, tmp_path):
    with pytest.raises(InputError, match=rf"needs --metric-option {option}=PATH\. Give the path of {file_name}"):
        factory({}, tmp_path)
    with pytest.raises(InputError, match=rf"--metric-option {option}=.*absent.pt: no such file.*{file_name}"):
        factory({"weights": str(tmp_path / "absent.pt")}, tmp_path)
    with pytest.raises(InputError, match=rf"--metric-option {option}=.*: not a file.*{file_name}"):
        factory({"weights": str(tmp_path)}, tmp_path)


def test_bad_options_are_named(inception_file, tmp_path):
    with pytest.raises(InputError, match="--metric-option fid.frames=some: expected a whole number ≥ 0"):
        fid_metric({"weights": str(inception_file), "frames": "some"}, tmp_path)
    with pytest.raises(InputError, match="--metric-option fid.batch=0: expected a whole number ≥ 1"):
        fid_metric({"weights": str(inception_file), "batch": "0"}, tmp_path)
    # The common refusal of unknown keys (mmflow.evaluation.options.check_options): the metric, the unknown key
    # and every key it takes.
    with pytest.raises(InputError, match=r"metric 'fvd' has no option\(s\) \['clip'\].*its options are: "
                                         r"weights: .*; frames: .*; clips: .*; batch: .*; device: "):
        fvd_metric({"clip": "2"}, tmp_path)


def test_options_reach_the_factories_through_mmflow_evaluate_parsing(inception_file, tmp_path):
    from mmflow.evaluation.runner import parse_metric_options
    from mmflow.plugins import get_registry

    options = parse_metric_options([f"fid.weights={inception_file}", "fid.frames=3", "fid.device=cpu"])
    metric = get_registry().metric("fid")(options["fid"], tmp_path)
    assert metric.extract.frames == 3 and metric.extract.device == torch.device("cpu")


# ------------------------------------------------------------------------------------------------------------
# Preprocessing and sampling
# ------------------------------------------------------------------------------------------------------------


def test_inception_sees_frames_in_0_1_and_i3d_in_minus_1_1():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return torch.zeros(len(x), 2048)

    frames = np.zeros((2, 4, 6, 3), dtype=np.uint8)
    frames[1] = 255
    InceptionFeatures(Probe(), frames=0, batch=50, device=torch.device("cpu")).images(frames)
    assert seen[0].shape == (2, 3, 4, 6) and seen[0][0].max() == 0 and seen[0][1].min() == 1
    clip = np.zeros((1, 2, 5, 7, 3), dtype=np.uint8)
    clip[0, 1] = 255
    x = i3d_input(clip, 8)
    assert x.shape == (1, 3, 2, 8, 8)
    assert torch.all(x[:, :, 0] == -1) and torch.all(x[:, :, 1] == 1)


def test_frame_and_clip_sampling():
    assert sample_frames(10, 0).tolist() == list(range(10))
    assert sample_frames(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_frames(3, 5).tolist() == [0, 1, 2]
    assert clip_starts(40, 16, 0).tolist() == [0, 16]
    assert clip_starts(40, 16, 3).tolist() == [0, 12, 24]
    assert clip_starts(15, 16, 0).tolist() == []


# ------------------------------------------------------------------------------------------------------------
# The Fréchet distance
# ------------------------------------------------------------------------------------------------------------


def _sqrtm_psd(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _random_covariance(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_identical_sets_are_at_distance_zero():
    features = np.random.default_rng(0).normal(size=(200, 16))
    stats = feature_statistics(features)
    assert abs(frechet_distance(*stats, *stats)) < 1e-6


def test_two_gaussians_match_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = _random_covariance(rng, 6), _random_covariance(rng, 6)
    root = _sqrtm_psd(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * _sqrtm_psd(root @ s2 @ root))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # 1-D: (m1 - m2)² + (σ1 - σ2)²
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == (
        pytest.approx(9 + 1))


def test_distance_is_translation_invariant_and_a_shift_adds_its_square():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 8)), rng.normal(0.5, 2.0, size=(300, 8))
    shift = rng.normal(size=8) * 10
    base = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert frechet_distance(*feature_statistics(a + shift), *feature_statistics(b + shift)) == pytest.approx(
        base, rel=1e-9)
    assert frechet_distance(*feature_statistics(a), *feature_statistics(a + shift)) == pytest.approx(
        np.sum(shift ** 2), rel=1e-9)


def test_singular_covariances_take_the_eps_offset():
    rng = np.random.default_rng(3)
    few = rng.normal(size=(3, 10))  # rank 2 covariance in 10-D
    distance = frechet_distance(*feature_statistics(few), *feature_statistics(few + 1))
    assert np.isfinite(distance) and distance == pytest.approx(10.0, abs=1e-2)


def test_covariance_normalisation():
    features = np.random.default_rng(4).normal(size=(5, 3))
    assert np.allclose(feature_statistics(features, ddof=0)[1] * 5 / 4, feature_statistics(features)[1])
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(features[:1])


# ------------------------------------------------------------------------------------------------------------
# The set-level metric: cached features, shared references, resume
# ------------------------------------------------------------------------------------------------------------


class CountingFeatures:
    """Features of a file: a fixed random projection of its bytes' histogram, counting calls per file."""

    def __init__(self):
        self.calls = []

    def __call__(self, path):
        self.calls.append(path.name)
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        rng = np.random.default_rng(int(data.sum()))
        return rng.normal(size=(4, 3)) + data.mean()


def _files(tmp_path, names):
    paths = {}
    for index, name in enumerate(names):
        paths[name] = tmp_path / f"{name}.bin"
        paths[name].write_bytes(bytes([index + 1]) * (10 + index))
    return paths


def test_set_metric_caches_features_and_counts_a_shared_reference_once(tmp_path, monkeypatch):
    paths = _files(tmp_path, ["g1", "g2", "g3", "ref"])
    samples = [Sample(id=n, files={"video": paths[n]}, reference={"video": paths["ref"]}) for n in ("g1", "g2", "g3")]
    features = CountingFeatures()
    metric = FrechetMetric("fid", tmp_path / "work", features, protocol="p")
    hashed = []
    monkeypatch.setattr(frechet_module, "file_digest", lambda path: hashed.append(path.name) or path.name * 8)
    rows = metric.score(samples[:2]) + metric.score(samples[2:])
    assert sorted(features.calls) == ["g1.bin", "g2.bin", "g3.bin", "ref.bin"]
    assert sorted(hashed) == ["g1.bin", "g2.bin", "g3.bin", "ref.bin"]  # the shared reference is hashed once
    summary = metric.summarise(rows)
    assert list(summary)[0] == "fid" and metric.directions == {"fid": False}
    assert summary["fid_generated_features"] == 12 and summary["fid_reference_features"] == 4
    generated = np.concatenate([features(paths[n]) for n in ("g1", "g2", "g3")])
    expected = frechet_distance(*feature_statistics(generated), *feature_statistics(features(paths["ref"])))
    assert summary["fid"] == pytest.approx(expected, rel=1e-5)

    resumed = CountingFeatures()
    again = FrechetMetric("fid", tmp_path / "work", resumed, protocol="p")
    assert again.score(samples) == rows and resumed.calls == []
    other_protocol = FrechetMetric("fid", tmp_path / "work", resumed, protocol="q")
    other_protocol.score(samples[:1])
    assert resumed.calls == ["g1.bin", "ref.bin"]


def test_set_metric_errors_name_the_problem(tmp_path):
    paths = _files(tmp_path, ["g", "ref"])
    metric = FrechetMetric("fvd", tmp_path / "work", lambda path: np.zeros((1, 3)), protocol="p", ddof=0)
    with pytest.raises(InputError, match="no reference 'video'"):
        metric.score([Sample(id="a", files={"video": paths["g"]})])
    rows = metric.score([Sample(id="a", files={"video": paths["g"]}, reference={"video": paths["ref"]})])
    with pytest.raises(InputError, match="generated set gave 1 feature vectors"):
        metric.summarise(rows)
    for cached in (tmp_path / "work" / "features").iterdir():
        cached.unlink()
    with pytest.raises(InputError, match="cached features .* are missing"):
        metric.summarise(rows)


def test_fid_and_fvd_end_to_end_on_small_videos(inception_file, i3d_file, tmp_path, monkeypatch):
    monkeypatch.setattr(fid_module, "FID_INPUT_SIZE", 75)
    monkeypatch.setattr(fvd_module, "I3D_INPUT_SIZE", 32)
    rng = np.random.default_rng(5)
    videos = {}
    for name in ("gen_a", "gen_b", "ref_a", "ref_b"):
        frames = rng.integers(0, 256, (18, 32, 48, 3), dtype=np.uint8)
        videos[name] = write_video(tmp_path / f"{name}.mp4", frames, fps=25)
    samples = [Sample(id=k, files={"video": videos[f"gen_{k}"]}, reference={"video": videos[f"ref_{k}"]})
               for k in ("a", "b")]
    mirror = [Sample(id=k, files={"video": videos[f"ref_{k}"]}, reference={"video": videos[f"ref_{k}"]})
              for k in ("a", "b")]
    fid = fid_metric({"weights": str(inception_file), "frames": "5", "device": "cpu"}, tmp_path / "fid")
    fvd = fvd_metric({"weights": str(i3d_file), "clips": "2", "frames": "9", "device": "cpu"},
                     tmp_path / "fvd")
    for metric, per_video, width in ((fid, 5, 2048), (fvd, 2, 400)):
        rows = metric.score(samples)
        assert [row["count"] for row in rows] == [per_video, per_video]
        features = [metric._load(row[key]) for row in rows for key in ("features", "reference_features")]
        assert all(f.shape == (per_video, width) and np.isfinite(f).all() for f in features)
        assert len({f.tobytes() for f in features}) == 4  # four different videos
        assert metric.score(mirror)[0]["features"] == rows[0]["reference_features"]  # the same file, cached once
    # FID's summary is the same code on 2048-d features (a 2048² sqrtm takes minutes on this CPU): FVD's is run
    summary = fvd.summarise(rows)
    assert fvd.directions == {"fvd": False}
    assert summary["fvd"] > 0 and summary["fvd_generated_features"] == summary["fvd_reference_features"] == 4
