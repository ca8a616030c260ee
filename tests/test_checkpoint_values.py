"""The checkpoint folder rules of mmflow.training.checkpoint on their own (no trainer): names, order, commit
by rename, stale temporary folders, keeping the newest ``keep_last``. Fast enough for mutation testing."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from mmflow.training.checkpoint import checkpoint_name, latest_checkpoint, list_checkpoints, save_checkpoint


@pytest.fixture
def accelerator():
    AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(cpu=True)
    acc.register_for_checkpointing(_Counter())
    yield acc
    AcceleratorState._reset_state(reset_partial_state=True)


class _Counter:
    """A registered object, so ``save_state`` writes something of ours besides the RNG states."""

    def __init__(self):
        self.value = torch.tensor([1.5, -2.0])

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_checkpoint_names_sort_by_step():
    assert checkpoint_name(7) == "step-00000007"
    assert checkpoint_name(123456789) == "step-123456789"


def test_list_checkpoints_orders_by_step_and_skips_everything_else(tmp_path):
    assert list_checkpoints(tmp_path / "missing") == [] and latest_checkpoint(tmp_path / "missing") is None
    assert list_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    for name in ("step-00000010", "step-00000009", "step-2", ".step-00000011.tmp", "step-x", "steps-00000012",
                 "step-00000013-old", "old-step-00000014"):
        (tmp_path / name).mkdir()
    (tmp_path / "step-00000015").write_text("a file, not a checkpoint")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-2", "step-00000009", "step-00000010"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000010"
    (tmp_path / "step-00000100").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000100"


def _writer(seen: list, text: str):
    def write(folder):
        seen.append(folder)
        assert folder.is_dir()
        (folder / "trainer_state_0.pt").write_text(text)

    return write


def test_save_commits_by_rename_and_removes_stale_temporaries(tmp_path, accelerator):
    root = tmp_path / "checkpoints"
    root.mkdir()
    stale = root / ".step-00000001.tmp"
    stale.mkdir()
    (stale / "half-written").write_text("x")
    seen = []
    final = save_checkpoint(accelerator, root, 2, _writer(seen, "two"), keep_last=3)
    assert final == root / "step-00000002"
    assert seen == [root / ".step-00000002.tmp"]  # ranks write into the temporary folder
    assert (final / "trainer_state_0.pt").read_text() == "two"
    assert any(p.name != "trainer_state_0.pt" for p in final.iterdir())  # accelerate's own state is there too
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]  # no temporary folder left


def test_save_creates_the_root_and_replaces_the_same_step(tmp_path, accelerator):
    root = tmp_path / "run" / "checkpoints"
    save_checkpoint(accelerator, root, 4, _writer([], "first"), keep_last=2)
    (root / "step-00000004" / "extra").write_text("from the first save")
    save_checkpoint(accelerator, root, 4, _writer([], "again"), keep_last=2)
    assert (root / "step-00000004" / "trainer_state_0.pt").read_text() == "again"
    assert not (root / "step-00000004" / "extra").exists()  # replaced whole, not merged
    assert [p.name for p in list_checkpoints(root)] == ["step-00000004"]


@pytest.mark.parametrize("keep_last", [1, 2, 3])
def test_save_keeps_the_newest_keep_last(tmp_path, accelerator, keep_last):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 10):
        save_checkpoint(accelerator, root, step, _writer([], str(step)), keep_last=keep_last)
    kept = [p.name for p in list_checkpoints(root)]
    assert kept == [checkpoint_name(s) for s in (1, 2, 3, 10)][-keep_last:]
    (root / "notes.txt").write_text("a user's file")
    save_checkpoint(accelerator, root, 11, _writer([], "11"), keep_last=keep_last)
    assert (root / "notes.txt").read_text() == "a user's file"
    assert [p.name for p in list_checkpoints(root)] == [checkpoint_name(s) for s in (1, 2, 3, 10, 11)][-keep_last:]


def test_a_folder_that_cannot_be_removed_does_not_stop_a_save(tmp_path, accelerator, monkeypatch):
    """Removing stale temporaries and old checkpoints is best effort: the new checkpoint is still committed."""
    import mmflow.training.checkpoint as checkpoint_module

    real_rmtree = checkpoint_module.shutil.rmtree
    root = tmp_path / "checkpoints"
    save_checkpoint(accelerator, root, 1, _writer([], "1"), keep_last=1)
    (root / ".step-00000001.tmp").mkdir()

    def stubborn_rmtree(path, ignore_errors=False, **kwargs):
        if not ignore_errors:
            raise PermissionError(f"cannot remove {path}")

    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", stubborn_rmtree)
    final = save_checkpoint(accelerator, root, 2, _writer([], "2"), keep_last=1)
    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", real_rmtree)
    assert (final / "trainer_state_0.pt").read_text() == "2"
    assert latest_checkpoint(root) == final
