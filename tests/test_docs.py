"""The ```python examples of docs/*.md and docs/tasks/*.md run on CPU as written.

A page's blocks run in order in one namespace (a page reads as one session), in a temporary working folder,
on the embedded default model and the bundled portrait. Blocks that need what a fresh checkout does not have
(an official checkpoint, the LivePortrait weights, the reader's own files) are in :data:`SKIPPED`, each with the
text that makes it unrunnable and the reason; a test keeps that list in step with the docs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("docs/*.md"), *ROOT.glob("docs/tasks/*.md")])
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

_OWN_MODEL = "a model built from an official F5-TTS checkpoint (CC-BY-NC-4.0, not shipped)"
_WEIGHTS = "the official LivePortrait weights (not shipped)"
SKIPPED: dict[tuple[str, int], tuple[str, str]] = {
    # (page, block number from 1): (text in the block that needs the missing thing, reason)
    ("docs/plugins.md", 2): ("outputs/tri/pipeline", "a tri-stream model trained by the walkthrough above"),
    ("docs/scheduler.md", 2): ("GuidedVelocity(model, batches, guidance)",
                               "a fragment: model, batches and guidance are the reader's"),
    ("docs/tasks/README.md", 2): ('"my_jamflow"', _OWN_MODEL),
    ("docs/tasks/README.md", 5): ('weights="pretrained_weights/"', _WEIGHTS),
    ("docs/tasks/README.md", 7): ('"vocos-mel-24khz/"', "the Vocos vocoder folder (not shipped)"),
    ("docs/tasks/README.md", 8): ('"my_jamflow"', _OWN_MODEL + " with an F5-TTS vocabulary"),
    ("docs/tasks/audio_to_motion.md", 2): ('"pretrained_weights/"', _WEIGHTS + " and the reader's speech files"),
    ("docs/tasks/dubbing.md", 2): ('"my_jamflow"', _OWN_MODEL + ", the reader's clip and voice"),
    ("docs/tasks/talking_head.md", 2): ('"my_jamflow"', _OWN_MODEL + " and " + _WEIGHTS),
    ("docs/tasks/tts.md", 2): ('"my_jamflow"', _OWN_MODEL + " and the reader's voice"),
    ("docs/tasks/video_to_video.md", 1): ('"clip.mp4"', "a video, whose motion only the LivePortrait weights extract"),
}
UNAVAILABLE = ('"my_jamflow"', "pretrained_weights", "me.wav", "me.jpg", "vocos-mel-24khz", "F5TTS_", '"cuda"',
               ".to(\"cuda\")", "outputs/tri/pipeline")
"""Text that marks a block as needing something a fresh CPU checkout lacks; no block that runs may contain it."""


def blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


RUN_PAGES = [page for page in PAGES if blocks(page)]


def test_the_docs_have_examples_to_run():
    names = {_name(page) for page in RUN_PAGES}
    assert {"docs/tasks/README.md", "docs/tasks/tts.md", "docs/tasks/talking_head.md", "docs/scheduler.md"} <= names


def test_skip_list_matches_the_docs():
    """Every skipped block exists and holds the text its reason names; every other block holds none of it."""
    for (name, number), (needs, reason) in SKIPPED.items():
        found = blocks(ROOT / name)
        assert number <= len(found), f"{name} has no block {number} (skip list out of date)"
        assert needs in found[number - 1], f"{name} block {number} no longer needs {needs!r}: run it"
        assert reason
    for page in RUN_PAGES:
        for number, code in enumerate(blocks(page), 1):
            if (_name(page), number) not in SKIPPED:
                code_only = re.sub(r"#.*", "", code)  # a comment may say what to change on a GPU
                marks = [mark for mark in UNAVAILABLE if mark in code_only]
                assert not marks, f"{_name(page)} block {number} needs {marks}: make it runnable or skip it"


@pytest.fixture(scope="module")
def shared_loads():
    """Load each pipeline folder once for all pages (the examples are run as written; only loading is shared)."""
    from mmflow_jamflow import JAMFlowPipeline

    original = JAMFlowPipeline.from_pretrained.__func__
    cache = {}

    def from_pretrained(cls, path, **kwargs):
        if kwargs:
            return original(cls, path, **kwargs)
        if str(path) not in cache:
            cache[str(path)] = original(cls, path)
        return cache[str(path)]

    JAMFlowPipeline.from_pretrained = classmethod(from_pretrained)
    yield
    JAMFlowPipeline.from_pretrained = classmethod(original)


@pytest.mark.parametrize("page", RUN_PAGES, ids=_name)
def test_page_examples_run(page, tmp_path, monkeypatch, shared_loads):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_example"}
    ran = 0
    for number, code in enumerate(blocks(page), 1):
        if (_name(page), number) in SKIPPED:
            continue
        try:
            exec(compile(code, f"{_name(page)}:block{number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{_name(page)} block {number} failed: {error!r}\n{code}") from error
        ran += 1
    if not ran:
        pytest.skip(f"every example of {_name(page)} needs assets a checkout lacks (see SKIPPED)")
