"""The option rules every metric and benchmark list shares (mmflow.evaluation.options): unknown keys refused,
values read by type, and every refusal naming the metric or benchmark, the key, the bad value and what is
accepted."""

from __future__ import annotations

import re

import pytest
import torch

from mmflow.codecs import InputError
from mmflow.evaluation.options import (
    Options,
    check_options,
    choice_option,
    device_option,
    float_option,
    int_option,
    path_option,
)

KNOWN = {"n": "a count (default 3)", "x": "a scale (default 0.5)", "mode": "fast or slow", "path": "a file",
         "device": "a device"}


def metric(**values: str) -> Options:
    return check_options("metric", "toy", values, KNOWN)


def refused(*parts: str):
    """``pytest.raises`` for an InputError whose message holds ``parts`` in order (each taken literally)."""
    return pytest.raises(InputError, match=".*".join(re.escape(part) for part in parts))


def test_unknown_keys_are_refused_with_the_owner_and_every_known_key():
    with refused("metric 'toy' has no option(s) ['m', 'z']", "its options are: n: a count (default 3); x: a scale"):
        metric(n="1", m="2", z="3")
    with refused("benchmark 'set' has no option(s) ['segment']", "segment_seconds: seconds"):
        check_options("benchmark", "set", {"segment": "1"}, {"segment_seconds": "seconds"})
    checked = check_options("metric", "toy", None, KNOWN)
    assert checked == {} and checked.owner == "metric 'toy'"
    with pytest.raises(ValueError, match="kind"):
        check_options("metrics", "toy", {}, KNOWN)


def test_int_option_reads_whole_numbers_within_the_bounds():
    assert int_option(metric(), "n", 3, minimum=1) == 3
    assert int_option(metric(n="7"), "n", 3, minimum=1, maximum=7) == 7
    assert int_option(metric(n="-4"), "n", 3) == -4
    for bad in ("x", "2.5", "0", "8", " ", "9" * 400):  # the last: larger than any float, compared exactly
        with refused(f"--metric-option toy.n={bad}: expected a whole number ≥ 1 and ≤ 7 (n: a count (default 3))"):
            int_option(metric(n=bad), "n", 3, minimum=1, maximum=7)
    with refused("toy.n=-1: expected a whole number ≥ 0 (n:"):
        int_option(metric(n="-1"), "n", 3, minimum=0)


def test_float_option_reads_finite_numbers_within_the_bounds():
    assert float_option(metric(), "x", 0.5, above=0) == 0.5
    assert float_option(metric(x="1e-3"), "x", 0.5, above=0, maximum=1) == pytest.approx(1e-3)
    assert float_option(metric(x="1"), "x", 0.5, above=0, maximum=1) == 1
    for bad in ("0", "-1", "1.5", "nan", "inf", "half"):
        with refused(f"--metric-option toy.x={bad}: expected a number > 0 and ≤ 1 (x: a scale"):
            float_option(metric(x=bad), "x", 0.5, above=0, maximum=1)
    with refused("x=inf: expected a number (x:"):  # no bounds: still finite
        float_option(metric(x="inf"), "x", 0.5)


def test_benchmark_options_are_spelled_as_on_the_command_line():
    options = check_options("benchmark", "hdtf", {"segment_seconds": "0"}, {"segment_seconds": "seconds"})
    with refused("--benchmark-option segment_seconds=0 (benchmark 'hdtf'): expected a number > 0"):
        float_option(options, "segment_seconds", 20.0, above=0)


def test_choice_option_accepts_only_its_choices():
    assert choice_option(metric(), "mode", "fast", ("fast", "slow")) == "fast"
    assert choice_option(metric(mode="slow"), "mode", "fast", ("fast", "slow")) == "slow"
    for bad in ("Slow", "medium"):
        with refused(f"--metric-option toy.mode={bad}: expected one of fast, slow (mode: fast or slow)"):
            choice_option(metric(mode=bad), "mode", "fast", ("fast", "slow"))


def test_path_option_wants_an_existing_file_or_folder(tmp_path):
    file = tmp_path / "weights.pt"
    file.write_bytes(b"")
    assert path_option(metric(), "path", "Get it there.") is None
    assert path_option(metric(path=str(file)), "path", "Get it there.") == file
    assert path_option(metric(path=str(tmp_path)), "path", "Get it there.", folder=True) == tmp_path
    with refused("metric 'toy' needs --metric-option toy.path=PATH. Get it there."):
        path_option(metric(), "path", "Get it there.", required=True)
    with refused(f"--metric-option toy.path={tmp_path / 'absent'}: no such file or folder. Get it there."):
        path_option(metric(path=str(tmp_path / "absent")), "path", "Get it there.")
    with refused(f"--metric-option toy.path={tmp_path}: not a file. Get it there."):
        path_option(metric(path=str(tmp_path)), "path", "Get it there.")
    with refused(f"--metric-option toy.path={file}: not a folder. Get it there."):
        path_option(metric(path=str(file)), "path", "Get it there.", folder=True)


def test_device_option_parses_torch_devices():
    assert device_option(metric(device="cpu")) == torch.device("cpu")
    assert device_option(metric(), default="cpu") == torch.device("cpu")
    assert device_option(metric()) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with refused("--metric-option toy.device=gpu0: expected a torch device such as cpu, cuda or cuda:0"):
        device_option(metric(device="gpu0"))
    if not torch.cuda.is_available():
        with refused("--metric-option toy.device=cuda:1: this machine has no CUDA device; use "
                     "--metric-option toy.device=cpu"):
            device_option(metric(device="cuda:1"))


@pytest.mark.parametrize("read", [
    lambda options: int_option(options, "n", 3),
    lambda options: float_option(options, "x", 0.5),
    lambda options: choice_option(options, "mode", "fast", ("fast", "slow")),
    lambda options: path_option(options, "path", "Get it there."),
    lambda options: device_option(options),
])
def test_an_empty_value_is_refused_not_taken_for_the_default(read):
    """``KEY=`` (e.g. from an unset shell variable) is named, never silently replaced by the default."""
    options = metric(n="", x="", mode="", path="", device="")
    with pytest.raises(InputError, match=r"--metric-option toy\.\w+=: the value is empty"):
        read(options)


def test_a_reader_of_an_undeclared_key_is_a_bug():
    with pytest.raises(KeyError, match="does not declare"):
        int_option(metric(), "count", 3)
