"""Length bucketing as a saved model setting (issue 19, item 2): the JSON forms round-trip, a model keeps its
setting through save_pretrained/from_pretrained, a training config sets it (and refuses a bad one by its key
path), and ``mmflow generate --length-buckets`` overrides it for one run without touching the model folder."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mmflow import MMDiT
from mmflow.buckets import LengthBuckets, check_config, model_setting
from mmflow.testing import tiny_batches, tiny_config, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

RATES = {"fast": Fraction(50), "slow": Fraction(15)}  # tiny_config's streams
TOY = Path(__file__).resolve().parents[1] / "examples/toy_gesture/mmflow_toy_gesture/configs/toy.yaml"

SAVED_FORMS = [
    "time_aligned",
    {"time_aligned": True, "growth": 1.5},
    {"time_aligned": True, "min_seconds": 0.5, "multiple_seconds": 0.2},
    {"min_length": 64, "growth": 1.25, "multiple": 16, "joint": False},
    {"min_length": 8, "growth": 1.5, "multiple": 8, "joint": True,
     "streams": {"slow": {"min_length": 4, "growth": 1.5, "multiple": 2}}},
    {"min_length": 93.75, "growth": 1.25, "multiple": 15, "joint": True,
     "streams": {"fast": {"min_length": 93.75, "growth": 1.25, "multiple": 15},
                 "slow": {"min_length": 25.0, "growth": 1.25, "multiple": 4}}},
]


@pytest.mark.parametrize("saved", SAVED_FORMS, ids=range(len(SAVED_FORMS)))
def test_every_saved_form_reads_back_to_itself_through_json(saved):
    buckets = LengthBuckets.from_config(saved, RATES)
    again = json.loads(json.dumps(buckets.to_config()))
    assert again == saved
    assert LengthBuckets.from_config(again, RATES) == buckets
    explicit = json.loads(json.dumps(buckets.to_config(explicit=True)))
    assert LengthBuckets.from_config(explicit, RATES) == buckets and "time_aligned" not in explicit


def test_time_aligned_is_derived_from_the_given_rates_and_off_is_none():
    assert LengthBuckets.from_config("time_aligned", RATES) == LengthBuckets.time_aligned(RATES)
    assert LengthBuckets.from_config({"time_aligned": True, "growth": 1.5}, RATES) == LengthBuckets.time_aligned(
        RATES, growth=1.5)
    assert LengthBuckets.from_config(None) is None and LengthBuckets.from_config("off") is None
    with pytest.raises(ValueError, match="derives its ladders from the model's stream rates"):
        LengthBuckets.from_config("time_aligned")


@pytest.mark.parametrize(("value", "message"), [
    ({"growth": 1}, r"length_buckets\.growth: must be a number > 1, got 1"),
    ({"min_length": -3}, r"length_buckets\.min_length: must be a number > 0"),
    ({"multiple": 2.5}, r"length_buckets\.multiple: must be an integer > 0, got 2.5"),
    ({"multiple": True}, r"length_buckets\.multiple: must be an integer"),
    ({"min_lenght": 64}, r"length_buckets: unknown key\(s\) \['min_lenght'\]; allowed: \['min_length'"),
    ({"joint": "yes"}, r"length_buckets\.joint: must be true or false"),
    ({"streams": {"slow": {"growth": 0.5}}}, r"length_buckets\.streams\.slow\.growth: must be a number > 1"),
    ({"streams": {"slow": {"joint": True}}}, r"length_buckets\.streams\.slow: unknown key\(s\) \['joint'\]"),
    ({"streams": ["slow"]}, r"length_buckets\.streams: expected a mapping of stream name"),
    ({"time_aligned": False}, r"length_buckets\.time_aligned: must be true"),
    ({"time_aligned": True, "min_length": 8}, r"length_buckets: unknown key\(s\) \['min_length'\]"),
    ({"time_aligned": True, "growth": 0.9}, r"length_buckets\.growth: must be a number > 1"),
    ("sometimes", r"length_buckets: expected null or 'off', 'time_aligned'"),
    (1.25, r"length_buckets: expected null"),
])
def test_a_bad_setting_names_the_field_and_the_fix(value, message):
    with pytest.raises(ValueError, match=message):
        check_config(value)
    with pytest.raises(ValueError, match=message):
        MMDiT(**tiny_config(), length_buckets=value)


def test_a_ladder_for_a_stream_the_model_lacks_is_refused_naming_the_streams():
    with pytest.raises(ValueError, match=r"length_buckets\.streams: unknown stream\(s\) \['motion'\]; this model's "
                                         r"streams are \['fast', 'slow'\]"):
        MMDiT(**tiny_config(), length_buckets={"streams": {"motion": {"min_length": 8}}})


def test_the_attribute_and_the_config_stay_one_setting():
    model = tiny_model()
    assert model.length_buckets is None and model.config.length_buckets is None
    model.length_buckets = LengthBuckets.time_aligned(RATES, growth=1.5)  # the model's own rates: the short form
    assert model.config.length_buckets == {"time_aligned": True, "growth": 1.5}
    other = LengthBuckets.time_aligned({"fast": 40, "slow": 15})  # not this model's rates: saved in full
    model.length_buckets = other
    assert model.config.length_buckets == other.to_config(explicit=True)
    assert LengthBuckets.from_config(model.config.length_buckets, RATES) == other
    model.length_buckets = "off"
    assert model.length_buckets is None and model.config.length_buckets is None
    given = MMDiT(**tiny_config(), length_buckets=LengthBuckets(8, 1.5, 8))  # an object given to the constructor
    assert given.config.length_buckets == {"min_length": 8, "growth": 1.5, "multiple": 8, "joint": False}


def test_a_config_without_the_key_loads_as_before(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("length_buckets") is None
    (tmp_path / "config.json").write_text(json.dumps(config))  # as written before the setting existed
    loaded = MMDiT.from_pretrained(tmp_path)
    assert loaded.length_buckets is None


def _velocities(model, seed=3):
    batches = tiny_batches(batch=3, seconds=(1.0, 0.6, 0.9))
    generator = torch.Generator().manual_seed(seed)
    x = {n: torch.randn(b.latent.shape, generator=generator) for n, b in batches.items()}
    views = {"fast": torch.tensor([True, False, True]), "slow": torch.tensor([True, True, False])}
    with torch.no_grad():
        out = model(x, torch.tensor([0.3, 0.7, 0.5]), batches, joint_view=views)
    return {name: out[name][batches[name].valid] for name in out}


@pytest.mark.parametrize("setting", ["time_aligned", {"min_length": 8, "growth": 1.5, "multiple": 8, "joint": False}])
def test_a_saved_model_keeps_its_setting_and_gives_the_unpadded_outputs(tmp_path, setting, monkeypatch):
    model = tiny_model(backend="split")
    want = _velocities(model)
    model.length_buckets = setting
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["length_buckets"] == setting
    loaded = MMDiT.from_pretrained(tmp_path).eval()
    assert loaded.length_buckets == LengthBuckets.from_config(setting, RATES) and loaded.length_buckets is not None
    seen = _spy_attend(monkeypatch)
    got = _velocities(loaded)
    assert seen and all(buckets == loaded.length_buckets for buckets in seen)  # bucketing really ran
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ training


def _toy(tmp_path, **model) -> dict:
    data = yaml.safe_load(TOY.read_text())
    data.update(output_dir=str(tmp_path / "run"), total_steps=8)
    data["model"] = {**data["model"], **model}
    return data


def test_the_training_config_sets_the_models_length_buckets(tmp_path):
    from mmflow.training import TrainingConfig, build_model

    config = TrainingConfig.from_dict(_toy(tmp_path, length_buckets="time_aligned"))
    model = build_model(config.model, config.seed)
    assert model.length_buckets == LengthBuckets.time_aligned(model.stream_rates)
    model.save_pretrained(tmp_path / "saved")  # what the run exports
    fine_tune = TrainingConfig.from_dict({**_toy(tmp_path), "model": {"pretrained": str(tmp_path / "saved")}})
    assert build_model(fine_tune.model).length_buckets == model.length_buckets  # unset: the saved setting stays
    switched = TrainingConfig.from_dict({**_toy(tmp_path), "model": {"pretrained": str(tmp_path / "saved"),
                                                                     "length_buckets": "off"}})
    assert build_model(switched.model).length_buckets is None


@pytest.mark.parametrize(("model", "message"), [
    ({"length_buckets": {"growth": 1.0}}, "model.length_buckets.growth: must be a number > 1"),
    ({"length_buckets": "always"}, "model.length_buckets: expected null or 'off'"),
    ({"config_length_buckets": {"multiple": 0}}, "model.config.length_buckets.multiple: must be an integer > 0"),
    ({"length_buckets": "off", "config_length_buckets": "time_aligned"}, "give length_buckets once"),
])
def test_the_training_config_refuses_a_bad_setting_by_its_key_path(tmp_path, model, message):
    from mmflow.training import ConfigError, TrainingConfig

    data = _toy(tmp_path, **{k: v for k, v in model.items() if k == "length_buckets"})
    if "config_length_buckets" in model:
        data["model"]["config"] = {**data["model"]["config"], "length_buckets": model["config_length_buckets"]}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TrainingConfig.from_dict(data)


def test_a_ladder_for_a_stream_the_model_lacks_is_refused_when_the_model_is_built(tmp_path):
    from mmflow.training import ConfigError, TrainingConfig, build_model

    config = TrainingConfig.from_dict(_toy(tmp_path, length_buckets={"streams": {"nope": {"min_length": 8}}}))
    with pytest.raises(ConfigError, match=r"model\.length_buckets\.streams: unknown stream\(s\) \['nope'\]"):
        build_model(config.model)


def test_mmflow_train_pretrained_keeps_the_configs_length_buckets():
    import argparse

    from mmflow.training.command import add_arguments, config_overrides

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", "x.yaml", "--pretrained", "saved/model"])
    data = {"model": {"config": {}, "length_buckets": "time_aligned"}}
    assert config_overrides(args, data)["model"] == {"pretrained": "saved/model", "length_buckets": "time_aligned"}


# ------------------------------------------------------------------------------------------------ generate


@pytest.fixture(scope="module")
def tri_folder(tmp_path_factory):
    """The three-stream example's model with seeded random weights, saved as an ``MMFlowPipeline`` folder."""
    tri = pytest.importorskip("mmflow_tri_stream.plugin", reason="install examples/tri_stream (scripts/setup.sh does)")
    from mmflow import FlowMatchingScheduler
    from mmflow.pipeline import MMFlowPipeline
    from mmflow.testing import randomize

    config = yaml.safe_load(Path(tri.config_path()).read_text())["model"]["config"]
    folder = tmp_path_factory.mktemp("tri") / "pipe"
    MMFlowPipeline(randomize(MMDiT(**config)), FlowMatchingScheduler(), max_seconds=4.0).save_pretrained(folder)
    return folder


def _generate(folder, out, *extra):
    from mmflow.generate_command import main

    assert main(["--model", str(folder), "--task", "tri_joint", "--duration", "1.3", "--steps", "2", "--seed", "1",
                 "--out", str(out), *extra]) == 0
    return {path.name: np.load(path) for path in sorted(Path(out).glob("*.npy"))}


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_mmflow_generate_length_buckets_overrides_the_saved_setting_for_one_run(tri_folder, tmp_path, monkeypatch):
    before = _folder_bytes(tri_folder)
    seen = _spy_attend(monkeypatch)
    want = _generate(tri_folder, tmp_path / "plain")
    assert seen and all(buckets is None for buckets in seen)
    seen.clear()
    got = _generate(tri_folder, tmp_path / "bucketed", "--length-buckets", "time_aligned")
    assert seen and all(buckets is not None and buckets.joint for buckets in seen)
    seen.clear()
    ladder = _generate(tri_folder, tmp_path / "ladder", "--length-buckets", '{"min_length": 8, "growth": 1.5}')
    assert seen and all(buckets == LengthBuckets(8, 1.5) for buckets in seen)
    assert _folder_bytes(tri_folder) == before  # the model folder is never modified
    assert want.keys() == got.keys() == ladder.keys() and want
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5)
        np.testing.assert_allclose(ladder[name], want[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize(("value", "message"), [
    ('{"growth": 1}', "--length-buckets.growth: must be a number > 1"),
    ("{growth: 2}", "'{growth: 2}' is not JSON (Expecting property name"),
    ("sometimes", "--length-buckets: expected time_aligned, off, or a JSON ladder"),
    ('"sometimes"', "--length-buckets: expected null or 'off', 'time_aligned'"),
])
def test_mmflow_generate_refuses_a_bad_length_buckets_and_writes_nothing(tri_folder, tmp_path, capsys, value,
                                                                              message):
    with pytest.raises(SystemExit) as exit_:
        _generate(tri_folder, tmp_path / "out", "--length-buckets", value)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_mmflow_generate_refuses_a_ladder_for_a_stream_the_model_lacks(tri_folder, tmp_path):
    with pytest.raises(ValueError, match=r"--length-buckets\.streams: unknown stream\(s\) \['motion'\]"):
        _generate(tri_folder, tmp_path / "out", "--length-buckets", '{"streams": {"motion": {"min_length": 8}}}')


def test_model_setting_keeps_the_short_form_only_where_it_reads_back_the_same():
    buckets, saved = model_setting(LengthBuckets.time_aligned(RATES), RATES)
    assert saved == "time_aligned" and buckets == LengthBuckets.time_aligned(RATES)
    assert model_setting(None, RATES) == (None, None) and model_setting("off", RATES) == (None, None)


def _spy_attend(monkeypatch) -> list:
    """The ``buckets`` argument of every attention call the model makes."""
    import mmflow.transformer as transformer

    seen, attend = [], transformer.attend
    monkeypatch.setattr(transformer, "attend", lambda *args: seen.append(args[-1]) or attend(*args))
    return seen


def test_jamflow_generate_takes_length_buckets_from_the_generic_options(tmp_path, monkeypatch):
    """JAM-Flow's own command line gets the flag from mmflow.generate_command (one home), on the embedded default."""
    pytest.importorskip("espeakng_loader")
    import soundfile
    from mmflow_jamflow.default_model import default_model_path

    from mmflow.cli import main

    before = _folder_bytes(default_model_path())
    seen = _spy_attend(monkeypatch)
    common = ["generate", "--text", "Good morning.", "--seed", "1", "--steps", "2", "--no-video", "--outputs", "wav,npz"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert seen and all(buckets is None for buckets in seen)
    seen.clear()
    assert main([*common, "--length-buckets", "time_aligned", "--out", str(tmp_path / "bucketed")]) == 0
    assert seen and all(buckets is not None and {n for n, _ in buckets.streams} == {"audio", "motion"} for buckets in seen)
    assert _folder_bytes(default_model_path()) == before
    for name in ("plain", "bucketed"):
        assert (tmp_path / name / "sample.npz").is_file()
    np.testing.assert_allclose(np.load(tmp_path / "bucketed" / "sample.npz")["exp"],
                               np.load(tmp_path / "plain" / "sample.npz")["exp"], rtol=0, atol=1e-4)
    wave = {name: soundfile.read(tmp_path / name / "sample.wav", dtype="float32")[0] for name in ("plain", "bucketed")}
    np.testing.assert_allclose(wave["bucketed"], wave["plain"], rtol=0, atol=1e-4)


@pytest.mark.parametrize(("setting", "message"), [
    ("time_aligned", None),
    ({"growth": 0.5}, "model.length_buckets.growth: must be a number > 1"),
])
def test_the_jamflow_recipe_passes_model_length_buckets_to_the_model(tmp_path, monkeypatch, caplog, setting, message):
    """The recipe builds its model from its own ``jamflow`` section; ``model.length_buckets`` reaches it."""
    pytest.importorskip("espeakng_loader")
    import runpy

    import mmflow.training

    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "recipes/configs/jamflow_tiny.yaml").read_text())
    data["model"] = {"length_buckets": setting}
    data["data"]["kwargs"].update(num_clips=2, cache_dir=str(tmp_path / "corpus"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(data))
    built = []

    def build_model(model_config, seed=0):  # the recipe's model, then stop before data and training
        built.append(real_build(model_config, seed))
        raise mmflow.training.ConfigError("stopped by the test after building the model")

    real_build = mmflow.training.build_model
    monkeypatch.setattr(mmflow.training, "build_model", build_model)
    main = runpy.run_path(str(root / "recipes/jamflow.py"))["main"]
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "run")]) == 2
    if message is not None:
        assert message in caplog.text and not built
        return
    assert "stopped by the test" in caplog.text
    (model,) = built
    assert model.length_buckets == LengthBuckets.time_aligned(model.stream_rates)
    assert model.config.length_buckets == "time_aligned"  # saved so with the exported model
