"""Numbers for people: ``num`` (the one number formatter), ``human`` (SI / binary prefixes), ``pct``, ``ci``.

Every renderer (report/), every message that states a value (analyze.budgets' reasons, the pytest fixture's
verdicts, kernel tables) formats numbers here, so a value reads the same everywhere. Import-light.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def human(n: float | int | None, unit: str = "", binary: bool = False) -> str:
    """1234567 -> '1.23 M' (or MiB-style with binary=True). None -> '-'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    base = 1024.0 if binary else 1000.0
    prefixes = ["", "Ki", "Mi", "Gi", "Ti"] if binary else ["", "K", "M", "G", "T", "P"]
    x = float(n)
    i = 0
    while abs(x) >= base and i < len(prefixes) - 1:
        x /= base
        i += 1
    if i == 0 and float(n).is_integer():
        return f"{int(n)}{(' ' + unit) if unit else ''}"
    return f"{x:.3g} {prefixes[i]}{unit}".rstrip()


def num(x: Any, digits: int = 3, *, decimals: int | None = None) -> str:
    """A number for people, the one formatter every renderer uses.

    ``digits`` significant digits (1.23, 0.0456); thousands separators from 1000 up (33,332; integers always so);
    below 0.001 at most 2 significant digits (1.2e-05); exactly 0 is "0". ``decimals`` asks for a fixed number of
    decimals instead (0.99910, 24.3). None is "-", NaN "nan", infinities "inf" / "-inf"; anything that is not a
    number (a bool, a string) is shown as str()."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return str(x)
    x = int(x) if isinstance(x, numbers.Integral) else float(x)  # numpy scalars too
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if decimals is not None:
        return f"{x:.{decimals}f}"
    if x == 0:
        return "0"
    if isinstance(x, int) or abs(float(f"{x:.{digits}g}")) >= 1000:  # 999.7 at 3 digits: 1,000, not 1e+03
        return f"{x:,.0f}"
    if abs(x) < 0.001:
        return f"{x:.{min(digits, 2)}g}"
    return f"{x:.{digits}g}"


def ci(value: float | None, lo: float | None, hi: float | None) -> str:
    """'1.23 [1.1, 1.4]': a value with its interval when it has one; '-' without a value."""
    if value is None:
        return "-"
    return num(value) + ("" if lo is None or hi is None else f" [{num(lo)}, {num(hi)}]")


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.97 -> '97.0%'; None '-'."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{100 * x:.{digits}f}%"
