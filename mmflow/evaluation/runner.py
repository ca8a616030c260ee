"""``evaluate``: generate a benchmark's items (or read outputs already made), score them, report; resumable.

The evaluation folder holds everything a rerun needs to do only what is missing::

    <out>/samples/<id>/<id>.wav|.mp4|.npz   the pipeline's own files, one folder per item, each written atomically
    <out>/samples/settings.json             model, benchmark, seed, steps (other settings there are refused)
    <out>/scores/<metric>.jsonl             one row per sample, appended and fsynced as computed
    <out>/metrics/<metric>/                 the metric's own caches
    <out>/results.json, <out>/results.md    the summaries (written atomically)

A cached row counts only for the metric options and the file sizes and times it was computed with, so a changed
option or a regenerated file is scored again; rows are never removed (switching back reuses them).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..codecs import InputError
from ..io import check_stem, folder_lock, output_folder, write_text_atomic
from .metric import BenchmarkItem, Metric, Sample, first_kind
from .report import jsonable, markdown_table

logger = logging.getLogger(__name__)

KIND_BY_SUFFIX = {".wav": "audio", ".mp4": "video", ".npz": "motion"}
"""Generated files by kind: what the bundled pipelines write (other files, e.g. ``.pkl`` templates, are not read)."""
SAMPLE_STEM_SETTINGS = "settings.json"


# ------------------------------------------------------------------------------------------------ inputs


def _keywords(loader) -> set[str] | None:
    """The keyword parameters a loader declares (None: any, it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(loader).parameters.values()
    except (TypeError, ValueError):  # a callable without a readable signature: the old contract, root only
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def load_benchmark(benchmark: str, root: str | os.PathLike | None = None, limit: int | None = None,
                   registry=None, options: Mapping[str, str] | None = None) -> list[BenchmarkItem]:
    """The registered benchmark's items (the first ``limit``), with ids checked to be plain, distinct file names.

    ``limit`` and ``options`` reach a loader that declares them (``metric.py`` says the contract); ``options``
    given to one that does not are refused.
    """
    from ..plugins import get_registry

    registry = registry or get_registry()
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    loader = registry.benchmark(benchmark)
    keywords = _keywords(loader)
    call: dict[str, Any] = {}
    if keywords is None or "limit" in keywords:
        call["limit"] = limit
    if keywords is None or "options" in keywords:
        call["options"] = dict(options or {})
    elif options:
        raise InputError(f"benchmark {benchmark!r} takes no --benchmark-option (got {sorted(options)}); drop them")
    items = list(loader(Path(root) if root is not None else None, **call))
    if not items:
        raise InputError(f"benchmark {benchmark!r} has no items" + (f" in {root}" if root else ""))
    ids = [item.id for item in items]
    for item_id in ids:
        try:
            check_stem(item_id)
        except ValueError as error:
            raise InputError(f"benchmark {benchmark!r}: item id {error}") from None
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise InputError(f"benchmark {benchmark!r} lists item ids {twice[:5]} more than once")
    return items[:limit] if limit else items


def _split_pair(pair: str, flag: str, form: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise InputError(f"{flag} takes {form}, got {pair!r}")
    return key, value


def parse_metric_options(pairs: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["wer.model=/p", ...]`` → ``{"wer": {"model": "/p"}}``."""
    form = "METRIC.KEY=VALUE (e.g. wer.model=/path/to/whisper)"
    options: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, value = _split_pair(pair, "--metric-option", form)
        metric, dot, name = key.partition(".")
        if not dot or not metric or not name:
            raise InputError(f"--metric-option takes {form}, got {pair!r}")
        if name in options.setdefault(metric, {}):
            raise InputError(f"--metric-option {metric}.{name} is given twice")
        options[metric][name] = value
    return options


def parse_benchmark_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["segment_seconds=10", ...]`` → ``{"segment_seconds": "10"}``."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, value = _split_pair(pair, "--benchmark-option", "KEY=VALUE (e.g. segment_seconds=10)")
        if key in options:
            raise InputError(f"--benchmark-option {key} is given twice")
        options[key] = value
    return options


def sample_files(folder: Path, stem: str) -> dict[str, Path]:
    """The files of one sample by kind: ``folder/stem.<ext>``, or every file of the folder ``folder/stem/``."""
    candidates = [folder / f"{stem}{suffix}" for suffix in KIND_BY_SUFFIX]
    if (folder / stem).is_dir():
        candidates += sorted(p for p in (folder / stem).iterdir() if p.suffix.lower() in KIND_BY_SUFFIX)
    files: dict[str, Path] = {}
    for path in candidates:
        if path.is_file():
            kind = KIND_BY_SUFFIX[path.suffix.lower()]
            if kind in files and files[kind] != path:
                raise InputError(f"sample {stem!r} has two {kind} files ({files[kind]} and {path}); keep one")
            files[kind] = path
    return files


def _sample(item: BenchmarkItem, files: Mapping[str, Path]) -> Sample:
    return Sample(id=item.id, files=dict(files), reference=dict(item.reference), text=item.text, meta=dict(item.meta))


def read_outputs(folder: str | os.PathLike, items: Sequence[BenchmarkItem]) -> list[Sample]:
    """Samples from a folder of outputs generated elsewhere: ``<id>.wav`` / ``.mp4`` / ``.npz`` or ``<id>/``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--outputs {folder}: not a folder; give the folder holding <id>.wav, <id>.mp4 ... files")
    samples = [_sample(item, sample_files(folder, item.id)) for item in items]
    missing = [s.id for s in samples if not s.files]
    if missing:
        raise InputError(f"--outputs {folder} has no files for item(s) {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''} ({len(missing)} of {len(samples)}); expected "
                         f"<id>{'/'.join(KIND_BY_SUFFIX)} or a folder <id>/ per item (or use --limit)")
    return samples


# ------------------------------------------------------------------------------------------------ generation


class Generator:
    """Generates missing samples into ``<out>/samples/<id>/`` with a pipeline loaded on first need."""

    def __init__(self, folder: Path, model=None, pipeline=None, seed: int = 0, steps: int | None = None,
                 device: str = "cpu", benchmark: str = "", benchmark_options: Mapping[str, str] | None = None):
        self.folder = folder
        self.model, self.pipeline, self.seed, self.steps, self.device = model, pipeline, seed, steps, device
        self.settings = {"model": self._model_name(), "benchmark": benchmark, "seed": seed, "steps": steps}
        if benchmark_options:  # they change the items (hdtf's segment length); absent when none, as before them
            self.settings["benchmark_options"] = dict(benchmark_options)

    def _model_name(self) -> str:
        if self.pipeline is not None:
            return _describe_model(None, self.pipeline)
        from ..generate_command import resolve_model

        self.model = resolve_model(None if self.model is None else str(self.model))
        return str(Path(self.model).resolve())

    def check_settings(self) -> None:
        """Refuse to mix samples made with other settings into this folder (they are kept, never replaced)."""
        path = self.folder / SAMPLE_STEM_SETTINGS
        if path.is_file():
            before = json.loads(path.read_text())
            if before != self.settings:
                changed = sorted(k for k in before.keys() | self.settings.keys() if before.get(k) != self.settings.get(k))
                raise InputError(f"{self.folder} holds samples generated with other settings ({', '.join(changed)}: "
                                 f"{[before.get(k) for k in changed]} there, {[self.settings.get(k) for k in changed]} "
                                 f"now); choose another --out, or move that folder away to regenerate")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(self.settings, indent=2) + "\n")

    def _pipe(self):
        if self.pipeline is None:
            from ..generate_command import pipeline_class

            logger.info("loading %s", self.model)
            self.pipeline = pipeline_class(Path(self.model)).from_pretrained(self.model).to(self.device)
        return self.pipeline

    def planned_kinds(self, item: BenchmarkItem) -> set[str] | None:
        """The kinds the pipeline will write for ``item``, if it says before generating (``output_suffixes``,
        as ``MMFlowPipeline`` derives them from its streams' codecs); None if it does not."""
        declare = getattr(self._pipe(), "output_suffixes", None)
        suffixes = None if declare is None else declare(item.task, dict(item.inputs))
        return None if suffixes is None else {KIND_BY_SUFFIX[s] for s in suffixes if s in KIND_BY_SUFFIX}

    def __call__(self, item: BenchmarkItem, index: int) -> Sample:
        """The item's sample: its folder if it exists (complete: folders appear by atomic rename), else generated."""
        from ..io import atomic_path
        from ..pipeline import MMFlowOutput

        target = self.folder / item.id
        if not target.is_dir():
            pipe = self._pipe()
            call = {"seed": self.seed + index, "progress": False, **dict(item.inputs)}
            if self.steps is not None:
                call["num_inference_steps"] = self.steps
            result = pipe(task=item.task, **call)
            with atomic_path(target) as tmp:
                tmp.mkdir()
                if isinstance(result, MMFlowOutput):
                    pipe.save(result, tmp, item.id)
                else:  # a pipeline's own output class with a writer (JAMFlowOutput.save)
                    result.save(tmp, item.id)
        files = sample_files(self.folder, item.id)
        if not files:
            raise InputError(f"the pipeline wrote no file of a known kind ({', '.join(KIND_BY_SUFFIX)}) for item "
                             f"{item.id!r} into {target}")
        return _sample(item, files)


# ------------------------------------------------------------------------------------------------ metrics


def _kinds(mapping: Mapping[str, Any], text: str | None) -> set[str]:
    return set(mapping) | ({"text"} if text is not None else set())


def build_metrics(names: Sequence[str] | None, options: Mapping[str, Mapping[str, str]], workdir: Path,
                  registry) -> dict[str, Metric]:
    """Each requested metric built from its factory; without ``names``, every registered one that builds (one
    that raises ``InputError`` or ``ImportError`` — weights or a package missing — is skipped with a log line)."""
    explicit = names is not None
    unknown = sorted(set(options) - set(registry.metrics))
    if unknown:
        raise InputError(f"--metric-option names unknown metric(s) {unknown} (known: {sorted(registry.metrics)})")
    if explicit:
        unused = sorted(set(options) - set(names))
        if unused:
            raise InputError(f"--metric-option names metric(s) {unused} that --metrics does not request")
    built = {}
    for name in (names if explicit else sorted(registry.metrics)):
        factory = registry.metric(name)
        folder = workdir / name
        made = [p for p in (folder, workdir) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        try:
            metric = factory(dict(options.get(name, {})), folder)
        except (InputError, ImportError) as error:
            for path in made:  # only the empty folders made for it
                with contextlib.suppress(OSError):
                    path.rmdir()
            if explicit:
                raise InputError(f"metric {name}: {error}") from error
            logger.info("skipping metric %s (not requested, cannot be built here): %s", name, error)
            continue
        built[name] = metric
    return built


def check_needs(metrics: dict[str, Metric], samples: Sequence[Sample], explicit: bool,
                files: bool = True) -> dict[str, Metric]:
    """The metrics these samples can feed (``files=False``: only their references are checked). A requested metric
    with an unmet need is an error naming it, the kinds it needs and the kinds there are; a default one is dropped
    with a log line."""
    if not samples:
        return metrics
    generated = [_kinds(s.files, s.text) for s in samples]
    references = [_kinds(s.reference, s.text) for s in samples]
    have, refs = set.intersection(*generated), set.intersection(*references)
    kept = {}
    for name, metric in metrics.items():
        missing = _unmet(metric.needs, generated) if files else []
        missing_refs = _unmet(metric.reference_needs, references)
        if not missing and not missing_refs:
            kept[name] = metric
            continue
        why = []
        if missing:
            why.append(f"generated {missing} (the samples have {sorted(have) or 'none'})")
        if missing_refs:
            why.append(f"reference {missing_refs} (the benchmark gives {sorted(refs) or 'none'})")
        message = f"metric {name} needs {' and '.join(why)}"
        if explicit:
            raise InputError(message + "; drop it from --metrics or evaluate a model / benchmark that provides them")
        logger.info("skipping %s", message)
    return kept


def _unmet(needs: Iterable[str], kinds_per_sample: Sequence[set[str]]) -> list[str]:
    """The needs that some sample meets with none of their kinds."""
    return sorted(need for need in needs if any(first_kind(need, kinds) is None for kinds in kinds_per_sample))


def _signature(metric: Metric, sample: Sample) -> dict[str, Any]:
    """What a cached row depends on: size and modification time of the files the metric reads (with the kind an
    alternative chose), the text's hash."""
    signature: dict[str, Any] = {}
    for side, files, needs in (("files", sample.files, metric.needs),
                               ("reference", sample.reference, metric.reference_needs)):
        for need in sorted(needs):
            kind = first_kind(need, _kinds(files, sample.text))
            if kind == "text":
                signature["text"] = hashlib.sha256((sample.text or "").encode()).hexdigest()[:16]
                continue
            info = Path(files[kind]).stat()
            signature[f"{side}.{need}"] = ([] if kind == need else [kind]) + [info.st_size, info.st_mtime_ns]
    return signature


def directions(metric: Metric, summary: Mapping[str, Any]) -> dict[str, bool]:
    """Summary key → higher is better, for the keys that have a direction: the headline (``higher_is_better``)
    and those in the metric's optional ``directions``."""
    declared = dict(getattr(metric, "directions", None) or {})
    headline = next(iter(summary), None)
    if headline is not None:
        declared.setdefault(headline, bool(metric.higher_is_better))
    return {key: bool(declared[key]) for key in summary if key in declared}


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in a metric's row as Python numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a metric row holds {type(value).__name__}, which is not JSON data")


class ScoreCache:
    """``<out>/scores/<metric>.jsonl``: rows appended (and fsynced) as they are computed, read back by sample id."""

    def __init__(self, path: Path, options: Mapping[str, str]):
        self.path, self.options = path, dict(options)
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.needs_newline = False
        if path.is_file():
            text = path.read_text()
            self.needs_newline = bool(text) and not text.endswith("\n")  # a crash mid-line: start a new one
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("%s line %d is incomplete (an interrupted write); it is scored again", path, number)
                    continue
                if record.get("options") == self.options:
                    self.rows[(record["id"], json.dumps(record["files"], sort_keys=True))] = record["row"]

    def get(self, sample_id: str, signature: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.rows.get((sample_id, json.dumps(signature, sort_keys=True)))

    def add(self, entries: Sequence[tuple[str, Mapping[str, Any], dict[str, Any]]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"id": i, "options": self.options, "files": s, "row": row}, default=_plain)
                 for i, s, row in entries]
        with open(self.path, "a") as handle:
            if self.needs_newline:
                handle.write("\n")
                self.needs_newline = False
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        for (sample_id, signature, _), line in zip(entries, lines, strict=True):  # as a rerun will read them
            self.rows[(sample_id, json.dumps(signature, sort_keys=True))] = json.loads(line)["row"]


def score(metric: Metric, samples: Sequence[Sample], cache: ScoreCache, progress: bool = True) -> list[dict]:
    """Every sample's row, from the cache or computed in batches of ``metric.batch_size``."""
    from tqdm.auto import tqdm

    signatures = [_signature(metric, s) for s in samples]
    todo = [(s, sig) for s, sig in zip(samples, signatures, strict=True) if cache.get(s.id, sig) is None]
    if todo:
        logger.info("%s: %d of %d samples to score", metric.name, len(todo), len(samples))
    size = max(1, int(metric.batch_size))
    with tqdm(total=len(todo), desc=metric.name, unit="sample", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            rows = metric.score([s for s, _ in batch])
            if len(rows) != len(batch):
                raise RuntimeError(f"metric {metric.name} returned {len(rows)} rows for {len(batch)} samples")
            cache.add([(s.id, sig, dict(row)) for (s, sig), row in zip(batch, rows, strict=True)])
            bar.update(len(batch))
    return [cache.get(s.id, sig) for s, sig in zip(samples, signatures, strict=True)]


# ------------------------------------------------------------------------------------------------ the run


def evaluate(
    benchmark: str,
    *,
    model: str | os.PathLike | None = None,
    pipeline=None,
    outputs: str | os.PathLike | None = None,
    benchmark_root: str | os.PathLike | None = None,
    benchmark_options: Mapping[str, str] | None = None,
    metrics: Sequence[str] | None = None,
    metric_options: Mapping[str, Mapping[str, str]] | None = None,
    out: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    registry=None,
) -> dict[str, Any]:
    """Score ``benchmark`` and write ``<out>/results.json`` and ``results.md``; returns the results.

    Args:
        benchmark: A registered benchmark name (``mmflow evaluate --list``).
        model: A saved pipeline folder, an installed model's name or a cached Hub id (default: the installed
            ``default``); or ``pipeline``, a ready pipeline object; or ``outputs``, a folder of outputs made
            elsewhere (``<id>.wav``, ``<id>.mp4``, ``<id>.npz`` or ``<id>/``), scored without generating.
        benchmark_root: The benchmark's local dataset folder (for lists not shipped with their plugin).
        benchmark_options: The loader's options (``{"segment_seconds": "10"}`` for ``hdtf``), strings as on the
            command line; recorded with the samples, so a folder made with other options is refused.
        metrics: Metric names; default: every registered metric these samples and references can feed that
            needs no user-supplied weights.
        metric_options: Per metric, its options (``{"wer": {"model": "/path"}}``), strings as on the command line.
        out: The evaluation folder (default ``evaluation/<benchmark>``).
        limit: Evaluate the first ``limit`` items only.
        seed: Item ``i`` is generated with ``seed + i``.
        steps: Solver steps (default: the model's scheduler).
    """
    from ..plugins import get_registry

    registry = registry or get_registry()
    if outputs is not None and (model is not None or pipeline is not None):
        raise InputError("give either --outputs (score existing files) or --model (generate), not both")
    explicit = metrics is not None
    if explicit:
        metrics = list(dict.fromkeys(metrics))
        if not metrics:
            raise InputError("--metrics is empty; name at least one metric (`mmflow evaluate --list`)")
    options = {name: dict(values) for name, values in (metric_options or {}).items()}
    benchmark_options = dict(benchmark_options or {})
    items = load_benchmark(benchmark, benchmark_root, limit, registry, benchmark_options)
    out = Path(out) if out is not None else Path("evaluation") / benchmark
    with output_folder(out) as out, folder_lock(out):
        given = read_outputs(outputs, items) if outputs is not None else None  # checked before any work
        built = build_metrics(metrics, options, out / "metrics", registry)
        built = check_needs(built, [_sample(item, {}) for item in items], explicit, files=False)
        if given is not None:
            samples = given
        else:
            generator = Generator(out / "samples", model, pipeline, seed, steps, device, benchmark,
                                  benchmark_options)
            samples = _generate(items, generator, built, explicit, progress)
        built = check_needs(built, samples, explicit)
        if not built:
            raise InputError(f"no registered metric can score these samples (kinds "
                             f"{sorted(set.union(*(set(s.files) for s in samples)))}); `mmflow evaluate --list`")
        results = {"benchmark": benchmark, "benchmark_root": None if benchmark_root is None else str(benchmark_root),
                   "benchmark_options": benchmark_options,
                   "model": None if outputs is not None else _describe_model(model, pipeline),
                   "outputs": None if outputs is None else str(outputs), "seed": seed, "steps": steps,
                   "items": len(samples), "metrics": {}}
        for name, metric in built.items():
            cache = ScoreCache(out / "scores" / f"{name}.jsonl", options.get(name, {}))
            rows = score(metric, samples, cache, progress)
            summary = dict(metric.summarise(rows))
            headline = next(iter(summary), None)
            results["metrics"][name] = {"headline": headline, "value": summary.get(headline),
                                        "higher_is_better": bool(metric.higher_is_better), "n": len(rows),
                                        "options": options.get(name, {}), "summary": summary,
                                        "directions": directions(metric, summary)}
        results = jsonable(results)
        write_text_atomic(out / "results.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
        write_text_atomic(out / "results.md", markdown_table(results) + "\n")
    logger.info("wrote %s and %s", out / "results.json", out / "results.md")
    return results


def _describe_model(model, pipeline) -> str:
    if pipeline is not None:  # a diffusers pipeline knows the folder it was loaded from
        return f"{type(pipeline).__name__}({getattr(pipeline, 'name_or_path', None) or '?'})"
    return "default" if model is None else str(model)


def _generate(items, generator: Generator, built, explicit, progress):
    """Every item's sample, generating what is missing. The metrics' needs are checked against the kinds the
    pipeline declares for the first item before generating it, or else on the first sample, so an unfed requested
    metric fails before anything (or before the rest) is generated."""
    from tqdm.auto import tqdm

    generator.check_settings()
    if items and not (generator.folder / items[0].id).is_dir():
        planned = generator.planned_kinds(items[0])
        if planned is not None:
            check_needs(built, [_sample(items[0], dict.fromkeys(planned, Path(os.devnull)))], explicit)
    samples = []
    for index, item in enumerate(tqdm(items, desc="generating", unit="item", disable=not progress)):
        samples.append(generator(item, index))
        if index == 0:
            check_needs(built, samples, explicit)
    return samples
