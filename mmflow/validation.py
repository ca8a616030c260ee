"""Range checks for numbers a user (or a file from someone else) gives: refused where they enter, with a message
that names the input, the accepted range and the fix, instead of a deep exception or an absurd allocation later.

Each module keeps its own limits (a fact has one home); this module only says how a limit is checked and worded.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass


class InputRangeError(ValueError):
    """A number outside the range its input accepts. The message names the input, the range and the fix."""


@dataclass(frozen=True)
class Range:
    """Accepted values of one numeric input: ``low ≤ value ≤ high`` (``low < value`` with ``open_low``)."""

    low: float
    high: float
    integer: bool = False
    open_low: bool = False

    def describe(self) -> str:
        low = "(" if self.open_low else "["
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {low}{_fmt(self.low)}, {_fmt(self.high)}]"

    def check(self, name: str, value, fix: str = "") -> float | int:
        """``value`` as an ``int`` / ``float`` when it lies in the range; else :class:`InputRangeError`."""
        hint = f"; {fix}" if fix else ""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputRangeError(f"{name} must be {self.describe()}, got {value!r}{hint}")
        if self.integer and not float(value).is_integer():
            raise InputRangeError(f"{name} must be {self.describe()}, got {value!r}{hint}")
        number = int(value) if self.integer else float(value)
        above_low = self.low < number if self.open_low else self.low <= number
        if not (above_low and number <= self.high):  # NaN and ±inf fail these comparisons too
            raise InputRangeError(f"{name} must be {self.describe()}, got {value!r}{hint}")
        return number


def _fmt(value: float) -> str:
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:g}"
