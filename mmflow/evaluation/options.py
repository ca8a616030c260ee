"""Options of metrics and benchmark lists (``--metric-option NAME.KEY=VALUE``, ``--benchmark-option KEY=VALUE``):
one rule for refusing a key the metric or benchmark does not take, so that a typo is never silently ignored, and
one set of typed readers for the values, so that every bad value is refused with the same kind of message (the
option as the user wrote it, its value, what is accepted and the option's help)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..codecs import InputError

if TYPE_CHECKING:
    import torch

KINDS = ("metric", "benchmark")
T = TypeVar("T")
DEVICE_HELP = "cpu, cuda or cuda:N (default: the first GPU when there is one, else cpu)"
"""The help of a ``device`` option read by :func:`device_option` with no default."""


class Options(dict):
    """A metric's or benchmark's options (key -> the string given) after :func:`check_options`, which also
    remember whose they are and what each key means, for the readers' messages."""

    def __init__(self, kind: str, name: str, values: Mapping[str, str], known: Mapping[str, str]) -> None:
        super().__init__(values)
        self.kind, self.name, self.known = kind, name, dict(known)

    @property
    def owner(self) -> str:
        """``metric 'wer'``, ``benchmark 'hdtf'``."""
        return f"{self.kind} {self.name!r}"

    def spelled(self, key: str, value: str) -> str:
        """The option as it is written on the command line (``--metric-option fid.frames=8``)."""
        if self.kind == "metric":
            return f"--metric-option {self.name}.{key}={value}"
        return f"--benchmark-option {key}={value} (benchmark {self.name!r})"

    def refuse(self, key: str, value: str, accepted: str) -> InputError:
        """The error for a bad value: the option, the value, what is accepted and the key's help."""
        return InputError(f"{self.spelled(key, value)}: expected {accepted} ({key}: {self.known[key]})")

    def given(self, key: str) -> str | None:
        """The string given for ``key`` (``None`` when absent); an empty value is refused, not taken as absent, so
        that ``KEY=$UNSET_VARIABLE`` does not silently run with the default."""
        if key not in self.known:  # a reader asked for a key the metric never declared: a bug, not a user error
            raise KeyError(f"{self.owner} reads option {key!r} but does not declare it (known: {sorted(self.known)})")
        value = self.get(key)
        if value == "":
            raise InputError(f"{self.spelled(key, '')}: the value is empty; give one or leave the option out "
                             f"({key}: {self.known[key]})")
        return value


def check_options(kind: str, name: str, options: Mapping[str, str] | None, known: Mapping[str, str]) -> Options:
    """``options`` as :class:`Options`, after refusing keys not in ``known`` (key -> one-line help, listed in the
    error). ``kind`` is ``"metric"`` or ``"benchmark"``, ``name`` the metric's or benchmark's registered name."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    checked = Options(kind, name, options or {}, known)
    unknown = sorted(set(checked) - set(known))
    if unknown:
        listed = "; ".join(f"{key}: {help_}" for key, help_ in known.items())
        raise InputError(f"{checked.owner} has no option(s) {unknown} (unknown options are refused so that a typo "
                         f"is not ignored); its options are: {listed}")
    return checked


def _read(options: Options, key: str, default: T, convert: Callable[[str], T], accepted: str,
          valid: Callable[[T], bool]) -> T:
    """The one path of the typed readers: ``default`` when absent, else ``convert(value)`` if it converts and
    is ``valid``, else the refusal naming ``accepted``."""
    given = options.given(key)
    if given is None:
        return default
    try:
        value = convert(given)
    except ValueError:
        raise options.refuse(key, given, accepted) from None
    if not valid(value):
        raise options.refuse(key, given, accepted)
    return value


def _bounded(kind: str, low: float | None, high: float | None, strict_low: bool) -> tuple[str, Callable]:
    """What a number must be (``a whole number ≥ 1 and ≤ 50``) and the test of a value against those bounds."""
    bounds = [f"{'>' if strict_low else '≥'} {low:g}" if low is not None else "",
              f"≤ {high:g}" if high is not None else ""]
    accepted = " ".join([kind, " and ".join(b for b in bounds if b)]).rstrip()

    def inside(value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above_low = low is None or value > low or (value == low and not strict_low)
        return above_low and (high is None or value <= high)

    return accepted, inside


def int_option(options: Options, key: str, default: int, *, minimum: int | None = None,
               maximum: int | None = None) -> int:
    """``options[key]`` as a whole number in ``[minimum, maximum]`` (either bound optional); ``default`` when
    absent."""
    return _read(options, key, default, int, *_bounded("a whole number", minimum, maximum, strict_low=False))


def float_option(options: Options, key: str, default: float, *, above: float | None = None,
                 maximum: float | None = None) -> float:
    """``options[key]`` as a finite number ``> above`` and ``≤ maximum`` (either bound optional); ``default``
    when absent."""
    return _read(options, key, default, float, *_bounded("a number", above, maximum, strict_low=True))


def choice_option(options: Options, key: str, default: str, choices: Iterable[str]) -> str:
    """``options[key]``, which must be one of ``choices``; ``default`` when absent."""
    choices = tuple(choices)
    return _read(options, key, default, str, f"one of {', '.join(choices)}", lambda value: value in choices)


def path_option(options: Options, key: str, fix: str, *, folder: bool = False, required: bool = False) -> Path | None:
    """The existing file (a folder with ``folder``) that ``options[key]`` names; ``None`` when absent, unless
    ``required``. ``fix`` (a sentence) says where to get it and ends every error about it."""
    given = options.given(key)
    if given is None:
        if required:
            raise InputError(f"{options.owner} needs {options.spelled(key, 'PATH')}. {fix}")
        return None
    path = Path(given).expanduser()
    wanted = "folder" if folder else "file"
    if not path.exists():
        raise InputError(f"{options.spelled(key, given)}: no such file or folder. {fix}")
    if path.is_dir() != folder:
        raise InputError(f"{options.spelled(key, given)}: not a {wanted}. {fix}")
    return path


def device_option(options: Options, default: str | None = None, key: str = "device") -> torch.device:
    """``options[key]`` as a torch device (``cpu``, ``cuda``, ``cuda:1``); when absent, ``default``, or with no
    default the first GPU when there is one, else the CPU. A CUDA device on a machine without one is refused."""
    import torch  # here, not at the top: the option checks must not load torch for metrics that do not use it

    given = options.given(key)
    if given is None:
        return torch.device(default or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(given)
    except RuntimeError:
        raise options.refuse(key, given, "a torch device such as cpu, cuda or cuda:0") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{options.spelled(key, given)}: this machine has no CUDA device; use "
                         f"{options.spelled(key, 'cpu')}")
    return device
