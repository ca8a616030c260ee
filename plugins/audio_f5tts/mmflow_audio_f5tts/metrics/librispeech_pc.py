"""``librispeech_pc_test_clean``: F5-TTS's cross-sentence TTS benchmark on LibriSpeech-PC test-clean.

The list ``librispeech_pc_test_clean_cross_sentence.lst`` is F5-TTS's (``data/`` of SWivid/F5-TTS, unchanged since
commit ff690b7, MIT): 1127 lines ``prompt_utt, prompt_seconds, prompt_text, target_utt, target_seconds,
target_text`` (tab-separated), targets of 4-10 s, each prompted by another utterance of its speaker (2.4-4.5 s).
The texts are LibriSpeech-PC's punctuated, cased transcripts and are read from the list, as F5-TTS does
(``get_librispeech_test``); only the audio comes from LibriSpeech test-clean, at
``<root>/<speaker>/<chapter>/<utt>.flac``.

Each item asks the ``tts`` task for the target text in the prompt's voice; references: the prompt clip
(``prompt_audio``, what SIM-o compares with), the target's real recording (``audio``) and the target text (WER).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from mmflow.codecs import InputError
from mmflow.evaluation import BenchmarkItem

LIST_NAME = "librispeech_pc_test_clean_cross_sentence.lst"
GET_IT = ("LibriSpeech test-clean: download test-clean.tar.gz from https://www.openslr.org/12 and extract it; "
          "pass --benchmark-root .../LibriSpeech/test-clean")


def shipped_list() -> Path:
    """F5-TTS's list file, shipped in this package."""
    return Path(str(files(__package__).joinpath(LIST_NAME)))


def test_clean_folder(root: Path | None) -> Path:
    """The ``test-clean`` folder: ``root`` itself, or ``root/test-clean``, or ``root/LibriSpeech/test-clean``."""
    if root is None:
        raise InputError(f"benchmark 'librispeech_pc_test_clean' needs the dataset folder. {GET_IT}")
    root = Path(root).expanduser()
    for folder in (root, root / "test-clean", root / "LibriSpeech" / "test-clean"):
        if folder.is_dir() and any(child.name.isdigit() and child.is_dir() for child in folder.iterdir()):
            return folder
    raise InputError(f"--benchmark-root {root}: no LibriSpeech test-clean speaker folders (<speaker>/<chapter>/"
                     f"<utt>.flac) in it, in {root / 'test-clean'} or in {root / 'LibriSpeech' / 'test-clean'}. "
                     f"{GET_IT}")


def utterance_path(folder: Path, utt: str) -> Path:
    """``<folder>/<speaker>/<chapter>/<utt>.flac`` for a LibriSpeech id ``speaker-chapter-index``."""
    speaker, chapter, _ = utt.split("-")
    return folder / speaker / chapter / f"{utt}.flac"


def read_cross_sentence_list(list_path: Path, folder: Path) -> list[BenchmarkItem]:
    """Items of a list in F5-TTS's format, with their audio under ``folder`` (every file must exist)."""
    items, missing = [], []
    for number, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 6:
            raise InputError(f"{list_path}:{number}: expected 6 tab-separated fields (prompt utt, seconds, text, "
                             f"target utt, seconds, text), got {len(fields)}")
        prompt_utt, prompt_seconds, prompt_text, utt, seconds, text = fields
        prompt, target = utterance_path(folder, prompt_utt), utterance_path(folder, utt)
        missing += [path for path in (prompt, target) if not path.is_file()]
        items.append(BenchmarkItem(
            id=utt, task="tts",
            inputs={"ref_audio": str(prompt), "ref_text": prompt_text, "text": text},
            reference={"prompt_audio": prompt, "audio": target}, text=text,
            meta={"prompt_id": prompt_utt, "prompt_seconds": float(prompt_seconds), "seconds": float(seconds)}))
    if missing:
        shown = ", ".join(str(path) for path in sorted(set(missing))[:3])
        raise InputError(f"{len(set(missing))} LibriSpeech test-clean file(s) of {list_path.name} are missing "
                         f"from {folder}, e.g. {shown}. {GET_IT}")
    return items


def load_librispeech_pc_test_clean(root: Path | None) -> list[BenchmarkItem]:
    """Loader for ``mmflow_benchmarks``: F5-TTS's 1127-item 4-10 s cross-sentence list over ``root``."""
    return read_cross_sentence_list(shipped_list(), test_clean_folder(root))
