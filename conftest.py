"""Settings for every test folder (tests/ and each plugin's tests/)."""

import os
import shutil
import tempfile


def pytest_configure(config):
    """Keep the suite's caches (face detections, benchmark references) out of the user's ``~/.cache``: one
    temporary cache folder per run, shared by its tests and the subprocesses they start."""
    if "MMFLOW_TEST_KEEP_CACHE" not in os.environ:
        folder = tempfile.mkdtemp(prefix="mmflow-test-cache-")
        os.environ["XDG_CACHE_HOME"] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
