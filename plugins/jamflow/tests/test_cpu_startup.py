"""Start-up of `mmflow generate` on a CPU: what it loads and how its OpenMP threads wait (issue 19, item 5).

Speed itself is measured by benchmarks/cpu_realtime.py; these tests check the settings that speed comes from.
"""

import json
import os
import subprocess
import sys

PROBE = """
import json, os, sys
import mmflow, torch
from mmflow_jamflow import cli, pipeline
from mmflow_jamflow.data import corpus, preprocess
from mmflow.plugins import get_registry
get_registry()  # `mmflow generate` builds the command list (train, evaluate, app...) before it runs
print(json.dumps({"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "datasets": "datasets" in sys.modules,
                  "pyarrow": "pyarrow" in sys.modules}))
"""


def _probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    out = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_generate_modules_load_without_datasets_and_threads_wait_passively():
    """The data modules `mmflow generate` imports for its command list do not load Hugging Face `datasets`
    (half a second of pandas/pyarrow at every start), and idle OpenMP threads sleep rather than spin."""
    seen = _probe()
    assert seen["omp_wait_policy"] == "PASSIVE"
    assert seen["datasets"] is False


def test_a_users_openmp_wait_policy_is_kept():
    assert _probe(OMP_WAIT_POLICY="ACTIVE")["omp_wait_policy"] == "ACTIVE"


def test_the_command_list_loads_no_arrow():
    """Registering `mmflow train` (mmflow.training, imported for the command list of every `mmflow` run) does not
    load pyarrow: only reading a dataset's row lengths needs it (benchmarks/cpu_realtime.py, issue 19 item 5)."""
    assert _probe()["pyarrow"] is False
