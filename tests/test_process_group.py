"""``end_process_group_at_exit``: in a gloo process group its handler destroys the group before Python finalizes,
also when the script raises, and is registered once; a process without a group registers nothing. Each case runs
in a fresh interpreter. (What the handler prevents, an abort in gloo's threads, happens in a few percent of
two-rank runs: ``benchmarks/gloo_exit.py`` counts it, docs/distributed.md has the numbers.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import atexit, sys, torch.distributed as dist
from mmflow.training.process_group import end_process_group_at_exit
atexit.register(lambda: print("alive at exit:", dist.is_initialized(), flush=True))  # runs after the handler
if sys.argv[2] != "single":
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
before = atexit._ncallbacks()
end_process_group_at_exit()
end_process_group_at_exit()
print("handlers added:", atexit._ncallbacks() - before, flush=True)
if sys.argv[2] == "raise":
    raise ValueError("the run's own error")
"""


@pytest.mark.parametrize(("ending", "handlers"), [("return", 1), ("raise", 1), ("single", 0)])
def test_the_gloo_group_is_gone_before_python_finalizes(tmp_path, ending, handlers):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path / "store"), ending],
                            capture_output=True, text=True, timeout=120)
    assert f"handlers added: {handlers}" in result.stdout, result.stderr[-2000:]  # once, however often called
    assert "alive at exit: False" in result.stdout, result.stderr[-2000:]
    if ending == "raise":  # the error keeps its own exit code and traceback
        assert result.returncode == 1 and "ValueError: the run's own error" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-2000:]
