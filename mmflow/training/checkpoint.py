"""Resumable checkpoints written atomically, on every rank, into one folder per optimizer step.

A checkpoint is ``<root>/step-00001000/``: Accelerate's ``save_state`` (model, optimizer, LR scheduler,
each rank's RNG states) plus the caller's own files, such as the trainer's ``trainer_state_<rank>.pt`` (step,
data position, the rank's objective generator) and ``ema.safetensors``; ``resume.py`` reads them back.
Every rank writes into ``<root>/.step-00001000.tmp``; once all are done the main process renames it to
``step-00001000``. The rename is the commit: a crash before it leaves only a hidden temporary folder
(removed by the next save) and the previous checkpoints untouched; a crash after it leaves a complete
checkpoint. ``root`` must be on a filesystem every rank sees.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger

logger = get_logger(__name__)

_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary folders of interrupted saves excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in root.iterdir() if path.is_dir() and (m := _NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def _fsync_dir(path: Path):
    """Make a rename durable: flush the directory entry (best effort; not every filesystem supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    accelerator: Accelerator,
    root: str | os.PathLike,
    step: int,
    write_rank_state: Callable[[Path], None],
    keep_last: int,
) -> Path:
    """Save a checkpoint for ``step`` on every rank, commit it by renaming, keep the newest ``keep_last``.

    Every rank must call this (``save_state`` gathers on some backends). ``write_rank_state(folder)`` writes
    the calling rank's own files into the temporary folder.
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step-*.tmp"):  # left by a save that crashed
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    write_rank_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (a run resumed at its last checkpoint and ended)
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(root)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info(f"saved checkpoint {final}")
    accelerator.wait_for_everyone()
    return final
