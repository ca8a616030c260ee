"""The rows of a ``datasets`` dataset as clips for ``preprocess``: where each row's video or speech is, and its
transcript and speaker.

Why a module of its own: a dataset row holds its media in one of several shapes (datasets' ``Audio`` / ``Video``
values ``{array, sampling_rate}``, ``{path, bytes}``, or a plain path), and rows fail in their own ways (no
media, a missing file, no text); this turns every shape into a ``Clip`` the folder path already knows how to
process, and every failure into a reported row.

Media columns are read undecoded (``cast_column(..., decode=False)``): datasets 5.x decodes audio and video
with torchcodec, which mmflow does not need, and the raw bytes or path are what the shard key is made from.
Bytes are written once to ``<out>/.work/media/<sha1>.<ext>`` (the video reader and the audio reader take
files); in-memory arrays stay in memory. Each clip's ``digest`` identifies its content, so a rerun skips the
rows already done and redoes a row whose media changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmflow.io import atomic_path

from .preprocess import Clip, ClipError, pick_text_column

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

MEDIA_COLUMNS = ("video", "audio")
"""Tried in this order: a video column makes a talking-face set, an audio column alone a speech-only one."""


def _select_split(dataset, split: str | None):
    """The split to read: ``split`` of a ``DatasetDict`` (default ``train``); a plain ``Dataset`` as it is."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        name = split or "train"
        if name not in dataset:
            raise ValueError(f"the dataset has no split {name!r}; pass split= / --split, one of {sorted(dataset)}")
        return dataset[name], name
    if isinstance(dataset, datasets.IterableDataset):
        raise TypeError("preprocess needs a map-style datasets.Dataset (rows are numbered for the report and the "
                        "resume); load it without streaming=True")
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    return dataset, split


def _undecoded(dataset, column: str):
    """``dataset`` with ``column`` read as ``{path, bytes}`` when it is an Audio/Video feature."""
    import datasets

    feature = dataset.features[column]
    if isinstance(feature, (datasets.Audio, datasets.Video)) and feature.decode:
        return dataset.cast_column(column, type(feature)(decode=False))
    return dataset


def _suffix(path: str | None, media: str) -> str:
    suffix = Path(path).suffix.lower() if path else ""
    return suffix if suffix else (".mp4" if media == "video" else ".wav")


class _MediaFolder:
    """``<out>/.work/media``: row bytes as files, named by their hash (written once, reused by reruns)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, data: bytes, suffix: str) -> tuple[Path, str]:
        digest = hashlib.sha1(data).hexdigest()
        path = self.root / f"{digest[:20]}{suffix}"
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return path, digest


def _row_media(value: Any, media: str, name: str, folder: _MediaFolder) -> dict[str, Any]:
    """``Clip`` fields (path / waveform / digest) of one row's media value; ``ClipError`` when unusable."""
    if value is None:
        raise ClipError("no_media", f"{name}: its {media} is empty")
    if isinstance(value, Mapping) and value.get("array") is not None:
        if media == "video":
            raise ClipError("unreadable", f"{name}: a video given as an array; give the video file (path or bytes)")
        rate = value.get("sampling_rate")
        if not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ClipError("unreadable", f"{name}: audio array without a positive sampling_rate ({rate!r})")
        array = np.asarray(value["array"], dtype=np.float32)
        digest = hashlib.sha1(array.tobytes() + str(int(rate)).encode()).hexdigest()
        return {"path": None, "waveform": (array, int(rate)), "digest": digest}
    if isinstance(value, Mapping) and value.get("bytes"):
        path, digest = folder.file(bytes(value["bytes"]), _suffix(value.get("path"), media))
        return {"path": path, "digest": digest}
    path = value.get("path") if isinstance(value, Mapping) else value
    if not isinstance(path, str) or not path:
        raise ClipError("no_media", f"{name}: its {media} has neither an array, bytes nor a path ({type(value).__name__})")
    path = Path(path)
    if not path.is_file():
        raise ClipError("missing_file", f"{name}: {media} file {str(path)!r} does not exist")
    stat = path.stat()  # the path is part of the key: rows may be reordered between runs
    return {"path": path.resolve(), "digest": f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"}


def dataset_clips(dataset: datasets.Dataset | datasets.DatasetDict, media_dir: Path, *, split: str | None = None,
                  text_column: str | None = None, speaker_column: str = "speaker",
                  ) -> tuple[list[Clip], list[dict[str, str]], str]:
    """The rows of ``dataset`` as clips named ``row-<index>``, the rows refused (``{file, reason, message}``) and a
    description of the source for the report."""
    rows, split = _select_split(dataset, split)
    columns = list(rows.column_names)
    media = next((name for name in MEDIA_COLUMNS if name in columns), None)
    if media is None:
        raise ValueError(f"the dataset needs a 'video' or an 'audio' column (rename yours with "
                         f"dataset.rename_column); it has {sorted(columns)}")
    text = pick_text_column(columns, text_column, "the dataset")
    rows = _undecoded(rows, media)
    keep = [media, text, *([speaker_column] if speaker_column in columns else [])]
    rows = rows.select_columns(keep)
    folder = _MediaFolder(media_dir)
    source = f"datasets.Dataset ({len(rows)} rows{f', split {split}' if split else ''}, columns {media}/{text})"
    clips, refused = [], []
    width = max(6, len(str(len(rows))))
    for index, row in enumerate(rows):
        name = f"row-{index:0{width}d}"
        value = row[text]
        transcript = (" ".join(str(value).split()) or None) if value is not None else None
        speaker = str(row.get(speaker_column) or "") or "speaker"
        try:
            fields = _row_media(row[media], media, name, folder)
        except ClipError as error:
            refused.append({"file": name, "reason": error.reason, "message": str(error)})
            logger.warning("skipping %s (%s): %s", name, error.reason, error)
            continue
        clips.append(Clip(name=name, text=transcript, speaker=speaker, kind=media, **fields))
    return clips, refused, source
