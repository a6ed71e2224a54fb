"""Value checks of option parameters: an ``OptionError`` naming the parameter (the CLI edge shows the flag)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from common.core.errors import OptionError, literal

__all__ = [
    "check_choice",
    "check_param",
    "range_problem",
]


def range_problem(
    value: float | int,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> str | None:
    """``"must be in [0, 1], got 2"`` when ``value`` is not a finite number in the interval, else None."""
    ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if ok:
        return None
    if lo is not None and hi is not None:
        want = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        want = f"{'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        want = f"{'<' if hi_open else '<='} {hi:g}"
    else:
        want = "a finite number"
    return f"must be {want}, got {value}"


def check_param(
    param: str,
    value: float | int | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """OptionError naming ``param`` unless ``value`` is in the interval (None: not given, fine)."""
    if value is None:
        return
    problem = range_problem(value, lo, hi, lo_open=lo_open, hi_open=hi_open)
    if problem is not None:
        raise OptionError(param, "{" + param + "} " + literal(problem))


def check_choice(param: str, value: str, choices: Sequence[str]) -> None:
    """OptionError naming ``param`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise OptionError(param, "{" + param + "} " + literal(f"{value}: choose one of {', '.join(choices)}"))
