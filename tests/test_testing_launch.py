"""``mmflow.testing.accelerate_launch`` runs a launch that hung or ended in a native abort once more, from a clean
output, and fails on any other error or on a second failure (the launches here are stand-ins: no process starts)."""

from __future__ import annotations

import subprocess
from contextlib import nullcontext

import pytest

import mmflow.testing as testing


class FakeLaunches:
    """Stands in for ``subprocess.Popen``: each launch plays the next outcome ("ok", "abort", "error", "hang")."""

    def __init__(self, *outcomes: str):
        self.outcomes, self.commands = list(outcomes), []

    def __call__(self, command, **kwargs):
        self.commands.append((command, kwargs["env"]))
        outcome, launches = self.outcomes.pop(0), self

        class Process:
            pid = 4242
            returncode = {"ok": 0, "abort": -6, "error": 1, "hang": -9}[outcome]

            def communicate(self, timeout=None):
                if outcome == "hang" and timeout is not None:
                    raise subprocess.TimeoutExpired(launches.commands[-1][0], timeout)
                stderr = {"abort": f"step 5\n{testing.NATIVE_ABORT}\n", "error": "ValueError: bad config\n"}
                return "", stderr.get(outcome, "done\n")

        return Process()


@pytest.fixture
def launches(monkeypatch):
    def install(*outcomes):
        fake = FakeLaunches(*outcomes)
        monkeypatch.setattr(testing.subprocess, "Popen", fake)
        return fake

    killed = []
    monkeypatch.setattr(testing, "_kill_tree", killed.append)
    install.killed = killed
    return install


def test_a_native_abort_is_launched_again_from_a_clean_output(launches, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "half-written").write_text("x")
    fake = launches("abort", "ok")
    with pytest.warns(UserWarning, match="native abort"):
        result = testing.accelerate_launch(testing.TWO_CPU_PROCESSES, "train.py", "--config", "c.yaml",
                                           python_path=[tmp_path], clear=[output])
    assert result.returncode == 0 and len(fake.commands) == 2 and not output.exists()
    command, env = fake.commands[0]
    assert command[1:] == ["launch", *testing.TWO_CPU_PROCESSES, "train.py", "--config", "c.yaml"]
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path) and env["PYTHONFAULTHANDLER"] == "1"


def test_a_hang_is_killed_and_launched_again(launches):
    fake = launches("hang", "ok")
    with pytest.warns(UserWarning, match="hung past 5 s"):
        testing.accelerate_launch([], "train.py", timeout=5)
    assert len(fake.commands) == 2 and launches.killed == [4242]


@pytest.mark.parametrize(("outcomes", "message", "count"), [
    (("error",), "exited 1:\nValueError: bad config", 1),  # an ordinary failure is not retried
    (("abort", "abort"), "exited -6", 2),
    (("hang", "hang"), "two launches of train.py hung", 2),
])
def test_other_failures_and_second_failures_fail(launches, outcomes, message, count):
    fake = launches(*outcomes)
    with pytest.raises(AssertionError, match=message), pytest.warns(UserWarning) if count == 2 else nullcontext():
        testing.accelerate_launch([], "train.py", timeout=5)
    assert len(fake.commands) == count
