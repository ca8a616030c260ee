"""Options of metrics and benchmark lists (``--metric-option``, ``--benchmark-option``): one rule for refusing a
key the metric or benchmark does not take, so that a typo is never silently ignored."""

from __future__ import annotations

from collections.abc import Mapping

from ..codecs import InputError


def check_options(owner: str, options: Mapping[str, str] | None, known: Mapping[str, str]) -> dict[str, str]:
    """``options`` as a dict, after refusing keys not in ``known`` (key -> one-line help, listed in the error).

    ``owner`` names the metric or benchmark as the message should (``"metric 'wer'"``, ``"benchmark hdtf"``).
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        listed = "; ".join(f"{key}: {help_}" for key, help_ in known.items())
        raise InputError(f"{owner} has no option(s) {unknown} (unknown options are refused so that a typo is not "
                         f"ignored); its options are: {listed}")
    return options
