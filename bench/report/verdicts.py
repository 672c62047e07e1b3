"""Budget verdicts, picks and flags as text: terminal tables, a markdown section for report.md, JSON.

The report layer for archbench.bench.analyze.budgets and archbench.bench.analyze.select: the only place their numbers become display strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from archbench.bench.analyze.budgets import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    Budget,
    RecordVerdict,
    TermVerdict,
    record_label,
    summary,
)
from archbench.bench.analyze.metrics import metric
from archbench.bench.analyze.select import Flag, Pick
from archbench.bench.record import Record
from archbench.bench.report.format import num

_MARK = {PASS: "ok", FAIL: "FAIL", INCONCLUSIVE: "?", ERROR: "ERR", SKIPPED: "-"}


def term_cell(tv: TermVerdict) -> str:
    """'1.23 [1.1, 1.4] ok': the value, its bounds where the verdict was judged on an interval, and a mark."""
    s = num(tv.value, 4)
    if tv.n is not None and (tv.lower is not None or tv.upper is not None):
        s += f" [{num(tv.lower, 3)}, {num(tv.upper, 3)}]"
    return f"{s} {_MARK[tv.verdict]}"


def budget_header(budget: Budget) -> str:
    name = f"profile {budget.name!r} of {budget.source}" if budget.name else repr(budget.source)
    desc = f" ({budget.description})" if budget.description else ""
    return (f"budget {name}{desc}: {', '.join(str(t) for t in budget.terms)}; timed metrics judged on their "
            f"{budget.confidence:.0%} interval [lower, upper] over repetitions (one repetition: distribution-free "
            "bounds from its samples)")


def verdict_table(budget: Budget, verdicts: Sequence[RecordVerdict], fmt: str = "simple") -> str:
    headers = ["verdict", "cell", *[str(t.metric.name) for t in budget.terms]]
    rows = []
    for v in verdicts:
        if v.terms:
            cells = [term_cell(tv) for tv in v.terms]
        else:
            cells = ["-"] * len(budget.terms)
        rows.append([v.verdict, v.label, *cells])
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def reasons(verdicts: Sequence[RecordVerdict]) -> list[str]:
    """One line per term that did not PASS (and per ERROR/SKIPPED record), saying why."""
    out = []
    for v in verdicts:
        if v.verdict in (ERROR, SKIPPED):
            out.append(f"{v.label}: {v.verdict}: {v.reason[:300]}")
            continue
        for tv in v.terms:
            if tv.verdict == PASS:
                continue
            if tv.verdict == FAIL and tv.term.metric.quantile is None:
                why = f"{num(tv.value, 4)} vs {tv.term}"
            else:
                why = tv.reason
            out.append(f"{v.label}: {tv.term.metric.name} {tv.verdict}: {why}")
    return out


def summary_line(verdicts: Sequence[RecordVerdict]) -> str:
    s = summary(verdicts)
    return ", ".join(f"{n} {k}" for k, n in s.items() if n) or "no records"


def _brief(r: Record) -> str:
    parts = [f"{num(r.size_mib)} MiB", f"p50 {num(r.latency_p50_ms)} ms", f"p95 {num(r.latency_p95_ms)} ms"]
    if r.top1_agree is not None:
        parts.append(f"top-1 agree {num(r.top1_agree, decimals=3)}")
    if r.sqnr_db is not None:
        parts.append(f"SQNR {num(r.sqnr_db)} dB")
    return ", ".join(parts)


def pick_lines(p: Pick, records: Sequence[Record] = ()) -> list[str]:
    met = p.objective
    way = "smallest" if met.better == "lower" else "largest"
    if p.best is None:
        lines = [f"no record passes the budget, so there is nothing to pick by {met.name}"]
        if p.inconclusive:
            lines.append(f"{len(p.inconclusive)} INCONCLUSIVE record(s) not ranked (more samples or a missing "
                         "metric could decide them; reasons above): " + "; ".join(v.label for v in p.inconclusive[:5]))
        return lines
    ctx = records or [v.record for v in p.ranked]
    val = met.value(p.best.record, ctx)
    lines = [f"pick ({way} {met.name} that passes): {p.best.label}: {met.name} {num(val, 4)}; "
             f"{_brief(p.best.record)}"]
    for i, v in enumerate(p.ranked[1:6], 2):
        lines.append(f"  {i}. {v.label}: {met.name} {num(met.value(v.record, ctx), 4)}")
    if p.inconclusive:
        lines.append(f"  not ranked: {len(p.inconclusive)} INCONCLUSIVE (see the reasons above)")
    return lines


def flag_lines(flags: Sequence[Flag]) -> list[str]:
    out = []
    for f in flags:
        noise = ("beyond sampling noise" if f.beyond_noise
                 else "within sampling noise: the median bounds overlap")
        r, o = f.record, f.other
        if f.kind == "slower-than-fp32":
            family = "int8" if r.precision.startswith("int8") else r.precision
            out.append(f"{family} slower than fp32: {record_label(r)} p50 {num(r.latency_p50_ms)} ms "
                       f"is {f.ratio:.2f}x its fp32 parent's {num(o.latency_p50_ms)} ms ({noise})")
        else:
            out.append(f"dominated: {record_label(r)} ({num(r.size_mib)} MiB, p50 {num(r.latency_p50_ms)} ms) is "
                       f"bigger and {f.ratio:.2f}x slower than {record_label(o)} ({num(o.size_mib)} MiB, p50 "
                       f"{num(o.latency_p50_ms)} ms; {noise})")
    return out


def pareto_lines(fronts: Sequence[Sequence[Record]], axes: Sequence[str], records: Sequence[Record] = ()) -> list[str]:
    mets = [metric(a) for a in axes]
    out = []
    for front in fronts:
        if not front:
            continue
        r0 = front[0]
        models = sorted({r.model for r in front})
        out.append(f"Pareto front on {', '.join(axes)} ({', '.join(models)}, batch {r0.batch}, "
                   f"{r0.device}, {r0.threads} threads): {len(front)} record(s)")
        for r in front:
            vals = ", ".join(f"{m.name} {num(m.value(r, records or front))}" for m in mets)
            out.append(f"  {record_label(r)}: {vals}")
    return out


def markdown_section(budget: Budget, verdicts: Sequence[RecordVerdict], p: Pick | None,
                     fronts: Sequence[Sequence[Record]], axes: Sequence[str], flags: Sequence[Flag],
                     records: Sequence[Record] = ()) -> str:
    lines = ["## Budget verdicts", "", budget_header(budget) + ".", "",
             "Each cell: value (point estimate) [lower, upper bound for percentiles; - where no order statistic "
             "is a bound at this sample count] and ok / FAIL / ? (inconclusive).", "", verdict_table(budget, verdicts, "github"), "",
             f"Summary: {summary_line(verdicts)}.", ""]
    why = reasons(verdicts)
    if why:
        lines += ["Why not PASS:", "", *[f"- {w}" for w in why], ""]
    if p is not None:
        lines += ["## Pick", "", *[("- " + ln.strip()) if i else f"**{ln}**" for i, ln in
                                   enumerate(pick_lines(p, records))], ""]
    pl = pareto_lines(fronts, axes, records)
    if pl:
        lines += ["## Pareto front", "", *[("- " + ln.strip()) if ln.startswith("  ") else ln for ln in pl], ""]
    fl = flag_lines(flags)
    if fl:
        lines += ["## Flags", "", "int8 can be slower than fp32 on some CPUs; a variant bigger and slower than "
                  "another is never the right choice. Reported, not hidden:", "", *[f"- {f}" for f in fl], ""]
    return "\n".join(lines)


def verdicts_json(budget: Budget, verdicts: Sequence[RecordVerdict]) -> list[dict[str, Any]]:
    """Plain data (no display strings): one dict per record, one per term."""
    def clean(x: float | None) -> float | str | None:
        return x if x is None or math.isfinite(x) else repr(x)

    out = []
    for v in verdicts:
        r = v.record
        out.append({
            "cell": v.label, "model": r.model, "knobs": r.knobs, "runtime": r.runtime,
            "precision": r.precision, "batch": r.batch, "verdict": v.verdict, "reason": v.reason,
            "terms": [{"term": str(t.term), "verdict": t.verdict, "value": clean(t.value), "lower": clean(t.lower),
                       "upper": clean(t.upper), "n": t.n, "samples_needed": t.samples_needed, "reason": t.reason}
                      for t in v.terms],
        })
    return out
