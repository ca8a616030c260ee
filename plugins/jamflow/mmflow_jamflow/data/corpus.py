"""A synthetic paired speech + facial-motion corpus for JAM-Flow, generated offline and deterministically.

Why: training a small JAM-Flow model needs speech and face motion that agree in time, with no downloads. Each
clip is a plain sentence spoken by espeak-ng (``mmflow_audio_f5tts.speech_corpus``; espeak also times every
phoneme); the phoneme spans drive the mouth of a synthetic LivePortrait expression
(``visemes.py``), and the rest of the face blinks and drifts from the clip's seed.

Clip ``i`` depends only on ``(seed, i)`` and the other arguments, not on ``num_clips`` or ``num_proc``: a larger
corpus starts with the clips of a smaller one, and parallel workers produce the same rows.

Row layout (what mmflow's trainer reads, time-major; see ``mmflow/training/data.py``):

* ``audio`` ``(T_mel, 100)`` float32: F5-TTS/Vocos log-mel (``MelSpectrogram``), 93.75 frames/s;
* ``audio_text`` ``(T_mel,)`` int64: the phoneme id of every mel frame (``frame_phoneme_ids``);
* ``motion`` ``(T_motion, 12)`` / ``motion_cond`` ``(T_motion, 51)`` float32: normalised e_mouth / e_rest
  (``MotionNormalizer``), 25 frames/s; ``expression`` ``(T_motion, 63)`` the raw expression, to renormalise;
* ``openness`` ``(T_motion,)`` float32: the target mouth-opening curve (for lip-sync metrics);
* ``text``, ``voice``, ``rate``, ``pitch``, ``speaker``, ``seconds``; ``phones``, ``phone_starts``,
  ``phone_ends``: the espeak phoneme spans in seconds.

The normaliser is fitted on a fixed pilot set (:func:`pilot_normalizer`), so it does not depend on the corpus
size and inference can rebuild it; :func:`fit_normalizer` fits one on any corpus instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from mmflow_audio_f5tts.espeak import VOICES, EspeakEngine, Voice
from mmflow_audio_f5tts.mel import N_MELS, MelSpectrogram
from mmflow_audio_f5tts.phonemes import PhonemeVocab, frame_phoneme_ids
from mmflow_audio_f5tts.speech_corpus import DEFAULT_RATES, CorpusConfig, as_voice, speak_clip
from mmflow_motion_liveportrait.keypoints import NUM_KEYPOINTS
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer
from mmflow_motion_liveportrait.plugin import MOTION
from tqdm.auto import tqdm

if TYPE_CHECKING:  # imported where used: `mmflow generate` loads this module and never needs it
    import datasets

from .visemes import motion_from_phones, openness_from_phones

logger = logging.getLogger(__name__)

CORPUS_VERSION = 2
"""Bump when the generated rows change for the same arguments (part of the cache name, with a digest of the
generating code, so an edited generator never reloads a stale cache)."""

PILOT_CLIPS = 48
_CHUNK = 256  # clips per Arrow table while building (bounds the Python-side memory)


# --------------------------------------------------------------------------------------------------------------
# Voices and phoneme vocabulary
# --------------------------------------------------------------------------------------------------------------


def speaker_id(voice: Voice | str) -> int:
    """A stable speaker id for a voice name: its index in ``VOICES``, else 1000 + a checksum of the name."""
    name = voice.name if isinstance(voice, Voice) else str(voice)
    for index, known in enumerate(VOICES):
        if known.name == name:
            return index
    return 1000 + zlib.crc32(name.encode()) % 1_000_000


def default_phoneme_vocab() -> PhonemeVocab:
    """The fixed phoneme vocabulary the corpus encodes ``audio_text`` with (the same for every corpus)."""
    return PhonemeVocab()


# --------------------------------------------------------------------------------------------------------------
# One clip
# --------------------------------------------------------------------------------------------------------------


def _clip_seed(seed: int, index: int) -> int:
    return zlib.crc32(f"jamflow-corpus/{seed}/{index}".encode())


class _ClipMaker:
    """Builds raw rows (everything but the normalised motion); one per process."""

    def __init__(self, config: CorpusConfig) -> None:
        self.config = config
        self.engine = EspeakEngine()
        self.mel = MelSpectrogram()
        self.vocab = default_phoneme_vocab()

    @torch.no_grad()
    def __call__(self, index: int) -> dict[str, Any]:
        spoken, voice = speak_clip(index, self.config, self.engine)
        seconds = spoken.seconds
        mel = self.mel.time_major(torch.from_numpy(spoken.waveform))[0].numpy()  # T_mel × 100
        motion_frames = MOTION.num_frames(seconds)
        speaker = speaker_id(voice)
        expression = motion_from_phones(spoken.phones, motion_frames, _clip_seed(self.config.seed, index), speaker)
        return {
            "audio": mel.astype(np.float32),
            "audio_text": frame_phoneme_ids(spoken.phones, len(mel), self.vocab).astype(np.int64),
            "expression": expression.reshape(motion_frames, NUM_KEYPOINTS * 3),
            "openness": openness_from_phones(spoken.phones, motion_frames),
            "text": spoken.text,
            "voice": voice.name,
            "rate": voice.rate,
            "pitch": voice.pitch,
            "speaker": speaker,
            "seconds": float(seconds),
            "phones": [p.symbol for p in spoken.phones],
            "phone_starts": np.array([p.start for p in spoken.phones], dtype=np.float32),
            "phone_ends": np.array([p.end for p in spoken.phones], dtype=np.float32),
        }


_WORKER: _ClipMaker | None = None


def _worker_init(config: CorpusConfig) -> None:
    global _WORKER
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    _WORKER = _ClipMaker(config)


def _worker_make(index: int) -> dict[str, Any]:
    return _WORKER(index)


# --------------------------------------------------------------------------------------------------------------
# Normaliser
# --------------------------------------------------------------------------------------------------------------


def _expressions(source: datasets.Dataset | Iterable[np.ndarray]) -> list[torch.Tensor]:
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    if isinstance(source, datasets.Dataset):
        source = source.with_format("numpy")["expression"]
    out = []
    for exp in source:
        exp = torch.as_tensor(np.asarray(exp), dtype=torch.float32)
        out.append(exp.reshape(-1, NUM_KEYPOINTS, 3))
    return out


def fit_normalizer(source: datasets.Dataset | Iterable[np.ndarray]) -> MotionNormalizer:
    """A ``MotionNormalizer`` fitted on a corpus (its ``expression`` column) or on expressions ``(T, 21, 3)``
    or ``(T, 63)``. Save it with ``save_pretrained`` so inference can denormalise."""
    return MotionNormalizer().fit(_expressions(source))


@lru_cache(maxsize=4)
def _pilot_stats(voices: tuple[Voice, ...]) -> dict[str, torch.Tensor]:
    config = CorpusConfig(seed=-1, voices=voices, rates=DEFAULT_RATES, min_seconds=1.0, max_seconds=10.0)
    engine = EspeakEngine()
    expressions = []
    for index in range(PILOT_CLIPS):
        spoken, voice = speak_clip(index, config, engine)
        frames = MOTION.num_frames(spoken.seconds)
        expressions.append(motion_from_phones(spoken.phones, frames, _clip_seed(-1, index), speaker_id(voice)))
    normalizer = fit_normalizer(expressions)
    return {k: v.clone() for k, v in normalizer.state_dict().items()}


def pilot_normalizer(voices: Sequence[Voice | str] | None = None) -> MotionNormalizer:
    """The corpus's default normaliser: fitted on a fixed pilot set of 48 clips (seed -1) over ``voices``.

    Deterministic and independent of any corpus, so training and inference rebuild the same statistics.
    """
    voices = tuple(as_voice(v) for v in (voices or VOICES))
    normalizer = MotionNormalizer()
    normalizer.load_state_dict(_pilot_stats(voices))
    return normalizer


def _normalise_rows(rows: dict[str, list], normalizer: MotionNormalizer) -> None:
    rows["motion"], rows["motion_cond"] = [], []
    for flat in rows["expression"]:
        exp = torch.from_numpy(flat).reshape(-1, NUM_KEYPOINTS, 3)
        mouth, rest = normalizer.normalize(exp)
        rows["motion"].append(mouth.numpy().astype(np.float32))
        rows["motion_cond"].append(rest.numpy().astype(np.float32))


# --------------------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------------------


def corpus_features(normalizer: MotionNormalizer | None = None) -> datasets.Features:
    """Column types of the corpus."""
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    normalizer = normalizer or MotionNormalizer()
    return datasets.Features({
        "audio": datasets.Array2D(shape=(None, N_MELS), dtype="float32"),
        "audio_text": datasets.Sequence(datasets.Value("int64")),
        "motion": datasets.Array2D(shape=(None, normalizer.mouth_channels), dtype="float32"),
        "motion_cond": datasets.Array2D(shape=(None, normalizer.rest_channels), dtype="float32"),
        "expression": datasets.Array2D(shape=(None, NUM_KEYPOINTS * 3), dtype="float32"),
        "openness": datasets.Sequence(datasets.Value("float32")),
        "text": datasets.Value("string"),
        "voice": datasets.Value("string"),
        "rate": datasets.Value("int32"),
        "pitch": datasets.Value("int32"),
        "speaker": datasets.Value("int32"),
        "seconds": datasets.Value("float32"),
        "phones": datasets.Sequence(datasets.Value("string")),
        "phone_starts": datasets.Sequence(datasets.Value("float32")),
        "phone_ends": datasets.Sequence(datasets.Value("float32")),
    })


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """Digest of the modules that generate the rows (this one, the speech corpus and its sentences, visemes, the
    idle face and expression layout it uses, espeak, phonemes, mel)."""
    from mmflow_audio_f5tts import espeak, mel, phonemes, sentences, speech_corpus
    from mmflow_motion_liveportrait import expression_layout, idle

    from . import visemes

    digest = hashlib.sha256()
    for module in (speech_corpus, sentences, visemes, idle, expression_layout, espeak, phonemes, mel):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _normalizer_digest(normalizer: MotionNormalizer) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(normalizer.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().numpy().astype(np.float32).tobytes())
    return digest.hexdigest()[:16]


def corpus_fingerprint(
    num_clips: int,
    seed: int = 0,
    voices: Sequence[Voice | str] | None = None,
    rates: Sequence[int] | None = DEFAULT_RATES,
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    normalizer: MotionNormalizer | str | os.PathLike[str] | None = None,
    **_ignored: Any,
) -> str:
    """A short hash of every argument of :func:`build_dataset` that decides the rows (``cache_dir`` and
    ``num_proc`` do not), so ``corpus_fingerprint(**kwargs)`` names the corpus ``build_dataset(**kwargs)`` makes."""
    if isinstance(normalizer, str | os.PathLike):
        normalizer = MotionNormalizer.from_pretrained(normalizer)
    config = CorpusConfig.build(seed, voices, rates, min_seconds, max_seconds)
    payload = {
        "version": CORPUS_VERSION,
        **config.fingerprint_payload(),
        "num_clips": num_clips,
        "normalizer": _normalizer_digest(normalizer) if normalizer is not None else "pilot",
        "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _generate(num_clips: int, config: CorpusConfig, normalizer: MotionNormalizer, num_proc: int) -> datasets.Dataset:
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    features = corpus_features(normalizer)
    tables: list[datasets.Dataset] = []
    rows: dict[str, list] = {}
    started = time.perf_counter()

    def flush() -> None:
        if rows and rows["text"]:
            _normalise_rows(rows, normalizer)
            tables.append(datasets.Dataset.from_dict(rows, features=features))
            rows.clear()

    def add(row: dict[str, Any]) -> None:
        for key, value in row.items():
            rows.setdefault(key, []).append(value)
        if len(rows["text"]) >= _CHUNK:
            flush()

    bar = tqdm(total=num_clips, desc="synthetic JAM-Flow corpus", unit="clip")
    if num_proc <= 1:
        maker = _ClipMaker(config)
        for index in range(num_clips):
            add(maker(index))
            bar.update()
    else:
        # spawn: forking after torch/OpenMP start-up can hang; an executor (unlike a Pool) fails loudly when a
        # worker cannot start instead of respawning it forever.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(num_proc, mp_context=context, initializer=_worker_init, initargs=(config,)) as pool:
            for row in pool.map(_worker_make, range(num_clips), chunksize=8):
                add(row)
                bar.update()
    bar.close()
    flush()
    dataset = datasets.concatenate_datasets(tables) if len(tables) > 1 else tables[0]
    elapsed = time.perf_counter() - started
    seconds = float(np.sum(dataset["seconds"]))
    logger.info("built %d clips (%.2f h of speech) in %.1f s: %.1f clips/s, %.0f× real time, %d process(es)",
                num_clips, seconds / 3600, elapsed, num_clips / elapsed, seconds / elapsed, max(num_proc, 1))
    return dataset


def build_dataset(
    num_clips: int,
    seed: int = 0,
    voices: Sequence[Voice | str] | None = None,
    rates: Sequence[int] | None = DEFAULT_RATES,
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    cache_dir: str | os.PathLike[str] | None = None,
    num_proc: int = 1,
    normalizer: MotionNormalizer | str | os.PathLike[str] | None = None,
) -> datasets.Dataset:
    """``num_clips`` synthetic speech + face-motion clips as a ``datasets.Dataset`` (layout: module docstring).

    Args:
        num_clips: Rows to build.
        seed: Corpus seed; clip ``i`` depends only on it, ``i`` and the other arguments below.
        voices: espeak voices (``Voice`` or names); default all of ``espeak.VOICES``. Each voice is a speaker
            with its own face.
        rates: Speaking rates (words/minute) drawn per clip; ``None`` keeps each voice's own rate.
        min_seconds / max_seconds: Clip duration range (sentences are drawn until one fits).
        cache_dir: If given, the corpus is saved under a name derived from the arguments and reloaded when
            present (written to a temporary folder and renamed, so a crash never leaves a half corpus).
        num_proc: Worker processes for synthesis and mel computation.
        normalizer: ``MotionNormalizer`` (or a folder saved with ``save_pretrained``) for ``motion`` /
            ``motion_cond``; default :func:`pilot_normalizer` over ``voices``.
    """
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    config = CorpusConfig.build(seed, voices, rates, min_seconds, max_seconds)
    if isinstance(normalizer, str | os.PathLike):
        normalizer = MotionNormalizer.from_pretrained(normalizer)
    given_normalizer = normalizer
    if normalizer is None:
        normalizer = pilot_normalizer(config.voices)

    if cache_dir is None:
        return _generate(num_clips, config, normalizer, num_proc)

    fingerprint = corpus_fingerprint(
        num_clips, seed, config.voices, config.rates, min_seconds, max_seconds, given_normalizer
    )
    name = f"jamflow-synthetic-{fingerprint}"
    target = Path(cache_dir) / name
    if (target / "dataset").is_dir():
        logger.info("loading the cached synthetic corpus %s", target)
        return datasets.load_from_disk(str(target / "dataset"))
    target.parent.mkdir(parents=True, exist_ok=True)
    dataset = _generate(num_clips, config, normalizer, num_proc)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        dataset.save_to_disk(str(staging / "dataset"))
        normalizer.save_pretrained(str(staging / "normalizer"))
        default_phoneme_vocab().save(staging / "phonemes.txt")
        arguments = {"version": CORPUS_VERSION, **config.fingerprint_payload(), "num_clips": num_clips}
        (staging / "corpus.json").write_text(json.dumps(arguments, indent=2))
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "dataset").is_dir():  # not a concurrent writer that finished first
                raise
            logger.info("another process cached %s first; using its copy", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached the synthetic corpus at %s", target)
    return datasets.load_from_disk(str(target / "dataset"))
