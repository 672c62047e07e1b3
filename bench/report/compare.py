"""``archbench compare`` as text: the table, each cell's verdict in words, the legend, the summary line, markdown,
JSON and flat CSV rows. Renders archbench.bench.analyze.compare's Comparison; computes nothing."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tabulate import tabulate

from archbench.bench.analyze.compare import CellComparison, Change, Comparison, shown_metrics
from archbench.bench.report.format import num


def _pct_cell(ch: Change | None) -> str:
    if ch is None or ch.change is None:
        return "-"
    mark = {True: " *", False: "", None: " ?"}[ch.significant]
    if ch.change >= 1.0:  # +11007.6% reads worse than 111x
        return f"{1 + ch.change:.3g}x{mark}"
    return f"{ch.change:+.1%}{mark}"


def verdict(c: CellComparison) -> str:
    """One cell's outcome in words: FAIL and why, its status, slower / faster / no significant change; with marks
    for an unstable cell, a busy machine and a different environment."""
    if c.failures:
        text = ("FAIL: " if c.gated else "beyond threshold, not gated: ") + "; ".join(c.failures)
    elif c.status != "compared":
        text = c.status
    else:
        p50 = c.changes.get("p50_ms")
        if p50 is not None and p50.significant:
            text = "slower" if (p50.change or 0) > 0 else "faster"
        elif p50 is not None and p50.significant is None:
            text = "untested (no raw samples)"
        else:
            text = "no significant change"
    if c.unstable:
        text += " [imprecise: p50 interval above its target]" if c.repetitions >= 2 else " [unstable: CV > 10%]"
    if c.busy_pct is not None:
        text += f" [busy machine: {c.busy_pct:.0f}% other CPU]"
    if not c.env_match:
        text += f" [env differs: {c.env_diff}" + ("]" if c.gated else "; not gated]")
    return text


COLUMNS = ("model", "runtime", "precision", "batch", "device", "p50 ms base", "p50 ms new", "Δ p50", "Δ p95",
           "Δ samples/s", "Δ peak RSS", "test", "verdict")


def table_rows(result: Comparison) -> list[list[str]]:
    """Rows for COLUMNS, display strings (' *' significant, ' ?' untested)."""
    rows = []
    for c in result.cells:
        p50 = c.changes.get("p50_ms")
        model = c.model + (f" {c.knobs}" if c.knobs not in ("", "{}") else "") + \
            ("" if c.mode == "infer" else f" ({c.mode})")
        rows.append([
            model, c.runtime, c.precision, str(c.batch), c.device,
            num(p50.base if p50 else None), num(p50.new if p50 else None),
            _pct_cell(p50), _pct_cell(c.changes.get("p95_ms")), _pct_cell(c.changes.get("throughput_sps")),
            _pct_cell(c.changes.get("peak_rss_mib")),
            _test_cell(c),
            verdict(c),
        ])
    return rows


def _test_cell(c: CellComparison) -> str:
    """What the significance rests on: 'reps 3' (Welch on per-repetition values) or the one-loop MWU p-value."""
    if c.repetitions >= 2:
        return f"reps {c.repetitions}"
    if c.mwu is None:
        return "-"
    return "MWU p " + (f"{c.mwu.p_value:.2g}" if c.mwu.p_value >= 1e-4 else "<1e-4")


def legend(result: Comparison) -> str:
    gate = ", ".join(t.describe() for t in result.thresholds) or "none (report only)"
    reps = any(c.repetitions >= 2 for c in result.cells)
    ones = any(c.status == "compared" and c.repetitions < 2 for c in result.cells)
    tests = []
    if reps:
        tests.append(f"with repetitions: Welch's t on the per-repetition values p < {result.alpha:g}")
    if ones:
        tests.append(f"one repetition: Mann-Whitney U p < {result.alpha:g} and the bootstrap "
                     f"{1 - result.alpha:.0%} CI of the ratio excludes 1")
    floor = "no noise floor"
    if result.noise:
        r, at_r = result.floor()
        floor = (f"and |Δ| > the noise floor: per-process noise {result.noise:.1%} scaled to the runs' repetitions, "
                 f"(1 + noise)^sqrt(1/R_base + 1/R_new) - 1, e.g. {at_r:.1%} at {r} a side")
    return (f"Δ = new / base - 1 (a rise beyond +100% shown as the ratio, e.g. 3.2x). * = significant "
            f"({'; '.join(tests) or 'no test'}; {floor}); ? = untested (single value or no raw samples). "
            f"Gate: {gate}{' (--force: env differences gated too)' if result.force else ''}.")


def summary(result: Comparison) -> str:
    n = len(result.cells)
    compared = [c for c in result.cells if c.status == "compared"]
    sig = [c for c in compared if (ch := c.changes.get("p50_ms")) is not None and ch.significant]
    env = [c for c in result.cells if not c.env_match]
    parts = [f"{n} cells, {len(compared)} compared", f"{len(sig)} with a significant p50 change"]
    if env:
        parts.append(f"{len(env)} with a different environment" + ("" if result.force else " (not gated)"))
    if result.thresholds:
        parts.append(f"{len(result.failures)} failing the gate")
    return "; ".join(parts)


def to_json(result: Comparison) -> dict[str, Any]:
    cells = []
    for c in result.cells:
        d = asdict(c)
        d["mwu"] = None if c.mwu is None else {**asdict(c.mwu), "prob_new_greater": c.mwu.prob_new_greater}
        d["failed"] = c.failed
        d["verdict"] = verdict(c)
        cells.append(d)
    return {"alpha": result.alpha, "force": result.force,
            "thresholds": [{"metric": t.metric, "limit": t.limit} for t in result.thresholds],
            "exit_code": result.exit_code, "cells": cells}


def flat_rows(result: Comparison) -> list[dict[str, Any]]:
    """One flat dict per cell (for CSV): identity, status, env, then base/new/change/CI/significant per metric."""
    names = shown_metrics(result.thresholds)
    rows = []
    for c in result.cells:
        row: dict[str, Any] = {"model": c.model, "knobs": c.knobs, "mode": c.mode, "runtime": c.runtime,
                               "precision": c.precision, "batch": c.batch, "device": c.device, "threads": c.threads,
                               "status": c.status,
                               "env_match": c.env_match, "env_diff": c.env_diff,
                               "mwu_p": None if c.mwu is None else c.mwu.p_value}
        for m in names:
            ch = c.changes.get(m)
            for k in ("base", "new", "change", "ci_lo", "ci_hi", "significant"):
                row[f"{m}_{k}"] = None if ch is None else getattr(ch, k)
        row["failed"] = c.failed
        row["verdict"] = verdict(c)
        rows.append(row)
    return rows


def markdown(result: Comparison, base: str, new: str) -> str:
    """The comparison as a markdown document (``archbench compare --md`` / ``--format md``)."""
    return "\n".join([
        "# archbench compare", "", f"BASE `{base}` vs NEW `{new}`", "", legend(result), "",
        tabulate(table_rows(result), headers=COLUMNS, tablefmt="github", disable_numparse=True), "",
        f"**{summary(result)}**", "",
    ])


def table(result: Comparison) -> str:
    """The terminal table, the legend and the summary line."""
    return "\n".join([tabulate(table_rows(result), headers=COLUMNS, tablefmt="simple", disable_numparse=True), "",
                      legend(result), summary(result)])
