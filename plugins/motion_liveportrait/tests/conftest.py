"""Make the plugin and this folder's helper (``lp_reference``) importable without installing the plugin.

pytest runs with ``--import-mode=importlib``, which does not put test folders on ``sys.path``.
"""

import importlib.util
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))
if importlib.util.find_spec("mmflow_motion_liveportrait") is None:
    sys.path.insert(0, str(_TESTS.parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def astronaut():
    """scikit-image's astronaut (512² RGB), the test portrait; skips when scikit-image is missing."""
    return pytest.importorskip("skimage.data", reason="render tests use scikit-image's astronaut").astronaut()
