"""Turning rows into text: ``render`` (table | csv | json | md); the number formatters (``num``, ``human``, ``pct``,
``ci``) live in archbench.bench.numfmt and are re-exported here. Numbers become display strings here and in the renderers that call these."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from archbench.bench.numfmt import ci, human, num, pct  # noqa: F401  (one home: bench/numfmt.py)

FORMATS = ("table", "csv", "json", "md")


DPI = 130  # every plot's resolution (report.plots, report.generate, report.serving)


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
