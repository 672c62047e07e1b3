"""Run-to-run noise of the regression benchmarks, from pytest-benchmark JSON files (saved or --benchmark-json).

    python tests/benchmarks/noise.py BASELINE.json RUN1.json [RUN2.json ...]

For each statistic pytest-benchmark can gate on (``--benchmark-compare-fail=STAT:X%``: min, median, mean) it prints
the slowdown of every run against the baseline, (run / baseline - 1) x 100 per benchmark: their distribution and
the worst benchmark of each run. A gate's threshold must sit above the largest slowdown seen between runs of
*unchanged* code, or it fails at random. Not a test (no ``test_`` prefix): pytest does not collect it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STATS = ("min", "median", "mean")


def load(path: str) -> dict[str, dict[str, float]]:
    """fullname -> pytest-benchmark stats of one JSON file."""
    return {b["fullname"]: b["stats"] for b in json.loads(Path(path).read_text())["benchmarks"]}


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of already sorted values."""
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def report(baseline: str, runs: list[str]) -> str:
    base = load(baseline)
    lines = [f"baseline {baseline}; {len(runs)} runs; {len(base)} benchmarks", "",
             "| stat | slowdown median | p90 | p95 | max | worst benchmark per run (slowdown) |",
             "|---|---|---|---|---|---|"]
    for stat in STATS:
        deltas: list[float] = []
        worst: list[str] = []
        for path in runs:
            cur = load(path)
            d = {k: (cur[k][stat] / base[k][stat] - 1) * 100 for k in base if k in cur and base[k][stat] > 0}
            deltas += d.values()
            name = max(d, key=d.__getitem__)
            worst.append(f"{name.split('::')[-1]} {d[name]:+.0f}%")
        s = sorted(deltas)
        lines.append(f"| {stat} | {quantile(s, 0.5):+.1f}% | {quantile(s, 0.9):+.1f}% | {quantile(s, 0.95):+.1f}% "
                     f"| {s[-1]:+.1f}% | {'; '.join(worst)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(report(sys.argv[1], sys.argv[2:]))
