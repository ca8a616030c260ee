"""``mmflow evaluate``'s runner on a tiny fake pipeline and fake metrics: generation, scoring, caching and resume,
option changes, refusal of unmet needs, default metrics, outputs folders, atomic results."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from mmflow import hookimpl
from mmflow.codecs import InputError
from mmflow.evaluation import BenchmarkItem, first_kind
from mmflow.evaluation.command import listing
from mmflow.evaluation.report import markdown_table
from mmflow.evaluation.runner import evaluate, parse_benchmark_options, parse_metric_options, read_outputs
from mmflow.plugins import build_registry


def write_wav(path: Path, level: float, frames: int = 800) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes((np.full(frames, level) * 32767).astype("<i2").tobytes())


def read_level(path: Path) -> float:
    with wave.open(str(path), "rb") as handle:
        return float(np.frombuffer(handle.readframes(handle.getnframes()), "<i2").mean() / 32767)


class FakeOutput:
    def __init__(self, level: float):
        self.level = level

    def save(self, folder: Path, stem: str) -> list[Path]:
        write_wav(Path(folder) / f"{stem}.wav", self.level)
        (Path(folder) / f"{stem}.pkl").write_bytes(b"not read")  # a file of no known kind
        return [Path(folder) / f"{stem}.wav"]


class FakePipeline:
    """Writes one wav whose level is the item's ``level`` input plus seed / 100; fails on ``fail=True`` items."""

    def __init__(self):
        self.calls = []

    def __call__(self, task, seed, progress, level, fail=False, num_inference_steps=None):
        assert task == "say" and progress is False
        if fail:
            raise RuntimeError("generation failed")
        self.calls.append((level, seed, num_inference_steps))
        return FakeOutput(level + seed / 100)


class LevelMetric:
    """Mean sample value of the audio, times the ``scale`` option; the summary is the mean over samples."""

    name = "level"
    needs = frozenset({"audio"})
    reference_needs = frozenset({"text"})
    higher_is_better = True
    batch_size = 2

    def __init__(self, options, workdir, log):
        unknown = set(options) - {"scale"}
        if unknown:
            raise InputError(f"level has no option(s) {sorted(unknown)}")
        self.scale = float(options.get("scale", 1))
        self.workdir, self.log = workdir, log

    def score(self, samples):
        assert len(samples) <= self.batch_size and self.workdir.is_dir()
        self.log.append([s.id for s in samples])
        if any(s.meta.get("explode") for s in samples):
            raise RuntimeError("metric crashed")
        return [{"value": np.float32(read_level(s.files["audio"]) * self.scale), "words": np.int64(len(s.text.split()))}
                for s in samples]  # numpy scalars, as metrics often return

    def summarise(self, rows):
        return {"mean": float(np.mean([r["value"] for r in rows])), "words": sum(r["words"] for r in rows)}


class NeedsMetric:
    """A metric that reads a kind the fake pipeline never writes (or a reference the benchmark lacks)."""

    higher_is_better = False
    batch_size = 1

    def __init__(self, name, needs=(), reference_needs=()):
        self.name, self.needs, self.reference_needs = name, frozenset(needs), frozenset(reference_needs)

    def score(self, samples):
        raise AssertionError("must never be scored")

    def summarise(self, rows):
        raise AssertionError("must never be summarised")


def needs_weights(options, workdir):
    raise InputError("weighted.weights is not set: pass --metric-option weighted.weights=/path")


ITEMS = [BenchmarkItem(id=f"s{i}", task="say", inputs={"level": 0.1 * (i + 1)}, text="a b c"[: 2 * i + 1])
         for i in range(3)]


@pytest.fixture
def fake():
    """A registry with the fake metrics and benchmarks, a pipeline and the log of scored batches."""
    log: list[list[str]] = []
    exploding: list[BenchmarkItem] = []

    class Plugin:
        @hookimpl
        def mmflow_metrics(self):
            return {"level": lambda options, workdir: LevelMetric(options, workdir, log),
                    "video_metric": lambda options, workdir: NeedsMetric("video_metric", needs={"video"}),
                    "ref_video": lambda options, workdir: NeedsMetric("ref_video", reference_needs={"video"}),
                    "weighted": needs_weights}

        @hookimpl
        def mmflow_benchmarks(self):
            return {"tiny": lambda root: list(ITEMS),
                    "broken": lambda root: [*ITEMS[:1], BenchmarkItem(id="bad", task="say", inputs={"level": 0.0,
                                                                                                    "fail": True})],
                    "exploding": lambda root: list(exploding),
                    "bad_ids": lambda root: [BenchmarkItem(id="../up", task="say")]}

    registry = build_registry(extra_plugins={"fake": Plugin()}, load_entry_points=False)
    return registry, FakePipeline(), log, exploding


def run(fake, out, **kwargs):
    registry, pipe, _, _ = fake
    kwargs.setdefault("benchmark", "tiny")
    return evaluate(kwargs.pop("benchmark"), pipeline=pipe, out=out, registry=registry, progress=False, **kwargs)


def test_generates_scores_and_reports(fake, tmp_path):
    results = run(fake, tmp_path / "ev", seed=10, steps=3)
    pipe, log = fake[1], fake[2]
    assert pipe.calls == [(0.1, 10, 3), (pytest.approx(0.2), 11, 3), (pytest.approx(0.3), 12, 3)]
    assert log == [["s0", "s1"], ["s2"]]  # batches of batch_size
    # Default metrics: only the one that builds and is fed; the others are skipped, not errors.
    assert list(results["metrics"]) == ["level"]
    level = results["metrics"]["level"]
    expected = np.mean([0.1 + 0.10, 0.2 + 0.11, 0.3 + 0.12])
    assert level["value"] == pytest.approx(expected, abs=1e-3) and level["headline"] == "mean"
    assert level["summary"]["words"] == 1 + 2 + 3 and level["n"] == 3
    assert json.loads((tmp_path / "ev" / "results.json").read_text()) == results
    table = (tmp_path / "ev" / "results.md").read_text()
    assert f"| level (mean) | {expected:.4g} | higher is better | 3 |" in table
    assert "| level.words | 6 |  | 3 |" in table
    assert sorted(p.name for p in (tmp_path / "ev" / "samples").iterdir()) == ["s0", "s1", "s2", "settings.json"]
    assert (tmp_path / "ev" / "samples" / "s1" / "s1.wav").is_file()
    assert not list((tmp_path / "ev").rglob("*.tmp"))


def test_a_second_run_computes_nothing_and_a_changed_option_rescores(fake, tmp_path):
    first = run(fake, tmp_path)
    pipe, log = fake[1], fake[2]
    calls, batches = len(pipe.calls), len(log)
    again = run(fake, tmp_path)
    assert again == first and len(pipe.calls) == calls and len(log) == batches  # nothing generated or scored

    scaled = run(fake, tmp_path, metric_options={"level": {"scale": "2"}})
    assert len(pipe.calls) == calls  # samples kept
    assert log[batches:] == [["s0", "s1"], ["s2"]]  # every row scored again under the new option
    assert scaled["metrics"]["level"]["value"] == pytest.approx(2 * first["metrics"]["level"]["value"])
    assert scaled["metrics"]["level"]["options"] == {"scale": "2"}
    back = run(fake, tmp_path)  # the rows of the old options are still there
    assert back == first and len(log) == batches + 2


def test_an_interrupted_scoring_resumes_with_the_missing_rows(fake, tmp_path):
    registry, pipe, log, exploding = fake
    exploding[:] = [ITEMS[0], ITEMS[1], BenchmarkItem("s2", "say", {"level": 0.3}, text="x", meta={"explode": True})]
    with pytest.raises(RuntimeError, match="metric crashed"):
        run(fake, tmp_path, benchmark="exploding")
    assert not (tmp_path / "results.json").exists() and not list(tmp_path.rglob("*.tmp"))
    lines = (tmp_path / "scores" / "level.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["s0", "s1"]
    with open(tmp_path / "scores" / "level.jsonl", "a") as handle:  # a write cut short by a crash
        handle.write('{"id": "s2", "options": {}, "fi')
    exploding[2] = BenchmarkItem("s2", "say", {"level": 0.3}, text="x")
    results = run(fake, tmp_path, benchmark="exploding")
    assert log[-1] == ["s2"] and results["metrics"]["level"]["n"] == 3
    assert json.loads((tmp_path / "scores" / "level.jsonl").read_text().splitlines()[-1])["id"] == "s2"


def test_a_regenerated_file_is_scored_again(fake, tmp_path):
    run(fake, tmp_path / "ev")
    log = fake[2]
    batches = len(log)
    write_wav(tmp_path / "ev" / "samples" / "s1" / "s1.wav", 0.9, frames=801)
    results = run(fake, tmp_path / "ev")
    assert log[batches:] == [["s1"]]
    assert results["metrics"]["level"]["value"] == pytest.approx(np.mean([0.1, 0.9, 0.32]), abs=1e-3)


def test_unmet_needs_are_refused_naming_metric_and_kinds(fake, tmp_path):
    with pytest.raises(InputError, match=r"video_metric needs generated \['video'\] \(the samples have "
                                         r"\['audio', 'text'\]\)"):
        run(fake, tmp_path / "a", metrics=["level", "video_metric"])
    assert len(fake[1].calls) == 1 and fake[2] == []  # refused after the first sample, before any scoring
    with pytest.raises(InputError, match=r"ref_video needs reference \['video'\]"):
        run(fake, tmp_path / "b", metrics=["ref_video"])
    assert len(fake[1].calls) == 1  # references are checked before anything is generated
    with pytest.raises(InputError, match="weighted.weights is not set"):
        run(fake, tmp_path / "c", metrics=["weighted"])  # requested: its missing weights are an error
    assert not (tmp_path / "c").exists()  # nothing left behind by a refused run
    with pytest.raises(InputError, match="unknown metric"):
        run(fake, tmp_path / "d", metric_options={"nope": {"a": "1"}})
    with pytest.raises(InputError, match="does not request"):
        run(fake, tmp_path / "e", metrics=["level"], metric_options={"weighted": {"a": "1"}})
    with pytest.raises(InputError, match="level has no option"):
        run(fake, tmp_path / "f", metrics=["level"], metric_options={"level": {"bogus": "1"}})


def test_changed_generation_settings_are_refused_and_samples_kept(fake, tmp_path):
    run(fake, tmp_path, seed=1)
    before = (tmp_path / "samples" / "s0" / "s0.wav").read_bytes()
    with pytest.raises(InputError, match=r"other settings \(seed: \[1\] there, \[2\] now\)"):
        run(fake, tmp_path, seed=2)
    assert (tmp_path / "samples" / "s0" / "s0.wav").read_bytes() == before


def test_a_failed_generation_keeps_finished_samples_and_leaves_no_partial_one(fake, tmp_path):
    with pytest.raises(RuntimeError, match="generation failed"):
        run(fake, tmp_path, benchmark="broken")
    assert (tmp_path / "samples" / "s0" / "s0.wav").is_file()
    assert not (tmp_path / "samples" / "bad").exists() and not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "results.md").exists()


def test_outputs_folder_files_and_subfolders(fake, tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    write_wav(outputs / "s0.wav", 0.5)
    (outputs / "s1").mkdir()
    write_wav(outputs / "s1" / "anything.wav", 0.25)
    registry, pipe, _, _ = fake
    with pytest.raises(InputError, match=r"no files for item\(s\) \['s2'\]"):
        evaluate("tiny", outputs=outputs, out=tmp_path / "ev", registry=registry, progress=False)
    assert not (tmp_path / "ev").exists()
    results = evaluate("tiny", outputs=outputs, out=tmp_path / "ev", registry=registry, progress=False, limit=2)
    assert results["metrics"]["level"]["value"] == pytest.approx(0.375, abs=1e-3)
    assert results["outputs"] == str(outputs) and results["model"] is None and pipe.calls == []
    write_wav(outputs / "s1.wav", 0.1)
    with pytest.raises(InputError, match="two audio files"):
        read_outputs(outputs, ITEMS[:2])
    with pytest.raises(InputError, match="either --outputs"):
        evaluate("tiny", outputs=outputs, pipeline=pipe, out=tmp_path / "x", registry=registry)


def test_bad_benchmark_ids_and_options_are_refused(fake, tmp_path):
    with pytest.raises(InputError, match="item id"):
        run(fake, tmp_path, benchmark="bad_ids")
    assert parse_metric_options(["a.b=c=d", "a.e="]) == {"a": {"b": "c=d", "e": ""}}
    for bad in (["ab=c"], [".b=c"], ["a.b"], ["a.b=1", "a.b=2"]):
        with pytest.raises(InputError, match="--metric-option"):
            parse_metric_options(bad)


def test_listing_and_table(fake):
    text = listing(fake[0])
    assert "  level  (fake)" in text and "  tiny  (fake)" in text
    table = markdown_table({"metrics": {"m": {"headline": "x", "higher_is_better": False, "n": 2,
                                              "summary": {"x": 0.123456, "y": None}}}})
    assert table.splitlines()[2:] == ["| m (x) | 0.1235 | lower is better | 2 |", "| m.y | n/a |  | 2 |"]
    named = markdown_table({"metrics": {"wer": {"headline": "wer (tiny)", "higher_is_better": False, "n": 1,
                                                "summary": {"wer (tiny)": 0.25}}}})
    assert named.splitlines()[2] == "| wer (tiny) | 0.25 | lower is better | 1 |"


def test_two_runs_into_one_folder_are_refused(fake, tmp_path):
    from mmflow.io import OutputLockedError, folder_lock

    with folder_lock(tmp_path), pytest.raises(OutputLockedError, match="another mmflow run"):
        run(fake, tmp_path)
    assert fake[1].calls == [] and not (tmp_path / "samples").exists()


def registry_with(metrics=None, benchmarks=None):
    """A registry of just these metric factories and benchmark loaders."""
    class Plugin:
        @hookimpl
        def mmflow_metrics(self):
            return dict(metrics or {})

        @hookimpl
        def mmflow_benchmarks(self):
            return dict(benchmarks or {})

    return build_registry(extra_plugins={"more": Plugin()}, load_entry_points=False)


def test_a_loader_that_declares_them_gets_limit_and_options(fake, tmp_path):
    calls = []

    def sized(root, limit=None, options=None):  # prepares only the items asked for, as hdtf does
        calls.append((limit, dict(options)))
        unknown = set(options) - {"level"}
        if unknown:
            raise InputError(f"benchmark sized has no option(s) {sorted(unknown)}")
        level = float(options.get("level", 0.1))
        return [BenchmarkItem(id=f"s{i}", task="say", inputs={"level": level}, text="a") for i in range(limit or 5)]

    log: list = []
    registry = registry_with({"level": lambda options, workdir: LevelMetric(options, workdir, log)},
                             {"sized": sized, "old": lambda root: list(ITEMS)})
    pipe = FakePipeline()
    go = dict(pipeline=pipe, registry=registry, progress=False)
    results = evaluate("sized", out=tmp_path / "a", limit=2, benchmark_options={"level": "0.5"}, **go)
    assert calls == [(2, {"level": "0.5"})] and results["items"] == 2 and len(pipe.calls) == 2
    assert results["benchmark_options"] == {"level": "0.5"}
    assert json.loads((tmp_path / "a" / "samples" / "settings.json").read_text())["benchmark_options"] == {
        "level": "0.5"}
    # Other options make other items: the samples made with the old ones are kept and the run refused.
    with pytest.raises(InputError, match=r"other settings \(benchmark_options: \[\{'level': '0.5'\}\] there, "
                                         r"\[None\] now\)"):
        evaluate("sized", out=tmp_path / "a", limit=2, **go)
    with pytest.raises(InputError, match=r"benchmark sized has no option\(s\) \['nope'\]"):
        evaluate("sized", out=tmp_path / "b", benchmark_options={"nope": "1"}, **go)
    # A loader of the old contract (root only) still works, and refuses options by the runner.
    assert evaluate("old", out=tmp_path / "c", limit=1, **go)["items"] == 1
    with pytest.raises(InputError, match=r"benchmark 'old' takes no --benchmark-option \(got \['level'\]\)"):
        evaluate("old", out=tmp_path / "d", benchmark_options={"level": "1"}, **go)
    assert parse_benchmark_options(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    for bad in (["a"], ["=1"], ["a=1", "a=2"]):
        with pytest.raises(InputError, match="--benchmark-option"):
            parse_benchmark_options(bad)


class DirectedMetric(LevelMetric):
    """``level`` with a declared direction for its second figure."""

    directions = {"words": False}


def test_secondary_figures_carry_their_declared_direction(fake, tmp_path):
    log: list = []
    registry = registry_with({"directed": lambda options, workdir: DirectedMetric(options, workdir, log)},
                             {"tiny": lambda root: list(ITEMS)})
    results = evaluate("tiny", pipeline=FakePipeline(), out=tmp_path, registry=registry, progress=False)
    assert results["metrics"]["directed"]["directions"] == {"mean": True, "words": False}
    table = (tmp_path / "results.md").read_text()
    assert "| directed.words | 6 | lower is better | 3 |" in table
    assert "| directed (mean) |" in table and "| higher is better | 3 |" in table
    assert run(fake, tmp_path / "plain")["metrics"]["level"]["directions"] == {"mean": True}  # headline only


class ReferenceKindMetric:
    """Reports which reference kind each sample was compared with (``prompt_audio`` where there is one)."""

    name = "ref_kind"
    needs = frozenset({"audio"})
    reference_needs = frozenset({"prompt_audio|audio"})
    higher_is_better = True
    batch_size = 4

    def score(self, samples):
        rows = []
        for sample in samples:
            kind = first_kind("prompt_audio|audio", sample.reference)
            rows.append({"level": read_level(sample.reference[kind]), "reference": kind})
        return rows

    def summarise(self, rows):
        return {"level": float(np.mean([row["level"] for row in rows]))}


def test_a_need_with_alternatives_takes_the_first_kind_each_sample_has(tmp_path):
    for name, level in (("prompt", 0.5), ("own", 0.25), ("new", 0.75)):
        write_wav(tmp_path / f"{name}.wav", level)
    items = [BenchmarkItem("p", "say", {"level": 0.1}, reference={"prompt_audio": tmp_path / "prompt.wav",
                                                                  "audio": tmp_path / "own.wav"}),
             BenchmarkItem("a", "say", {"level": 0.1}, reference={"audio": tmp_path / "own.wav"})]
    lists = {"mixed": lambda root: list(items), "bare": lambda root: [*items, BenchmarkItem("n", "say", {})]}
    registry = registry_with({"ref_kind": lambda options, workdir: ReferenceKindMetric()}, lists)
    go = dict(pipeline=FakePipeline(), registry=registry, progress=False, metrics=["ref_kind"])
    results = evaluate("mixed", out=tmp_path / "ev", **go)
    assert results["metrics"]["ref_kind"]["value"] == pytest.approx((0.5 + 0.25) / 2, abs=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "ev" / "scores" / "ref_kind.jsonl").read_text().splitlines()]
    assert [(r["id"], r["row"]["reference"]) for r in rows] == [("p", "prompt_audio"), ("a", "audio")]
    assert rows[0]["files"]["reference.prompt_audio|audio"][0] == "prompt_audio"
    # The cached row is for the file chosen: a prompt added later is scored again, with the prompt.
    items[1] = BenchmarkItem("a", "say", {"level": 0.1}, reference={"prompt_audio": tmp_path / "new.wav",
                                                                    "audio": tmp_path / "own.wav"})
    results = evaluate("mixed", out=tmp_path / "ev", **go)
    assert results["metrics"]["ref_kind"]["value"] == pytest.approx((0.5 + 0.75) / 2, abs=1e-3)
    with pytest.raises(InputError, match=r"ref_kind needs reference \['prompt_audio\|audio'\]"):
        evaluate("bare", out=tmp_path / "bare", **go)


def test_the_command_passes_benchmark_options_to_the_loader(tmp_path, capsys):
    from mmflow.cli import main

    common = ["evaluate", "--benchmark", "synthetic", "--outputs", str(tmp_path), "--out", str(tmp_path / "ev")]
    assert main([*common, "--benchmark-option", "voice=x"]) != 0
    assert "benchmark 'synthetic' takes no --benchmark-option (got ['voice'])" in capsys.readouterr().err
    assert main([*common, "--benchmark-option", "voice"]) != 0
    assert "--benchmark-option takes KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


class DeclaringPipeline(FakePipeline):
    """Says before generating which files it will write (as ``MMFlowPipeline.output_suffixes`` does)."""

    def output_suffixes(self, task, inputs):
        assert task == "say" and "level" in inputs
        return {".wav", ".pkl"}


def test_a_pipeline_that_declares_its_files_is_refused_before_generating(fake, tmp_path):
    registry = fake[0]
    pipe = DeclaringPipeline()
    go = dict(pipeline=pipe, registry=registry, progress=False)
    with pytest.raises(InputError, match=r"video_metric needs generated \['video'\] \(the samples have "
                                         r"\['audio', 'text'\]\)"):
        evaluate("tiny", out=tmp_path / "a", metrics=["level", "video_metric"], **go)
    assert pipe.calls == []  # nothing generated (FakePipeline, which does not say, is refused after one sample)
    assert evaluate("tiny", out=tmp_path / "b", metrics=["level"], **go)["items"] == 3 and len(pipe.calls) == 3
