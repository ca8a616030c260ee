"""``librispeech_pc_test_clean``: F5-TTS's cross-sentence list over a LibriSpeech test-clean folder."""

from __future__ import annotations

import pytest
from mmflow_audio_f5tts.metrics.librispeech_pc import (
    load_librispeech_pc_test_clean,
    read_cross_sentence_list,
    shipped_list,
    utterance_path,
)

from mmflow.codecs import InputError


def _rows():
    return [line.strip().split("\t") for line in shipped_list().read_text(encoding="utf-8").splitlines()]


def test_shipped_list_is_f5tts_subset():
    rows = _rows()
    assert len(rows) == 1127 and all(len(row) == 6 for row in rows)
    assert len({row[3] for row in rows}) == 1127
    assert all(4.0 <= float(row[4]) <= 10.0 for row in rows)  # the 4-10 s targets
    assert all(row[0].split("-")[0] == row[3].split("-")[0] and row[0] != row[3] for row in rows)  # same speaker
    assert rows[0][:4] == ["4992-41806-0009", "4.355",
                           "exclaimed Bill Harmon to his wife as they went through the lighted hall.",
                           "4992-23283-0000"]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """Empty files in the official layout ``LibriSpeech/test-clean/<speaker>/<chapter>/<utt>.flac``."""
    root = tmp_path_factory.mktemp("librispeech")
    folder = root / "LibriSpeech" / "test-clean"
    for row in _rows():
        for utt in (row[0], row[3]):
            path = utterance_path(folder, utt)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return root


def test_loader_builds_tts_items(fake_root):
    folder = fake_root / "LibriSpeech" / "test-clean"
    items = load_librispeech_pc_test_clean(folder)
    assert len(items) == 1127
    first = items[0]
    assert first.id == "4992-23283-0000" and first.task == "tts"
    prompt = folder / "4992" / "41806" / "4992-41806-0009.flac"
    assert first.inputs == {"ref_audio": str(prompt),
                            "ref_text": "exclaimed Bill Harmon to his wife as they went through the lighted hall.",
                            "text": first.text}
    assert first.text.startswith("But the more forgetfulness")
    assert first.reference == {"prompt_audio": prompt, "audio": folder / "4992" / "23283" / "4992-23283-0000.flac"}
    assert first.meta == {"prompt_id": "4992-41806-0009", "prompt_seconds": 4.355, "seconds": 6.645}
    # The parent folders are accepted too.
    assert load_librispeech_pc_test_clean(fake_root) == items
    assert load_librispeech_pc_test_clean(fake_root / "LibriSpeech") == items


def test_missing_files_and_folders_are_named(fake_root, tmp_path):
    with pytest.raises(InputError, match="openslr.org/12"):
        load_librispeech_pc_test_clean(None)
    with pytest.raises(InputError, match="no LibriSpeech test-clean speaker folders"):
        load_librispeech_pc_test_clean(tmp_path)
    folder = fake_root / "LibriSpeech" / "test-clean"
    gone = folder / "4992" / "23283" / "4992-23283-0000.flac"
    gone.unlink()
    try:
        with pytest.raises(InputError, match=r"1 LibriSpeech test-clean file\(s\).*4992-23283-0000.flac"):
            load_librispeech_pc_test_clean(fake_root)
    finally:
        gone.touch()


def test_malformed_list_line(tmp_path, fake_root):
    bad = tmp_path / "bad.lst"
    bad.write_text("4992-41806-0009\t4.355\ttext only\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.lst:1: expected 6 tab-separated fields"):
        read_cross_sentence_list(bad, fake_root / "LibriSpeech" / "test-clean")


def test_plugin_registers_audio_metrics_and_benchmark():
    from mmflow_audio_f5tts import plugin
    from mmflow_audio_f5tts.metrics.ge2e import make_speaker_sim_ge2e
    from mmflow_audio_f5tts.metrics.sim_o import make_sim_o
    from mmflow_audio_f5tts.metrics.wer import make_wer

    from mmflow.plugins import build_registry

    registry = build_registry({"audio_f5tts_under_test": plugin}, load_entry_points=False)
    assert registry.metric("wer") is make_wer
    assert registry.metric("sim_o") is make_sim_o
    assert registry.metric("speaker_sim_ge2e") is make_speaker_sim_ge2e
    assert registry.benchmark("librispeech_pc_test_clean") is load_librispeech_pc_test_clean
