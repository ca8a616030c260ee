"""``speaker_sim_ge2e``: resemblyzer's GE2E similarity ranks the same espeak voice above a different one."""

from __future__ import annotations

import re

import pytest
import soundfile as sf

from mmflow.codecs import InputError
from mmflow.evaluation import Metric, Sample

pytest.importorskip("resemblyzer", reason="needs requirements/eval.txt")
pytest.importorskip("espeakng_loader", reason="needs `pip install espeakng-loader==0.2.4`")

from mmflow_audio_f5tts.espeak import EspeakEngine, Voice  # noqa: E402
from mmflow_audio_f5tts.metrics.ge2e import make_speaker_sim_ge2e  # noqa: E402

PROMPT = "Please call Stella and ask her to bring these things with her from the store."
SAID = "The birch canoe slid on the smooth planks, and the boy jumped out."


def _wav(folder, name, text, voice):
    spoken = EspeakEngine().synthesize(text, voice)
    path = folder / f"{name}.wav"
    sf.write(path, spoken.waveform, spoken.sample_rate)
    return path


def test_same_voice_scores_above_different_voice(tmp_path):
    metric = make_speaker_sim_ge2e({}, tmp_path)
    assert isinstance(metric, Metric) and metric.name == "speaker_sim_ge2e"
    assert metric.reference_needs == {"prompt_audio|audio"} and metric.higher_is_better
    female, male = Voice("en-us+f3", pitch=55), Voice("en-us+m3", rate=150, pitch=45)
    prompt = _wav(tmp_path, "prompt", PROMPT, female)
    samples = [Sample("same", {"audio": _wav(tmp_path, "same", SAID, female)}, reference={"prompt_audio": prompt}),
               Sample("other", {"audio": _wav(tmp_path, "other", SAID, male)}, reference={"prompt_audio": prompt})]
    same, other = (row["speaker_sim_ge2e"] for row in metric.score(samples))
    assert -1.0 <= other < same <= 1.0
    assert same - other > 0.1, (same, other)
    summary = metric.summarise(metric.score(samples))
    assert list(summary) == ["speaker_sim_ge2e", "reference"] and summary["reference"] == "prompt_audio"
    assert summary["speaker_sim_ge2e"] == pytest.approx((same + other) / 2)
    # Without a prompt (the synthetic benchmark), the item's own recording is the reference, and rows say so.
    recording = _wav(tmp_path, "recording", PROMPT, male)
    mixed = [samples[0], Sample("bare", {"audio": samples[1].files["audio"]}, reference={"audio": recording})]
    rows = metric.score(mixed)
    assert [row["reference"] for row in rows] == ["prompt_audio", "audio"]
    assert rows[0]["speaker_sim_ge2e"] == pytest.approx(same)
    assert rows[1]["speaker_sim_ge2e"] > same - 0.1  # the male recording matches the male output
    assert metric.summarise(rows)["reference"] == "prompt_audio (1), audio (1)"


def test_reference_kind_option(tmp_path):
    assert make_speaker_sim_ge2e({"reference": "audio"}, tmp_path).reference_needs == {"audio"}
    assert make_speaker_sim_ge2e({"reference": "audio|prompt_audio"}, tmp_path).reference_needs == {
        "audio|prompt_audio"}
    for bad in ("video", "audio|video", "audio|audio"):
        with pytest.raises(InputError, match=rf"--metric-option speaker_sim_ge2e\.reference={re.escape(bad)}: "
                                             r"expected prompt_audio or audio, or both joined by \|"):
            make_speaker_sim_ge2e({"reference": bad}, tmp_path)
