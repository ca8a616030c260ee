"""Shared test setup for the F5-TTS audio plugin.

Makes ``mmflow_audio_f5tts`` importable from a source checkout (when the plugin is not pip-installed)
and exposes the reference packages as session fixtures. ``reference.py`` is loaded by file path under a
unique module name, because ``--import-mode=importlib`` puts no test folder on ``sys.path`` and other
test folders of the repository may have helpers with the same file name.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
if importlib.util.find_spec("mmflow_audio_f5tts") is None:
    sys.path.insert(0, str(_TESTS.parent))


def _reference_helper() -> types.ModuleType:
    name = "mmflow_audio_f5tts_tests_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _TESTS / "reference.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def f5_reference() -> types.SimpleNamespace:
    """The f5-tts reference functions (skips the test when f5-tts or its imports are missing)."""
    return _reference_helper().f5_modules()


@pytest.fixture(scope="session")
def f5_infer_batch_process():  # noqa: ANN201 - a reference generator function
    """The reference inference loop, for checks that need its exact preprocessing and duration rule."""
    return _reference_helper().f5_infer_batch_process()


@pytest.fixture(scope="session")
def vocos_reference() -> types.SimpleNamespace:
    """The vocos reference package (skips the test when it is missing)."""
    return _reference_helper().vocos_modules()
