"""Your own talking-face clips → a JAM-Flow training set in the synthetic corpus's layout (``corpus.py``).

Why: the synthetic corpus teaches the model espeak speech and a procedural face; real speech and real faces need
real clips. This module turns a folder of videos with transcripts into the same rows, so ``recipes/jamflow.py``
trains on them with ``data: {path: <out>/dataset}`` and nothing else changes.

Input convention (``input_dir``, searched recursively; hidden folders and ``out_dir`` are ignored):

* videos ``*.mp4``, ``*.mov``, ``*.mkv``, ``*.webm`` with speech in their first audio stream;
* the transcript of ``clip.mp4`` in ``clip.txt`` next to it, or a row of ``input_dir/metadata.csv`` (a header
  line ``file,text[,speaker]``, ``file`` relative to ``input_dir``; the CSV wins over a ``.txt``);
* the speaker: the CSV's ``speaker`` column when given, else the name of the folder holding the video
  (``alice/clip1.mp4`` → ``alice``). Speakers are numbered in sorted order in the ``speaker`` column;
  ``speaker_name`` keeps the name.

Per clip: the video is decoded once at 25 frames/s (``read_video``); its audio is made mono, raised to F5-TTS's
RMS (``normalize_rms``, as F5 does for references) and resampled to 24 kHz; audio and video are trimmed to the
shorter of the two, so the log-mel (93.75 frames/s) and the motion (25 frames/s) cover the same seconds; the
LivePortrait motion extractor gives the expression of every frame (``extract_motion``).

Resumable: each clip's expensive part (mel + expression, or why it failed) goes to one ``.npz`` / ``.json`` file in
``<out>/.work/clips/``, keyed by the video's path, size and modification time and by the motion weights. A rerun
skips those clips; text conditioning, duration limits and the normaliser are applied when the dataset is
assembled, so changing them re-assembles without re-extracting motion.

Output (``out_dir``):

* ``dataset/``: ``datasets.Dataset.save_to_disk`` folder (written to a temporary name, then renamed) with
  ``audio`` ``(T_mel, 100)``, ``audio_text`` (F5 token ids of the transcript, or one phoneme id per mel frame with
  ``text_conditioning="aligned"``), ``motion`` ``(T, 12)`` / ``motion_cond`` ``(T, 51)`` (normalised e_mouth /
  e_rest), ``expression`` ``(T, 63)``, ``text``, ``speaker``, ``speaker_name``, ``seconds``, ``source``;
* ``normalizer/``: the ``MotionNormalizer`` fitted on the kept clips (``pipeline.normalizer`` of the recipe);
* ``vocab.txt`` (filler) or ``phonemes.txt`` (aligned): the vocabulary ``audio_text`` was encoded with;
* ``report.json``: kept clips and skipped ones with the reason; ``preprocess.json``: the settings and speakers.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from mmflow_audio_f5tts.audio_io import SILENCE_PEAK, normalize_rms, resample, to_mono
from mmflow_audio_f5tts.mel import SAMPLE_RATE, MelSpectrogram
from mmflow_motion_liveportrait.checkpoints import CheckpointError, LivePortraitWeights
from mmflow_motion_liveportrait.extract import extract_motion
from mmflow_motion_liveportrait.face import FaceError
from mmflow_motion_liveportrait.keypoints import NUM_KEYPOINTS
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer
from mmflow_motion_liveportrait.networks import MotionExtractor
from mmflow_motion_liveportrait.plugin import MOTION
from mmflow_motion_liveportrait.video import VideoData, VideoReadError, read_video
from tqdm.auto import tqdm

if TYPE_CHECKING:  # imported where used: `mmflow generate` loads this module and never needs it
    import datasets

from mmflow.io import atomic_path, write_text_atomic

from .corpus import corpus_features, fit_normalizer

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm")
METADATA_FILE = "metadata.csv"
WORK_DIR = ".work"
SHARD_VERSION = 1
"""Bump when what a clip shard holds changes, so old shards are recomputed instead of misread."""
MOTION_FPS = float(MOTION.frame_rate)  # the motion stream's rate (its registered spec)
PROBE_MARGIN_SECONDS = 1.0
"""A container may be this much longer than ``max_seconds`` before it is rejected undecoded (audio and video are
trimmed to the shorter one, so the kept duration can be shorter than the container's)."""

TextConditioning = Literal["filler", "aligned"]
MotionWeights = str | os.PathLike | LivePortraitWeights | MotionExtractor


class ClipError(ValueError):
    """A clip that cannot be used; ``reason`` is a short code for the report (``no_face``, ``no_audio``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Failures that belong to the file itself: cached in the work folder, so a rerun does not decode the file again.
# Duration and transcript failures depend on the settings and are re-checked on every run.
_CACHED_REASONS = frozenset({"unreadable", "no_audio", "silent_audio", "no_face"})


@dataclasses.dataclass(frozen=True)
class Clip:
    """One video of the input folder. ``name``: its path relative to ``input_dir`` (posix), the clip's id."""

    path: Path
    name: str
    text: str | None
    speaker: str


# --------------------------------------------------------------------------------------------------------------
# Finding the clips
# --------------------------------------------------------------------------------------------------------------


def _clean_text(text: str | None) -> str | None:
    """Collapse whitespace (transcripts often span lines); empty → None."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text or None


def _read_transcript(path: Path) -> str | None:
    """A ``.txt`` transcript; bytes that are not UTF-8 become U+FFFD with a warning rather than ending the run."""
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
        logger.warning("%s: not UTF-8 text; undecodable bytes were replaced (save transcripts as UTF-8)", path)
    return _clean_text(text)


def read_metadata(input_dir: Path) -> dict[str, dict[str, str]]:
    """``metadata.csv`` rows by file name (relative to ``input_dir``); empty when there is no such file."""
    path = input_dir / METADATA_FILE
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheet exports start with a BOM
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"file", "text"} <= columns:
            raise ValueError(
                f"{path}: needs a header line with the columns file,text (and optionally speaker); "
                f"found {sorted(columns)}"
            )
        rows = {}
        for row in reader:
            name = Path((row.get("file") or "").strip()).as_posix()
            if name and name != ".":
                rows[name] = row
    return rows


def _is_ignored(path: Path, input_dir: Path, out_dir: Path | None) -> bool:
    """Hidden files and folders (``.work``, macOS ``._clip.mp4`` resource forks) and the output folder are not
    searched for clips."""
    relative = path.relative_to(input_dir)
    if any(part.startswith(".") for part in relative.parts):
        return True
    return out_dir is not None and out_dir in path.parents


def find_clips(input_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Clip]:
    """Every video under ``input_dir`` with its transcript (None when it has none) and speaker, sorted by name."""
    input_dir = Path(input_dir).resolve()
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {str(input_dir)!r} does not exist; pass a folder of video clips")
    out = Path(out_dir).resolve() if out_dir is not None else None
    metadata = read_metadata(input_dir)
    clips = []
    for path in sorted(input_dir.rglob("*")):
        if path.suffix.lower() not in VIDEO_EXTENSIONS or not path.is_file() or _is_ignored(path, input_dir, out):
            continue
        name = path.relative_to(input_dir).as_posix()
        row = metadata.pop(name, None)
        if row is not None:
            text = _clean_text(row.get("text"))
            speaker = (row.get("speaker") or "").strip() or path.parent.name
        else:
            sidecar = path.with_suffix(".txt")
            text = _read_transcript(sidecar) if sidecar.is_file() else None
            speaker = path.parent.name
        clips.append(Clip(path, name, text, speaker))
    for name in metadata:
        logger.warning("%s lists %r, which is not a video under %s; ignoring it", METADATA_FILE, name, input_dir)
    return clips


# --------------------------------------------------------------------------------------------------------------
# One clip: audio + motion (the expensive, cached part)
# --------------------------------------------------------------------------------------------------------------


def _probe_seconds(path: Path) -> float | None:
    """The container's duration without decoding (None when it does not say), so that a stray hour-long file
    is rejected before its frames fill the memory."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise ClipError("unreadable", f"{path}: not a readable video ({error})") from error
    with container:
        if not container.streams.video:
            raise ClipError("unreadable", f"{path}: has no video stream")
        if container.duration is not None:
            return container.duration / av.time_base
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
    return None


def _check_duration(seconds: float, min_seconds: float, max_seconds: float, what: str) -> None:
    if seconds < min_seconds:
        raise ClipError("too_short", f"{what}: {seconds:.2f} s is shorter than min_seconds={min_seconds}")
    if seconds > max_seconds:
        raise ClipError("too_long", f"{what}: {seconds:.2f} s is longer than max_seconds={max_seconds}")


def speech_waveform(data: VideoData, what: str) -> np.ndarray:
    """The video's audio as F5-TTS conditions speech: mono, quiet audio raised to RMS 0.1, 24 kHz."""
    if data.audio is None or data.audio.shape[-1] == 0:
        raise ClipError("no_audio", f"{what}: has no audio stream; clips need the speech with the face")
    mono = to_mono(data.audio)
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise ClipError("silent_audio", f"{what}: the audio is silent (peak {peak:.1e})")
    normalised, _ = normalize_rms(mono)
    return resample(normalised, data.sample_rate, SAMPLE_RATE)


def _weights_folder(weights: MotionWeights) -> LivePortraitWeights | None:
    """The official weights folder (None for an already loaded ``MotionExtractor``)."""
    if isinstance(weights, MotionExtractor):
        return None
    return weights if isinstance(weights, LivePortraitWeights) else LivePortraitWeights(weights)


def _weights_id(weights: MotionWeights) -> str:
    """What identifies the motion weights in a shard's key: the file's path, size and time when known."""
    folder = _weights_folder(weights)
    if folder is None:
        return "in-memory MotionExtractor"
    path = folder.path("motion_extractor")
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


class _ClipProcessor:
    """Turns a clip into its mel and expression; loads the motion extractor only when a clip needs it, so a
    fully resumed run never reads the weights."""

    def __init__(self, weights: MotionWeights, device: str | torch.device, min_seconds: float,
                 max_seconds: float) -> None:
        self.weights, self.device = weights, device
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.mel = MelSpectrogram()
        self._model: MotionExtractor | None = None

    @property
    def model(self) -> MotionExtractor:
        if self._model is None:
            folder = _weights_folder(self.weights)
            self._model = self.weights if folder is None else folder.motion_extractor()
        return self._model

    @torch.no_grad()
    def __call__(self, clip: Clip) -> dict[str, Any]:
        what = clip.name
        probed = _probe_seconds(clip.path)
        if probed is not None:
            _check_duration(probed, 0.0, self.max_seconds + PROBE_MARGIN_SECONDS, what)
        try:
            data = read_video(clip.path, fps=MOTION_FPS)
        except VideoReadError as error:
            raise ClipError("unreadable", str(error)) from error
        wave = speech_waveform(data, what)

        audio_seconds, video_seconds = len(wave) / SAMPLE_RATE, data.num_frames / MOTION_FPS
        seconds = min(audio_seconds, video_seconds)
        if abs(audio_seconds - video_seconds) > 0.2:
            logger.warning("%s: audio lasts %.2f s, video %.2f s; keeping the first %.2f s of both",
                           what, audio_seconds, video_seconds, seconds)
        _check_duration(seconds, self.min_seconds, self.max_seconds, what)
        motion_frames = min(MOTION.num_frames(seconds), data.num_frames)
        wave = wave[: round(seconds * SAMPLE_RATE)]

        try:
            template = extract_motion(VideoData(data.frames[:motion_frames], MOTION_FPS), self.model, device=self.device, progress=False)
        except FaceError as error:
            raise ClipError("no_face", f"{what}: {error}") from error
        mel = self.mel.time_major(torch.from_numpy(np.ascontiguousarray(wave)))[0].numpy()
        return {
            "audio": mel.astype(np.float32),
            "expression": np.asarray(template.exp, dtype=np.float32).reshape(motion_frames, NUM_KEYPOINTS * 3),
            "seconds": float(seconds),
            "audio_seconds": float(audio_seconds),
            "video_seconds": float(video_seconds),
        }


# --------------------------------------------------------------------------------------------------------------
# The work folder: one shard per clip
# --------------------------------------------------------------------------------------------------------------


class _WorkFolder:
    """``<out>/.work/clips/``: ``<id>.npz`` for a processed clip, ``<id>.failed.json`` for a cached failure.

    Each holds the key it was made for (file, size, modification time, weights, shard version); a shard whose
    key no longer matches (the video or the weights changed) is recomputed.
    """

    def __init__(self, out_dir: Path, weights_id: str) -> None:
        self.root = out_dir / WORK_DIR / "clips"
        self.root.mkdir(parents=True, exist_ok=True)
        self.weights_id = weights_id

    def key(self, clip: Clip) -> dict[str, Any]:
        stat = clip.path.stat()
        return {"file": clip.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "weights": self.weights_id, "version": SHARD_VERSION}

    def _stem(self, clip: Clip) -> Path:
        return self.root / hashlib.sha1(clip.name.encode()).hexdigest()[:16]

    def shard_path(self, clip: Clip) -> Path:
        return self._stem(clip).with_suffix(".npz")

    def failure_path(self, clip: Clip) -> Path:
        return self._stem(clip).with_suffix(".failed.json")

    def lookup(self, clip: Clip) -> Path | ClipError | None:
        """The clip's shard, its cached failure, or None when it must be processed."""
        key = self.key(clip)
        shard = self.shard_path(clip)
        if shard.is_file():
            try:
                with np.load(shard, allow_pickle=False) as archive:
                    if json.loads(str(archive["key"])) == key:
                        return shard
            except (OSError, ValueError, KeyError) as error:  # a damaged shard is just redone
                logger.warning("%s: unreadable shard %s (%s); processing the clip again", clip.name, shard, error)
        failure = self.failure_path(clip)
        if failure.is_file():
            try:
                cached = json.loads(failure.read_text())
            except (OSError, ValueError):
                return None
            if cached.get("key") == key:
                return ClipError(cached["reason"], cached["message"])
        return None

    def save(self, clip: Clip, result: dict[str, Any]) -> Path:
        path = self.shard_path(clip)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, key=np.array(json.dumps(self.key(clip))), audio=result["audio"],
                     expression=result["expression"], seconds=np.float64(result["seconds"]),
                     audio_seconds=np.float64(result["audio_seconds"]),
                     video_seconds=np.float64(result["video_seconds"]))
        self.failure_path(clip).unlink(missing_ok=True)
        return path

    def save_failure(self, clip: Clip, error: ClipError) -> None:
        payload = {"key": self.key(clip), "reason": error.reason, "message": str(error)}
        write_text_atomic(self.failure_path(clip), json.dumps(payload, indent=1))


def _load_shard(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as archive:
        return {"audio": archive["audio"], "expression": archive["expression"],
                "seconds": float(archive["seconds"])}


# --------------------------------------------------------------------------------------------------------------
# Text conditioning
# --------------------------------------------------------------------------------------------------------------


class _TextEncoder:
    """``audio_text`` for a transcript: F5 token ids (filler mode, padded by the collator) or one espeak phoneme id
    per mel frame stretched to the clip (aligned mode). Also writes the vocabulary next to the dataset, so the
    recipe's ``pipeline.tokenizer`` can name the same file."""

    def __init__(self, mode: TextConditioning, vocab: str | os.PathLike | None, tokenizer_mode: str,
                 out_dir: Path) -> None:
        from mmflow_audio_f5tts.text import tokenize
        from mmflow_audio_f5tts.tokenizer import F5Tokenizer, PhonemeTokenizer

        self.mode = mode
        if mode == "filler":
            if vocab is None:
                raise ValueError(
                    "text_conditioning='filler' encodes transcripts with an F5-TTS vocabulary: pass vocab= (the "
                    "checkpoint's vocab.txt, `--vocab`), or use text_conditioning='aligned' for espeak phonemes"
                )
            # Unknown characters become the space token as in F5-TTS (the vocabulary logs which ones).
            self.tokenizer = F5Tokenizer.from_vocab_file(vocab, tokenizer_mode=tokenizer_mode, on_unknown="space")
            tokenize("a", mode=tokenizer_mode)  # pinyin without its `zh` extra: fail now, not once per clip
            self.vocab_file = out_dir / "vocab.txt"
            with atomic_path(self.vocab_file) as tmp:
                tmp.write_text("".join(token + "\n" for token in self.tokenizer.vocab.tokens), encoding="utf-8")
            self.source = str(vocab)
        elif mode == "aligned":
            from mmflow_audio_f5tts.phonemes import PhonemeVocab

            self.vocab_file = out_dir / "phonemes.txt"
            with atomic_path(self.vocab_file) as tmp:
                PhonemeVocab().save(tmp)
            self.tokenizer = PhonemeTokenizer(str(self.vocab_file))
            self.source = "espeak phonemes (PhonemeVocab)"
        else:
            raise ValueError(f"text_conditioning must be 'filler' or 'aligned', got {mode!r}")
        for stale in {"vocab.txt", "phonemes.txt"} - {self.vocab_file.name}:  # an earlier run's other mode
            (out_dir / stale).unlink(missing_ok=True)

    def __call__(self, text: str, num_mel_frames: int, what: str) -> np.ndarray:
        if self.mode == "aligned":
            return np.asarray(self.tokenizer.frame_ids(text, num_mel_frames), dtype=np.int64)
        ids = np.asarray(self.tokenizer.encode_text(text), dtype=np.int64)
        if len(ids) > num_mel_frames:  # more characters than mel frames: almost surely the wrong transcript
            raise ClipError("transcript_too_long",
                            f"{what}: {len(ids)} text tokens for {num_mel_frames} mel frames; check the transcript")
        return ids


# --------------------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------------------


def clips_features(normalizer: MotionNormalizer | None = None) -> datasets.Features:
    """Column types of a preprocessed clip set (the synthetic corpus's where they share a name)."""
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    shared = corpus_features(normalizer)
    return datasets.Features({
        **{name: shared[name] for name in ("audio", "audio_text", "motion", "motion_cond", "expression", "text",
                                           "speaker")},
        "speaker_name": datasets.Value("string"),
        "seconds": datasets.Value("float32"),
        "source": datasets.Value("string"),
    })


def _rows(kept: list[dict[str, Any]], state: dict[str, torch.Tensor]) -> Iterator[dict[str, Any]]:
    """Dataset rows, one shard at a time (``Dataset.from_generator`` writes them to disk as they come, so the
    corpus never has to fit in memory)."""
    normalizer = MotionNormalizer()
    normalizer.load_state_dict(state)
    for row in kept:
        shard = _load_shard(Path(row["shard"]))
        expression = torch.from_numpy(shard["expression"]).reshape(-1, NUM_KEYPOINTS, 3)
        mouth, rest = normalizer.normalize(expression)
        yield {
            "audio": shard["audio"],
            "audio_text": row["audio_text"],
            "motion": mouth.numpy().astype(np.float32),
            "motion_cond": rest.numpy().astype(np.float32),
            "expression": shard["expression"],
            "text": row["text"],
            "speaker": row["speaker"],
            "speaker_name": row["speaker_name"],
            "seconds": shard["seconds"],
            "source": row["source"],
        }


def _write_dataset(out_dir: Path, kept: list[dict[str, Any]], normalizer: MotionNormalizer) -> None:
    """Write ``<out>/dataset`` atomically: a crash leaves the previous dataset (or none), never half of one."""
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    state = {k: v.detach().cpu().clone() for k, v in normalizer.state_dict().items()}
    digest = hashlib.sha256(json.dumps([[r["shard"], r["text"], r["speaker"]] for r in kept]).encode())
    for key, value in sorted(state.items()):
        digest.update(key.encode() + value.numpy().tobytes())
    cache = out_dir / WORK_DIR / "arrow"
    shutil.rmtree(cache, ignore_errors=True)
    try:
        dataset = datasets.Dataset.from_generator(
            _rows, features=clips_features(normalizer), cache_dir=str(cache),
            gen_kwargs={"kept": kept, "state": state}, fingerprint=digest.hexdigest()[:16],
        )
        with atomic_path(out_dir / "dataset") as tmp:
            dataset.save_to_disk(str(tmp))
        del dataset
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def load_clips_dataset(out_dir: str | os.PathLike) -> datasets.Dataset:
    """The dataset :func:`preprocess_clips` wrote (``out_dir`` or its ``dataset/`` folder).

    As a trainer data source: ``data: {path: <out>/dataset}``, or
    ``data: {source: "mmflow_jamflow.data.preprocess:load_clips_dataset", kwargs: {out_dir: <out>}}``.
    """
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    path = Path(out_dir)
    if not (path / "dataset_info.json").is_file() and (path / "dataset").is_dir():
        path = path / "dataset"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no preprocessed clips at {str(out_dir)!r}; run `mmflow preprocess INPUT --out {out_dir} ...` first"
        )
    return datasets.load_from_disk(str(path))


def _skip(skipped: list[dict[str, str]], clip: Clip, error: ClipError) -> None:
    skipped.append({"file": clip.name, "reason": error.reason, "message": str(error)})
    logger.warning("skipping %s (%s): %s", clip.name, error.reason, error)


def preprocess_clips(
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    liveportrait_weights: MotionWeights,
    *,
    vocab: str | os.PathLike | None = None,
    text_conditioning: TextConditioning = "filler",
    tokenizer_mode: str = "pinyin",
    min_seconds: float = 1.0,
    max_seconds: float = 30.0,
    normalizer: MotionNormalizer | str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> datasets.Dataset:
    """A folder of talking-face clips → ``<out_dir>/dataset`` in the synthetic corpus's layout (module docstring).

    Args:
        input_dir: Videos with transcripts (``<stem>.txt`` or ``metadata.csv``), searched recursively.
        out_dir: Output folder; ``.work/`` inside it holds the per-clip results a rerun reuses.
        liveportrait_weights: The official LivePortrait weights folder (only ``base_models/motion_extractor.pth``
            is read), a ``LivePortraitWeights`` or a loaded ``MotionExtractor``.
        vocab: The F5-TTS checkpoint's ``vocab.txt`` (filler mode: ``audio_text`` holds the transcript's ids).
        text_conditioning: ``"filler"`` (F5-TTS's own) or ``"aligned"`` (espeak phoneme id per mel frame,
            stretched to the clip; for models with ``text_conditioning: aligned``).
        tokenizer_mode: F5-TTS tokenizer convention, ``"pinyin"`` (the released models) or ``"char"``.
        min_seconds / max_seconds: Clips outside this range (after trimming audio and video to the shorter one)
            are skipped.
        normalizer: Use this ``MotionNormalizer`` (or saved folder), e.g. a pretrained pipeline's to fine-tune
            it, instead of fitting one on the kept clips.
        device: Where the motion extractor runs.
        progress: Show a progress bar.

    Returns the dataset (loaded from disk). Raises ``ValueError`` when no clip survives (see ``report.json``).
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    clips = find_clips(input_dir, out_dir)
    if not clips:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {input_dir}")
    folder = _weights_folder(liveportrait_weights)
    if folder is not None and not folder.path("motion_extractor").is_file():  # fail before any clip, not per clip
        raise FileNotFoundError(
            f"no LivePortrait motion extractor at {folder.path('motion_extractor')}; pass the official weights "
            f"folder (pretrained_weights/liveportrait, with base_models/motion_extractor.pth)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    text_encoder = _TextEncoder(text_conditioning, vocab, tokenizer_mode, out_dir)
    work = _WorkFolder(out_dir, _weights_id(liveportrait_weights))
    processor = _ClipProcessor(liveportrait_weights, device, min_seconds, max_seconds)

    shards: dict[str, Path] = {}
    skipped: list[dict[str, str]] = []
    reused = 0
    bar = tqdm(clips, desc="preprocessing clips", unit="clip", disable=not progress)
    for clip in bar:
        if clip.text is None:
            _skip(skipped, clip, ClipError("missing_transcript",
                                           f"{clip.name}: no transcript ({Path(clip.name).stem}.txt or a row of "
                                           f"{METADATA_FILE})"))
            continue
        found = work.lookup(clip)
        if isinstance(found, ClipError):
            _skip(skipped, clip, found)
            continue
        if found is not None:
            shards[clip.name], reused = found, reused + 1
            continue
        try:
            shards[clip.name] = work.save(clip, processor(clip))
        except ClipError as error:
            if error.reason in _CACHED_REASONS:
                work.save_failure(clip, error)
            _skip(skipped, clip, error)
        except CheckpointError:  # damaged weights fail every clip: stop now with the loader's message
            raise
        except Exception as error:  # noqa: BLE001 - one odd file must not end a long run; it is retried next time
            logger.exception("%s: unexpected error", clip.name)
            _skip(skipped, clip, ClipError("error", f"{clip.name}: {type(error).__name__}: {error}"))
        bar.set_postfix(kept=len(shards), skipped=len(skipped))
    bar.close()
    logger.info("%d clip(s) ready (%d from earlier runs), %d skipped", len(shards), reused, len(skipped))

    # Assembly: settings-dependent checks (duration, transcript) on every run, then the normaliser and rows.
    by_name = {clip.name: clip for clip in clips}
    kept, expressions = [], []
    for name, shard_path in shards.items():
        clip = by_name[name]
        shard = _load_shard(shard_path)
        try:
            _check_duration(shard["seconds"], min_seconds, max_seconds, name)
            audio_text = text_encoder(clip.text, len(shard["audio"]), name)
        except ClipError as error:
            _skip(skipped, clip, error)
            continue
        kept.append({"shard": str(shard_path), "source": name, "text": clip.text, "speaker_name": clip.speaker,
                     "audio_text": audio_text, "seconds": shard["seconds"]})
        expressions.append(shard["expression"])

    report = {
        "input_dir": str(input_dir.resolve()),
        "clips": len(clips),
        "kept": len(kept),
        "skipped": len(skipped),
        "reasons": dict(Counter(s["reason"] for s in skipped)),
        "hours": sum(row["seconds"] for row in kept) / 3600,
        "kept_files": [row["source"] for row in kept],
        "skipped_files": sorted(skipped, key=lambda s: s["file"]),
    }
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2))
    if not kept:
        reasons = ", ".join(f"{count} {reason}" for reason, count in report["reasons"].items())
        raise ValueError(f"none of the {len(clips)} clip(s) under {input_dir} could be used ({reasons}); "
                         f"see {out_dir / 'report.json'} for each clip's reason")

    speakers = sorted({row["speaker_name"] for row in kept})
    for row in kept:
        row["speaker"] = speakers.index(row["speaker_name"])
    if normalizer is None:
        normalizer = fit_normalizer(expressions)
    elif not isinstance(normalizer, MotionNormalizer):
        normalizer = MotionNormalizer.from_pretrained(normalizer)
    del expressions
    with atomic_path(out_dir / "normalizer") as tmp:
        normalizer.save_pretrained(str(tmp))
    _write_dataset(out_dir, kept, normalizer)
    settings = {
        "text_conditioning": text_conditioning,
        "vocab": text_encoder.source,
        "vocab_file": text_encoder.vocab_file.name,
        "tokenizer_mode": tokenizer_mode if text_conditioning == "filler" else None,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "motion_fps": MOTION_FPS,
        "speakers": speakers,
    }
    write_text_atomic(out_dir / "preprocess.json", json.dumps(settings, indent=2))
    logger.info("wrote %d clip(s), %.2f h, %d speaker(s) to %s (%d skipped, see report.json)",
                len(kept), report["hours"], len(speakers), out_dir / "dataset", len(skipped))
    return load_clips_dataset(out_dir)


# --------------------------------------------------------------------------------------------------------------
# Command line: `mmflow preprocess`
# --------------------------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset = preprocess_clips(
        args.input, args.out, args.liveportrait_weights, vocab=args.vocab, text_conditioning=args.text_conditioning,
        tokenizer_mode=args.tokenizer, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
        normalizer=args.normalizer, device=args.device,
    )
    print(f"{len(dataset)} clips -> {Path(args.out) / 'dataset'}")
    return 0


def add_preprocess(subparsers) -> None:
    """``mmflow preprocess``: a folder of talking-face clips → a JAM-Flow training set."""
    parser = subparsers.add_parser(
        "preprocess",
        help="turn a folder of talking-face videos + transcripts into a JAM-Flow training dataset",
        description="Videos (.mp4/.mov/.mkv/.webm) with <stem>.txt transcripts or a metadata.csv (file,text"
        "[,speaker]); the speaker is the CSV column or the video's folder name. Writes OUT/dataset (train with "
        "`data: {path: OUT/dataset}`), OUT/normalizer and OUT/report.json. Rerunning resumes.",
    )
    parser.add_argument("input", help="folder of video clips")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--liveportrait-weights", required=True,
                        help="official LivePortrait weights folder (pretrained_weights/liveportrait)")
    parser.add_argument("--vocab", help="F5-TTS vocab.txt (filler text conditioning)")
    parser.add_argument("--text-conditioning", default="filler", choices=["filler", "aligned"])
    parser.add_argument("--tokenizer", default="pinyin", choices=["pinyin", "char"],
                        help="F5-TTS tokenizer convention (filler mode)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--normalizer", help="saved MotionNormalizer folder to use instead of fitting one")
    parser.add_argument("--device", default="cpu", help="device of the motion extractor (cpu, cuda)")
    parser.set_defaults(run=_run)
