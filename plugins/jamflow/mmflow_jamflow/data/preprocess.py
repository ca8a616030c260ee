"""Your own talking-face clips (or speech) → a JAM-Flow training set in the synthetic corpus's layout (``corpus.py``).

Why: the synthetic corpus teaches the model espeak speech and a procedural face; real speech and real faces need
real clips. This module turns a folder of videos with transcripts into the same rows, so ``recipes/jamflow.py``
trains on them with ``data: {path: <out>/dataset}`` and nothing else changes.

Input convention (``input_dir``, searched recursively; hidden folders and ``out_dir`` are ignored):

* videos ``*.mp4``, ``*.mov``, ``*.mkv``, ``*.webm`` with speech in their first audio stream, or audio files
  (``*.wav``, ``*.flac``, ``*.mp3``, ...) for a speech-only set;
* the transcript of ``clip.mp4`` in ``clip.txt`` next to it, or a row of ``input_dir/metadata.csv`` or
  ``metadata.jsonl`` (``datasets``' audiofolder / videofolder layout: a ``file`` or ``file_name`` column relative to
  ``input_dir``, a transcript column ``text`` / ``transcription`` / ``sentence`` or the one named, optionally
  ``speaker``; the metadata wins over a ``.txt``);
* the speaker: the CSV's ``speaker`` column when given, else the name of the folder holding the video
  (``alice/clip1.mp4`` → ``alice``). Speakers are numbered in sorted order in the ``speaker`` column;
  ``speaker_name`` keeps the name.

Per clip: the video is decoded once at 25 frames/s (``read_video``); its audio is made mono, raised to F5-TTS's
RMS (``normalize_rms``, as F5 does for references) and resampled to 24 kHz; audio and video are trimmed to the
shorter of the two, so the log-mel (93.75 frames/s) and the motion (25 frames/s) cover the same seconds; the
LivePortrait motion extractor gives the expression of every frame (``extract_motion``).

``preprocess_dataset`` does the same for the rows of a ``datasets`` dataset (``rows.py`` turns them into clips).
Input without any video makes an audio-only set (no motion columns, no normaliser), because JAM-Flow's ``tts``
task leaves motion absent (``audio_only_allowed``); in a set with videos, audio-only clips are skipped
(``no_video``).

Resumable: each clip's expensive part (mel + expression, or why it failed) goes to one ``.npz`` / ``.json`` file in
``<out>/.work/clips/``, keyed by the video's path, size and modification time and by the motion weights. A rerun
skips those clips; text conditioning, duration limits and the normaliser are applied when the dataset is
assembled, so changing them re-assembles without re-extracting motion.

Output (``out_dir``):

* ``dataset/``: ``datasets.Dataset.save_to_disk`` folder (written to a temporary name, then renamed; as
  ``num_shards`` Arrow files or files of ``max_shard_size``) with
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
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
METADATA_FILE = "metadata.csv"
METADATA_JSONL = "metadata.jsonl"  # the other metadata file of datasets' audiofolder / videofolder layout
FILE_COLUMNS = ("file", "file_name")  # ours, datasets' folder layout
TEXT_COLUMNS = ("text", "transcription", "sentence")
"""Transcript column names tried in this order when none is given (datasets' speech sets use all three)."""
WORK_DIR = ".work"
SHARD_VERSION = 1
AUDIO_ONLY = "audio-only"
"""The motion-weights id of an audio-only clip's shard: no weights are involved, so changing them keeps it."""
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
    """One video or audio clip. ``name``: its path relative to ``input_dir`` (posix) or its dataset row, the
    clip's id. ``waveform``: in-memory audio ``(samples,)`` or ``(channels, samples)`` and its rate instead of a
    file (a dataset row's ``{array, sampling_rate}``); ``digest``: what identifies the content when the file's
    path, size and time do not (a row's bytes)."""

    path: Path | None
    name: str
    text: str | None
    speaker: str
    waveform: tuple[np.ndarray, int] | None = dataclasses.field(default=None, compare=False, repr=False)
    digest: str | None = None
    kind: Literal["video", "audio"] | None = None  # None: by the file's extension

    @property
    def has_video(self) -> bool:
        if self.kind is not None:
            return self.kind == "video"
        return self.path is not None and self.path.suffix.lower() in VIDEO_EXTENSIONS


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


def pick_text_column(columns, text_column: str | None, where: str) -> str:
    """The transcript column: ``text_column`` when given, else the first of ``TEXT_COLUMNS`` present."""
    if text_column is not None:
        if text_column not in columns:
            raise ValueError(f"{where}: has no transcript column {text_column!r}; its columns are {sorted(columns)}")
        return text_column
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    raise ValueError(f"{where}: needs a transcript column ({', '.join(TEXT_COLUMNS)}, or name yours with "
                     f"text_column= / --text-column); found {sorted(columns)}")


def _metadata_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of ``metadata.csv`` or ``metadata.jsonl``."""
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise ValueError(f"{path}, line {number}: not JSON ({error})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}, line {number}: expected a JSON object per line")
                records.append(record)
        return records, sorted({key for record in records for key in record})
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheet exports start with a BOM
        reader = csv.DictReader(handle)
        return list(reader), list(reader.fieldnames or [])


def read_metadata(input_dir: Path, text_column: str | None = None) -> dict[str, dict[str, str]]:
    """``metadata.csv`` / ``metadata.jsonl`` rows by file name (relative to ``input_dir``), each with its
    transcript under ``text``; empty when there is no such file. The file column is ``file`` or datasets'
    ``file_name``; the transcript column ``text_column`` or the first of ``TEXT_COLUMNS``."""
    found = [input_dir / name for name in (METADATA_FILE, METADATA_JSONL) if (input_dir / name).is_file()]
    if not found:
        return {}
    if len(found) > 1:
        raise ValueError(f"{input_dir}: has both {METADATA_FILE} and {METADATA_JSONL}; keep one")
    path = found[0]
    records, columns = _metadata_records(path)
    file_column = next((name for name in FILE_COLUMNS if name in columns), None)
    if file_column is None:
        raise ValueError(f"{path}: needs a file column ({' or '.join(FILE_COLUMNS)}) and a transcript column "
                         f"({', '.join(TEXT_COLUMNS)}), and optionally speaker; found {sorted(columns)}")
    text = pick_text_column(columns, text_column, str(path))
    rows = {}
    for row in records:
        name = Path(str(row.get(file_column) or "").strip()).as_posix()
        if name and name != ".":
            value = row.get(text)
            rows[name] = {**row, "text": None if value is None else str(value)}
    return rows


def _is_ignored(path: Path, input_dir: Path, out_dir: Path | None) -> bool:
    """Hidden files and folders (``.work``, macOS ``._clip.mp4`` resource forks) and the output folder are not
    searched for clips."""
    relative = path.relative_to(input_dir)
    if any(part.startswith(".") for part in relative.parts):
        return True
    return out_dir is not None and out_dir in path.parents


def find_clips(input_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               text_column: str | None = None) -> list[Clip]:
    """Every video or audio file under ``input_dir`` with its transcript (None when it has none) and speaker,
    sorted by name."""
    input_dir = Path(input_dir).resolve()
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {str(input_dir)!r} does not exist; pass a folder of video clips")
    out = Path(out_dir).resolve() if out_dir is not None else None
    metadata = read_metadata(input_dir, text_column)
    clips = []
    media = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
    for path in sorted(input_dir.rglob("*")):
        if path.suffix.lower() not in media or not path.is_file() or _is_ignored(path, input_dir, out):
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
        logger.warning("the metadata lists %r, which is not a clip under %s; ignoring it", name, input_dir)
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
    return _speech(data.audio, data.sample_rate, what)


def _speech(audio: np.ndarray, sample_rate: int, what: str) -> np.ndarray:
    """``speech_waveform`` of any audio array (``(samples,)`` or ``(channels, samples)``)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise ClipError("no_audio", f"{what}: the audio has no samples")
    if not np.all(np.isfinite(audio)):
        raise ClipError("unreadable", f"{what}: the audio holds NaN or infinite samples")
    mono = to_mono(audio)
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise ClipError("silent_audio", f"{what}: the audio is silent (peak {peak:.1e})")
    normalised, _ = normalize_rms(mono)
    return resample(normalised, sample_rate, SAMPLE_RATE)


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

    def _audio_only(self, clip: Clip) -> dict[str, Any]:
        """A clip without video: its speech's mel, no expression."""
        from mmflow_audio_f5tts.audio_io import AudioInputError, read_audio

        if clip.waveform is not None:
            audio, rate = clip.waveform
        else:
            try:
                audio, rate = read_audio(clip.path)
            except (AudioInputError, OSError) as error:
                raise ClipError("unreadable", f"{clip.name}: not readable audio ({error})") from error
        wave = _speech(audio, int(rate), clip.name)
        seconds = len(wave) / SAMPLE_RATE
        _check_duration(seconds, self.min_seconds, self.max_seconds, clip.name)
        mel = self.mel.time_major(torch.from_numpy(np.ascontiguousarray(wave)))[0].numpy()
        return {"audio": mel.astype(np.float32), "expression": None, "seconds": float(seconds),
                "audio_seconds": float(seconds), "video_seconds": 0.0}

    @torch.no_grad()
    def __call__(self, clip: Clip) -> dict[str, Any]:
        if not clip.has_video:
            return self._audio_only(clip)
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
        weights = self.weights_id if clip.has_video else AUDIO_ONLY
        if clip.digest is not None:
            return {"file": clip.name, "content": clip.digest, "weights": weights, "version": SHARD_VERSION}
        stat = clip.path.stat()
        return {"file": clip.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "weights": weights, "version": SHARD_VERSION}

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
        expression = {} if result["expression"] is None else {"expression": result["expression"]}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, key=np.array(json.dumps(self.key(clip))), audio=result["audio"],
                     **expression, seconds=np.float64(result["seconds"]),
                     audio_seconds=np.float64(result["audio_seconds"]),
                     video_seconds=np.float64(result["video_seconds"]))
        self.failure_path(clip).unlink(missing_ok=True)
        return path

    def save_failure(self, clip: Clip, error: ClipError) -> None:
        payload = {"key": self.key(clip), "reason": error.reason, "message": str(error)}
        write_text_atomic(self.failure_path(clip), json.dumps(payload, indent=1))


def _load_shard(path: Path) -> dict[str, Any]:
    """A clip shard; ``expression`` is None for an audio-only clip."""
    with np.load(path, allow_pickle=False) as archive:
        expression = archive["expression"] if "expression" in archive.files else None
        return {"audio": archive["audio"], "expression": expression, "seconds": float(archive["seconds"])}


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


def clips_features(normalizer: MotionNormalizer | None = None, audio_only: bool = False) -> datasets.Features:
    """Column types of a preprocessed clip set (the synthetic corpus's where they share a name); without the
    motion columns for ``audio_only`` rows."""
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    shared = corpus_features(normalizer)
    streams = ("audio", "audio_text") if audio_only else ("audio", "audio_text", "motion", "motion_cond",
                                                          "expression")
    return datasets.Features({
        **{name: shared[name] for name in (*streams, "text", "speaker")},
        "speaker_name": datasets.Value("string"),
        "seconds": datasets.Value("float32"),
        "source": datasets.Value("string"),
    })


def _rows(kept: list[dict[str, Any]], state: dict[str, torch.Tensor] | None) -> Iterator[dict[str, Any]]:
    """Dataset rows, one shard at a time (``Dataset.from_generator`` writes them to disk as they come, so the
    corpus never has to fit in memory). ``state``: the motion normaliser's (None: audio-only rows)."""
    normalizer = None
    if state is not None:
        normalizer = MotionNormalizer()
        normalizer.load_state_dict(state)
    for row in kept:
        shard = _load_shard(Path(row["shard"]))
        motion = {}
        if normalizer is not None:
            expression = torch.from_numpy(shard["expression"]).reshape(-1, NUM_KEYPOINTS, 3)
            mouth, rest = normalizer.normalize(expression)
            motion = {"motion": mouth.numpy().astype(np.float32), "motion_cond": rest.numpy().astype(np.float32),
                      "expression": shard["expression"]}
        yield {"audio": shard["audio"], "audio_text": row["audio_text"], **motion, "text": row["text"],
               "speaker": row["speaker"], "speaker_name": row["speaker_name"], "seconds": shard["seconds"],
               "source": row["source"]}


def _write_dataset(out_dir: Path, kept: list[dict[str, Any]], normalizer: MotionNormalizer | None,
                   num_shards: int | None = None, max_shard_size: str | int | None = None) -> None:
    """Write ``<out>/dataset`` atomically, as ``num_shards`` Arrow files (or files of ``max_shard_size``): a crash
    leaves the previous dataset (or none), never half of one. ``normalizer`` None: audio-only rows."""
    import datasets  # here, not at the top: `mmflow generate` loads this module and never needs it
    state = None if normalizer is None else {k: v.detach().cpu().clone() for k, v in normalizer.state_dict().items()}
    digest = hashlib.sha256(json.dumps([[r["shard"], r["text"], r["speaker"]] for r in kept]).encode())
    for key, value in sorted((state or {}).items()):
        digest.update(key.encode() + value.numpy().tobytes())
    cache = out_dir / WORK_DIR / "arrow"
    shutil.rmtree(cache, ignore_errors=True)
    try:
        dataset = datasets.Dataset.from_generator(
            _rows, features=clips_features(normalizer, audio_only=normalizer is None), cache_dir=str(cache),
            gen_kwargs={"kept": kept, "state": state}, fingerprint=digest.hexdigest()[:16],
        )
        shards = None if num_shards is None else min(num_shards, len(dataset))
        with atomic_path(out_dir / "dataset") as tmp:
            dataset.save_to_disk(str(tmp), num_shards=shards, max_shard_size=max_shard_size)
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


def audio_only_allowed() -> bool:
    """Whether JAM-Flow's task presets let the motion stream be absent (its ``tts`` task does): only then may a
    training set hold speech without faces."""
    from .. import plugin

    return any("motion" in task.absent and "audio" in task.generate for task in plugin.mmflow_tasks())


def _check_inputs(clips: list[Clip], weights: MotionWeights | None) -> bool:
    """True for a talking-face set (some clip has video), False for an audio-only one; refuses what cannot work
    before any clip is processed."""
    has_video = any(clip.has_video for clip in clips)
    if not has_video and not audio_only_allowed():
        raise ValueError("the input has audio but no video, and JAM-Flow's task presets need motion with every "
                         "clip (no task leaves it absent); give videos of the speaker's face")
    if has_video:
        folder = None if weights is None else _weights_folder(weights)
        if weights is None or (folder is not None and not folder.path("motion_extractor").is_file()):
            where = "none was given" if weights is None else f"no file at {folder.path('motion_extractor')}"
            raise FileNotFoundError(
                f"video clips need the LivePortrait motion extractor ({where}); pass the official weights folder "
                f"(pretrained_weights/liveportrait, with base_models/motion_extractor.pth) as liveportrait_weights / "
                f"--liveportrait-weights"
            )
    return has_video


def _process(clips: list[Clip], work: _WorkFolder, processor: _ClipProcessor, has_video: bool,
             skipped: list[dict[str, str]], progress: bool) -> dict[str, Path]:
    """Each clip's shard (made now or by an earlier run); clips that fail are added to ``skipped``."""
    shards: dict[str, Path] = {}
    reused = 0
    bar = tqdm(clips, desc="preprocessing clips", unit="clip", disable=not progress)
    for clip in bar:
        if clip.text is None:
            where = "its row" if clip.path is None else f"{Path(clip.name).stem}.txt or a row of the metadata"
            _skip(skipped, clip, ClipError("missing_transcript", f"{clip.name}: no transcript ({where})"))
            continue
        if has_video and not clip.has_video:
            _skip(skipped, clip, ClipError("no_video", f"{clip.name}: audio without video in a talking-face set; "
                                                       f"preprocess audio-only clips on their own"))
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
    return shards


def _preprocess(clips: list[Clip], out_dir: Path, source: str, liveportrait_weights: MotionWeights | None, *,
                skipped: list[dict[str, str]], vocab: str | os.PathLike | None = None,
                text_conditioning: TextConditioning = "filler", tokenizer_mode: str = "pinyin",
                min_seconds: float = 1.0, max_seconds: float = 30.0,
                normalizer: MotionNormalizer | str | os.PathLike | None = None, device: str | torch.device = "cpu",
                progress: bool = True, num_shards: int | None = None,
                max_shard_size: str | int | None = None) -> datasets.Dataset:
    """Clips (from a folder or a dataset) → ``<out_dir>/dataset``; ``skipped`` holds rows already refused. The
    settings are :func:`preprocess_clips`'s."""
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    has_video = _check_inputs(clips, liveportrait_weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_encoder = _TextEncoder(text_conditioning, vocab, tokenizer_mode, out_dir)
    weights_id = _weights_id(liveportrait_weights) if has_video else AUDIO_ONLY
    work = _WorkFolder(out_dir, weights_id)
    processor = _ClipProcessor(liveportrait_weights, device, min_seconds, max_seconds)
    shards = _process(clips, work, processor, has_video, skipped, progress)

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
        if has_video:
            expressions.append(shard["expression"])

    total = len(clips) + sum(1 for s in skipped if s["file"] not in by_name)  # rows refused before any clip
    report = {
        "input": source,
        "clips": total,
        "kept": len(kept),
        "skipped": len(skipped),
        "streams": ["audio", "motion"] if has_video else ["audio"],
        "reasons": dict(Counter(s["reason"] for s in skipped)),
        "hours": sum(row["seconds"] for row in kept) / 3600,
        "kept_files": [row["source"] for row in kept],
        "skipped_files": sorted(skipped, key=lambda s: s["file"]),
    }
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2))
    if not kept:
        reasons = ", ".join(f"{count} {reason}" for reason, count in report["reasons"].items())
        raise ValueError(f"none of the {total} clip(s) of {source} could be used ({reasons}); "
                         f"see {out_dir / 'report.json'} for each clip's reason")

    speakers = sorted({row["speaker_name"] for row in kept})
    for row in kept:
        row["speaker"] = speakers.index(row["speaker_name"])
    if not has_video:
        normalizer = None  # speech only: no motion to normalise
    elif normalizer is None:
        normalizer = fit_normalizer(expressions)
    elif not isinstance(normalizer, MotionNormalizer):
        normalizer = MotionNormalizer.from_pretrained(normalizer)
    del expressions
    if normalizer is not None:
        with atomic_path(out_dir / "normalizer") as tmp:
            normalizer.save_pretrained(str(tmp))
    _write_dataset(out_dir, kept, normalizer, num_shards, max_shard_size)
    settings = {
        "text_conditioning": text_conditioning,
        "vocab": text_encoder.source,
        "vocab_file": text_encoder.vocab_file.name,
        "tokenizer_mode": tokenizer_mode if text_conditioning == "filler" else None,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "motion_fps": MOTION_FPS if has_video else None,
        "streams": report["streams"],
        "speakers": speakers,
    }
    write_text_atomic(out_dir / "preprocess.json", json.dumps(settings, indent=2))
    logger.info("wrote %d clip(s), %.2f h, %d speaker(s) to %s (%d skipped, see report.json)",
                len(kept), report["hours"], len(speakers), out_dir / "dataset", len(skipped))
    return load_clips_dataset(out_dir)


def preprocess_clips(
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    liveportrait_weights: MotionWeights | None = None,
    *,
    vocab: str | os.PathLike | None = None,
    text_conditioning: TextConditioning = "filler",
    tokenizer_mode: str = "pinyin",
    min_seconds: float = 1.0,
    max_seconds: float = 30.0,
    normalizer: MotionNormalizer | str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    text_column: str | None = None,
    num_shards: int | None = None,
    max_shard_size: str | int | None = None,
) -> datasets.Dataset:
    """A folder of talking-face clips (or of speech only) → ``<out_dir>/dataset`` (module docstring).

    Args:
        input_dir: Videos or audio files with transcripts (``<stem>.txt``, or ``metadata.csv`` /
            ``metadata.jsonl`` in ``datasets``' audiofolder/videofolder layout), searched recursively.
        out_dir: Output folder; ``.work/`` inside it holds the per-clip results a rerun reuses.
        liveportrait_weights: The official LivePortrait weights folder (only ``base_models/motion_extractor.pth``
            is read), a ``LivePortraitWeights`` or a loaded ``MotionExtractor``; not needed for audio-only input.
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
        text_column: The metadata's transcript column (default: the first of ``text``, ``transcription``,
            ``sentence``).
        num_shards / max_shard_size: How ``save_to_disk`` splits the dataset into Arrow files.

    Returns the dataset (loaded from disk). Raises ``ValueError`` when no clip survives (see ``report.json``).
    Audio files without video make an audio-only set (no motion columns; JAM-Flow's ``tts`` task leaves
    motion absent); in a folder with videos they are skipped as ``no_video``.
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    clips = find_clips(input_dir, out_dir, text_column)
    if not clips:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or audio files "
                         f"({', '.join(AUDIO_EXTENSIONS)}) found under {input_dir}")
    return _preprocess(clips, out_dir, str(input_dir.resolve()), liveportrait_weights, skipped=[], vocab=vocab,
                       text_conditioning=text_conditioning, tokenizer_mode=tokenizer_mode, min_seconds=min_seconds,
                       max_seconds=max_seconds, normalizer=normalizer, device=device, progress=progress,
                       num_shards=num_shards, max_shard_size=max_shard_size)


def preprocess_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    out_dir: str | os.PathLike,
    liveportrait_weights: MotionWeights | None = None,
    *,
    split: str | None = None,
    text_column: str | None = None,
    speaker_column: str = "speaker",
    **settings,
) -> datasets.Dataset:
    """A ``datasets`` dataset of (video or audio, transcript) rows → ``<out_dir>/dataset``, as
    :func:`preprocess_clips` does for a folder (same output, resume and report).

    Rows: a ``video`` column (video files: a path, or datasets' ``{path, bytes}``) or an ``audio`` column
    (datasets' ``Audio`` values: ``{array, sampling_rate}``, ``{path}`` or ``{bytes}``; or a path), and a
    transcript column (``text_column``, default the first of ``text``, ``transcription``, ``sentence``). The
    speaker is ``speaker_column`` when the rows have it. A ``DatasetDict`` needs ``split`` (default ``train``).
    Rows without usable media or text are reported in ``report.json`` (as ``row-<index>``), not fatal.
    ``settings``: :func:`preprocess_clips`'s keyword arguments (``vocab``, ``text_conditioning``, ``min_seconds``,
    ``num_shards``...).
    """
    from .rows import dataset_clips

    out_dir = Path(out_dir)
    clips, skipped, source = dataset_clips(dataset, out_dir / WORK_DIR / "media", split=split,
                                           text_column=text_column, speaker_column=speaker_column)
    if not clips:
        raise ValueError(f"{source}: none of its {len(skipped)} row(s) has usable media; "
                         f"reasons: {dict(Counter(s['reason'] for s in skipped))}")
    return _preprocess(clips, out_dir, source, liveportrait_weights, skipped=skipped, **settings)


# --------------------------------------------------------------------------------------------------------------
# Command line: `mmflow preprocess`
# --------------------------------------------------------------------------------------------------------------


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = dict(vocab=args.vocab, text_conditioning=args.text_conditioning, tokenizer_mode=args.tokenizer,
                   min_seconds=args.min_seconds, max_seconds=args.max_seconds, normalizer=args.normalizer,
                   device=args.device, text_column=args.text_column, num_shards=args.num_shards,
                   max_shard_size=args.max_shard_size)
    source = Path(args.input)
    if _is_saved_dataset(source):
        import datasets

        dataset = preprocess_dataset(datasets.load_from_disk(str(source)), args.out, args.liveportrait_weights,
                                     split=args.split, **options)
    else:
        if args.split is not None:
            raise ValueError(f"--split is for a saved dataset; {source} is a folder of clips")
        dataset = preprocess_clips(source, args.out, args.liveportrait_weights, **options)
    print(f"{len(dataset)} clips -> {Path(args.out) / 'dataset'}")
    return 0


def add_preprocess(subparsers) -> None:
    """``mmflow preprocess``: a folder of talking-face clips, or a saved ``datasets`` dataset → a JAM-Flow
    training set."""
    parser = subparsers.add_parser(
        "preprocess",
        help="turn talking-face videos (or speech) + transcripts into a JAM-Flow training dataset",
        description="INPUT is a folder of videos (.mp4/.mov/.mkv/.webm) or audio files (.wav/.flac/.mp3/...) with "
        "<stem>.txt transcripts or a metadata.csv / metadata.jsonl (datasets' audiofolder layout: file_name and a "
        "text/transcription/sentence column, optionally speaker), or a dataset saved with save_to_disk (an audio or "
        "video column and a transcript column). Audio without video makes an audio-only (TTS) set. Writes "
        "OUT/dataset (train with `data: {path: OUT/dataset}`), OUT/normalizer and OUT/report.json. Rerunning "
        "resumes.",
    )
    parser.add_argument("input", help="folder of clips, or a saved datasets folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--liveportrait-weights",
                        help="official LivePortrait weights folder (pretrained_weights/liveportrait); needed for video")
    parser.add_argument("--vocab", help="F5-TTS vocab.txt (filler text conditioning)")
    parser.add_argument("--text-conditioning", default="filler", choices=["filler", "aligned"])
    parser.add_argument("--tokenizer", default="pinyin", choices=["pinyin", "char"],
                        help="F5-TTS tokenizer convention (filler mode)")
    parser.add_argument("--text-column", help="transcript column (default: text, transcription or sentence)")
    parser.add_argument("--split", help="split of a saved DatasetDict (default: train)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--normalizer", help="saved MotionNormalizer folder to use instead of fitting one")
    parser.add_argument("--device", default="cpu", help="device of the motion extractor (cpu, cuda)")
    parser.add_argument("--num-shards", type=int, help="Arrow files the dataset is written as")
    parser.add_argument("--max-shard-size", help="largest Arrow file, e.g. 500MB (instead of --num-shards)")
    parser.set_defaults(run=_run)
