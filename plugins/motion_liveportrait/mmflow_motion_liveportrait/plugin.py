"""Registrations of the LivePortrait motion plugin."""

from __future__ import annotations

from fractions import Fraction

from mmflow import StreamSpec, hookimpl

# 25 frames/s; generated: the 4 mouth keypoints × 3 of the expression; condition: the other 17 × 3.
MOTION = StreamSpec(name="motion", frame_rate=Fraction(25), channels=12, cond_channels=51, position="scaled")


@hookimpl
def mmflow_streams():
    return [MOTION]


@hookimpl
def mmflow_stream_codecs():
    from .codec import LivePortraitMotionCodec

    return {"motion": LivePortraitMotionCodec}


@hookimpl
def mmflow_metrics():
    from .metrics.fid import fid_metric
    from .metrics.fvd import fvd_metric
    from .metrics.lse import make_lse

    return {"fid": fid_metric, "fvd": fvd_metric, "lse": make_lse}


@hookimpl
def mmflow_benchmarks():
    from .metrics.benchmarks import BENCHMARKS

    return dict(BENCHMARKS)
