"""mmflow.io: atomic writes never remove what a user made; a failed run removes only the empty folders it created;
one writer per output folder. mmflow.validation: the range check and its message."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from mmflow.io import LOCK_NAME, OutputLockedError, atomic_path, folder_lock, output_folder, write_text_atomic
from mmflow.validation import InputRangeError, Range


def test_a_file_is_never_written_over_a_folder(tmp_path):
    target = tmp_path / "sample.wav"
    target.mkdir()
    (target / "precious.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match="sample.wav exists and is a folder"):
        write_text_atomic(target, "output")
    assert (target / "precious.txt").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.wav"]  # no temporary left behind


def test_a_file_replaces_a_file_and_a_link_to_one(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "old")
    write_text_atomic(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    write_text_atomic(tmp_path / "link.txt", "through the link")
    assert (tmp_path / "link.txt").read_text() == "through the link" and (tmp_path / "a.txt").read_text() == "new"


def test_a_folder_replaces_a_folder_but_never_a_file(tmp_path):
    with atomic_path(tmp_path / "model") as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("1")
    with atomic_path(tmp_path / "model") as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("2")
    assert (tmp_path / "model" / "weights").read_text() == "2"
    (tmp_path / "notes.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match="notes.txt exists and is not a folder"), \
            atomic_path(tmp_path / "notes.txt") as tmp:
        tmp.mkdir()
    assert (tmp_path / "notes.txt").read_text() == "the user's"


def test_a_folder_holding_someone_elses_files_is_never_replaced(tmp_path):
    """``mmflow build-jamflow --out my_folder`` (or any folder output) onto a folder with the user's files."""
    user = tmp_path / "my_folder"
    (user / "photos").mkdir(parents=True)
    (user / "photos" / "cat.jpg").write_bytes(b"jpeg")
    (user / "weights").write_text("old")
    with pytest.raises(FileExistsError, match=r"holds files this output does not write \(photos/cat.jpg\)"), \
            atomic_path(user) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("new")
    assert (user / "photos" / "cat.jpg").read_bytes() == b"jpeg" and (user / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_folder"]  # no temporary or backup left behind


def test_a_failed_run_removes_only_the_empty_folders_it_created(tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(RuntimeError), output_folder(tmp_path / "mine" / "a" / "b"):
        raise RuntimeError("failed")
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and not any((tmp_path / "mine").iterdir())
    with pytest.raises(RuntimeError), output_folder(tmp_path / "c" / "d") as folder:
        (folder.parent / "kept.txt").write_text("written during the run")
        raise RuntimeError("failed")
    assert (tmp_path / "c" / "kept.txt").exists() and not (tmp_path / "c" / "d").exists()
    with output_folder(tmp_path / "ok") as folder:
        pass
    assert folder.is_dir()


def _try_lock(folder, queue):
    try:
        with folder_lock(folder):
            queue.put("locked")
    except OutputLockedError as error:
        queue.put(str(error))


def test_a_second_process_is_refused_while_a_run_holds_the_folder(tmp_path):
    context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    queue = context.Queue()
    with folder_lock(tmp_path):
        process = context.Process(target=_try_lock, args=(tmp_path, queue))
        process.start()
        process.join(60)
        assert "another mmflow run is writing into" in queue.get(timeout=5)
    assert not (tmp_path / LOCK_NAME).exists()
    process = context.Process(target=_try_lock, args=(tmp_path, queue))
    process.start()
    process.join(60)
    assert queue.get(timeout=5) == "locked"


@pytest.mark.parametrize("value", [-0.5, -1, 21, float("nan"), float("inf"), "2", True, None])
def test_range_refuses_with_the_input_and_the_range_named(value):
    with pytest.raises(InputRangeError, match=r"--cfg must be a number in \[0, 20\], got .*; 2 is the default"):
        Range(0, 20).check("--cfg", value, "2 is the default")


def test_range_accepts_and_converts():
    assert Range(0, 20).check("x", 3) == 3.0 and isinstance(Range(0, 20).check("x", 3), float)
    assert Range(1, 10, integer=True).check("n", 4.0) == 4
    with pytest.raises(InputRangeError, match=r"an integer in \[1, 10\], got 4.5"):
        Range(1, 10, integer=True).check("n", 4.5)
    with pytest.raises(InputRangeError, match=r"\(0, 5\]"):
        Range(0, 5, open_low=True).check("d", 0)
