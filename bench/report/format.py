"""Turning rows into text: table | csv | json | md. The only place numbers become display strings."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

FORMATS = ("table", "csv", "json", "md")


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


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def render(rows: Sequence[dict[str, Any]], fmt: str, headers: Sequence[str] | None = None) -> str:
    """Render a list of flat dicts. csv/json keep raw values; table/md are for people."""
    cols = list(headers) if headers is not None else (list(rows[0]) if rows else [])
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in cols} for r in rows], indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        return buf.getvalue().rstrip("\n")
    table = [[r.get(c, "") for c in cols] for r in rows]
    return tabulate(table, headers=cols, tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
