"""Writing outputs so that a crash never leaves a half-written file or folder behind, and nothing a user made is
ever removed: a file is never written over a folder, a failed run removes only the empty folders it created,
and two runs cannot write into one output folder at the same time."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = ".mmflow.lock"
"""The lock file :func:`folder_lock` keeps in an output folder while a run writes there."""


class OutputLockedError(RuntimeError):
    """Another process is writing into the same output folder."""


def check_stem(stem: str) -> str:
    """An output stem (``--stem``) must be a plain, visible file name: no folder part, no ``..``, not empty, nothing
    non-printable, so outputs land in the output folder and nowhere else."""
    problem = None
    if not isinstance(stem, str) or not stem.strip():
        problem = "is empty"
    elif any(sep in stem for sep in ("/", "\\", os.sep, os.altsep) if sep):
        problem = "contains a path separator (files go into the output folder; choose the folder with --out)"
    elif stem.startswith("."):
        problem = "starts with '.' (a hidden file, or '..' outside the output folder)"
    elif not stem.isprintable():
        problem = "contains control or other non-printable characters"
    if problem:
        raise ValueError(f"output stem {stem!r} {problem}; give a plain file name such as 'sample'")
    return stem


def writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed; raise before any work is done when it cannot be written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output folder {folder} exists and is not a folder; choose another output path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output folder {folder}: {error}; choose a writable path") from error
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder {folder} is not writable; choose another output path")
    return folder


def check_replaceable_file(path: str | os.PathLike) -> Path:
    """Refuse an output file path where something other than a regular file (or a link to one) exists.

    A folder (or a device, a socket...) at an output file's path is the user's, not an old output: writing the
    file must not remove it.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise FileExistsError(f"output file {path} exists and is {kind}; nothing was written over it: move it "
                              f"away or choose another output name")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed.

    Works for files and folders: whatever the caller creates at the temporary path replaces ``path``. A file
    only replaces a regular file (or a link to one), a folder only a folder that holds nothing the new one does not
    (an older version of the same output); anything else is refused, so no one's files are ever removed.
    """
    path = Path(path)
    parent = writable_folder(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)) / (path.name + (suffix or ""))
    try:
        yield tmp
        if tmp.is_dir() and not tmp.is_symlink():
            _replace_folder(tmp, path)
        else:
            os.replace(tmp, check_replaceable_file(path))
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _replace_folder(tmp: Path, path: Path) -> None:
    if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
        raise FileExistsError(f"output folder {path} exists and is not a folder; nothing was written over it: "
                              f"move it away or choose another output path")
    if not path.exists():
        tmp.rename(path)
        return
    foreign = sorted(str(f.relative_to(path)) for f in path.rglob("*")
                     if not f.is_dir() and not (tmp / f.relative_to(path)).exists())
    if foreign:  # not an older version of this output: someone's files, never removed
        raise FileExistsError(f"output folder {path} holds files this output does not write ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}); nothing was replaced: move them away or choose "
                              f"another output path")
    backup = path.with_name(f".{path.name}.old")
    shutil.rmtree(backup, ignore_errors=True)
    path.rename(backup)
    tmp.rename(path)
    shutil.rmtree(backup, ignore_errors=True)


def user_cache_folder(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/mmflow/<parts>`` (``~/.cache/mmflow/...`` by default): where mmflow keeps what it can
    compute again (face detections, benchmark clips); nothing is created here."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "mmflow", *parts)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def output_folder(folder: str | os.PathLike):
    """Create ``folder`` (and missing parents) for a run; if the run fails, remove those it created, when empty.

    Only folders this call created are touched, and only with ``rmdir``: a folder holding anything stays.
    """
    folder = Path(folder).absolute()
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    writable_folder(folder)
    try:
        yield folder
    except BaseException:
        for made in created:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike):
    """Hold an exclusive lock on ``folder`` while writing into it; a second holder is refused at once.

    The lock is an ``flock`` on ``folder/.mmflow.lock``, released by the kernel if the process dies, so a crashed
    run never leaves the folder locked. The lock file is removed on release.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        logger.warning("no file locking on this platform; do not run two jobs into %s at once", folder)
        yield folder
        return
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise OutputLockedError(f"another mmflow run is writing into {folder} (it holds {path}); wait for it "
                                    f"to finish or choose another output folder") from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder removed the file while we waited on it: lock the new one
            break
        handle.close()
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()
