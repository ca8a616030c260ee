"""Registrations of the F5-TTS audio plugin."""

from __future__ import annotations

from fractions import Fraction

from mmflow import StreamSpec, hookimpl

from .backbone import F5TTSBackbone

# 24 kHz audio, hop 256: 93.75 log-mel frames per second, 100 mel bins (F5-TTS / Vocos mel-24khz).
AUDIO = StreamSpec(name="audio", frame_rate=Fraction(24000, 256), channels=100, position="scaled")


@hookimpl
def mmflow_streams():
    return [AUDIO]


@hookimpl
def mmflow_backbones():
    return {"f5tts_dit": F5TTSBackbone}


@hookimpl
def mmflow_stream_codecs():
    from .codec import F5AudioCodec

    return {"audio": F5AudioCodec}


@hookimpl
def mmflow_metrics():
    from .metrics.ge2e import make_speaker_sim_ge2e
    from .metrics.sim_o import make_sim_o
    from .metrics.wer import make_wer

    return {"wer": make_wer, "sim_o": make_sim_o, "speaker_sim_ge2e": make_speaker_sim_ge2e}


@hookimpl
def mmflow_benchmarks():
    from .metrics.librispeech_pc import load_librispeech_pc_test_clean

    return {"librispeech_pc_test_clean": load_librispeech_pc_test_clean}
