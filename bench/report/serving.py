"""The serving section of report.md and of ``archbench run``'s summary (records of ``--scenario offline|server|
concurrency``): one row per serving cell with its validity, the --find-max-qps answers, and per server
configuration the latency-vs-offered-load curve, measured (with intervals) and predicted (analyze.capacity);
plus the plot of those curves. Renders archbench.bench.analyze.serving's results; formatting only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from archbench.bench.analyze.serving import LoadCurve, is_serving, load_curves, max_qps_answers
from archbench.bench.record import Record
from archbench.bench.report.format import DPI, ci, num

COLS = ["model", "runtime", "precision", "scenario", "status", "offered QPS", "achieved QPS [95% CI]",
        "p50 ms", "p90 ms", "p99 ms [95% CI]", "mean batch", "util.", "loadgen late p99 ms", "reps"]


NOTE = ("One request = one sample. **Latency** = completion - arrival, queueing and batching included (server: "
        "from the *scheduled* Poisson arrival, so a late load generator counts against the server). **Achieved "
        "QPS** = completed requests / (last completion - start). p50/p90/p99 and achieved QPS are geometric means "
        "over repetitions (one worker process each) with a 95% t interval. A run is **INVALID** (LoadGen's rule) "
        "when it completed fewer than --min-queries, issued for less than --min-duration, its queue grew (backlog "
        "at the last arrival above max(32, 4 x executors x max batch, tolerance x requests)), it achieved less "
        "than (1 - tolerance) x the offered QPS, or the load generator fell behind its schedule; the numbers of an "
        "INVALID run are shown but never pass a budget. util. = busy executor time / (executors x wall time). "
        "loadgen late = how late the (sleeping) load-generator thread issued arrivals vs their schedule.")


def _status(r: Record) -> str:
    if not r.ok:
        return f"{r.status}: {(r.error or '')[:60]}"
    if r.valid is False:
        return f"INVALID: {r.invalid_reason[:90]}"
    return "VALID" if r.valid else "ok"


def rows(records: Sequence[Record]) -> list[list[str]]:
    out = []
    for r in records:
        if not is_serving(r):
            continue
        out.append([r.model + ("" if (r.knobs or "{}") == "{}" else " " + r.knobs), r.runtime, r.precision,
                    f"{r.mode} {r.scenario}", _status(r), num(r.offered_qps),
                    ci(r.throughput_sps, r.throughput_lo_sps, r.throughput_hi_sps), num(r.latency_p50_ms),
                    num(r.latency_p90_ms), ci(r.latency_p99_ms, r.latency_p99_lo_ms, r.latency_p99_hi_ms),
                    num(r.mean_batch), "-" if r.utilization is None else f"{r.utilization:.0%}",
                    num(r.loadgen_late_p99_ms), num(r.repetitions)])
    return out


def answer_lines(records: Sequence[Record]) -> list[str]:
    """One line per --find-max-qps answer: 'mlp_s onnxruntime fp32 | executors=1 ...: max QPS 640 at p99_ms<=5
    (bracket 640-720 qps; p99 3.1 ms [2.8, 3.5] there; 7 trials)'."""
    out = []
    for a in max_qps_answers(records):
        if a.max_qps:
            bracket = f"{a.max_qps:g}-{a.first_failure:g} qps" if a.first_failure else f">= {a.max_qps:g} qps: no " \
                                                                                      "trial failed"
            out.append(f"{a.cell} | {a.config}: max QPS {a.max_qps:g} at {a.sla} (bracket {bracket}; p99 "
                       f"{ci(a.p99_ms, a.p99_lo_ms, a.p99_hi_ms)} ms there; {a.trials} trials)")
        else:
            out.append(f"{a.cell} | {a.config}: no offered QPS met {a.sla} (lowest tried: "
                       f"{num(a.first_failure)} qps; {a.trials} trials)")
    return out


def serving_table(records: Sequence[Record], fmt: str = "simple") -> str:
    """The serving table in a tabulate format; "" without serving records."""
    rs = rows(records)
    return tabulate(rs, headers=COLS, tablefmt=fmt, disable_numparse=True) if rs else ""


def _curve_md(c: LoadCurve) -> list[str]:
    rs = [[num(p.offered_qps), ci(p.achieved_qps, p.achieved_lo, p.achieved_hi), num(p.p50_ms),
           ci(p.p99_ms, p.p99_lo_ms, p.p99_hi_ms), num(p.predicted_p99_ms),
           "VALID" if p.valid else f"INVALID: {p.reason[:70]}" if p.valid is False else "-", num(p.repetitions)]
          for p in c.points]
    cap = f" Predicted capacity {num(c.capacity_qps)} QPS." if c.capacity_qps else ""
    lines = [f"**{c.label}**: {c.note}.{cap}", "",
             tabulate(rs, headers=["offered QPS", "achieved QPS [95% CI]", "p50 ms", "p99 ms [95% CI]",
                                   "predicted p99 ms", "validity", "reps"], tablefmt="github", disable_numparse=True),
             ""]
    if c.predicted:
        lines += ["Predicted (capacity model): " + ", ".join(
            f"{num(p.qps)} qps -> p99 {num(p.p99_ms)} ms" for p in c.predicted), ""]
    return lines


def serving_md(records: Sequence[Record]) -> list[str]:
    """Markdown lines of the serving section; empty without serving records."""
    table = serving_table(records, "github")
    if not table:
        return []
    lines = ["## Serving scenarios", "", NOTE, "", table, ""]
    answers = answer_lines(records)
    if answers:
        lines += ["### Highest QPS that meets the SLA (--find-max-qps)", "",
                  "Doubling then bisection over offered QPS; a trial passes when its run is VALID and the SLA holds "
                  "on its estimates. The bracket is [highest passing, lowest failing] offered QPS.", "",
                  *[f"- {a}" for a in answers], ""]
    curves = load_curves(records)
    if curves:
        lines += ["### Latency against offered load", "",
                  "Measured server runs (search trials included) and the capacity model's prediction from the "
                  "single-stream samples of the same cell (archbench.bench.analyze.capacity: a discrete-event "
                  "simulation of this queue over the empirical service times; it assumes executors do not slow "
                  "each other down).", ""]
        for c in curves:
            lines += _curve_md(c)
    return lines


def plot_load_curves(records: Sequence[Record], out: Path) -> list[Path]:
    """latency_vs_load.png into ``out``: p99 against offered QPS per server configuration, measured points with
    their 95% intervals (hollow x: INVALID) and the predicted curve dashed. Nothing without server records."""
    curves = load_curves(records)
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archbench.bench.atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        ok = [p for p in c.points if p.valid is not False and p.p99_ms]
        if ok:
            ys = [p.p99_ms for p in ok]
            err = [[y - (p.p99_lo_ms or y) for y, p in zip(ys, ok, strict=True)],
                   [(p.p99_hi_ms or y) - y for y, p in zip(ys, ok, strict=True)]]
            ax.errorbar([p.offered_qps for p in ok], ys, yerr=err, marker="o", capsize=3, color=color,
                        linestyle="-", label=f"{c.label} measured")
        bad = [p for p in c.points if p.valid is False and p.p99_ms]
        if bad:
            ax.scatter([p.offered_qps for p in bad], [p.p99_ms for p in bad], marker="x", color=color,
                       label=f"{c.label} INVALID")
        if c.predicted:
            pts = [p for p in c.predicted if p.stable]
            ax.plot([p.qps for p in pts], [p.p99_ms for p in pts], linestyle="--", color=color,
                    label=f"{c.label} predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, requests/s")
    ax.set_ylabel("p99 latency, ms (completion - arrival)")
    ax.set_title("p99 latency against offered load (bars: 95% interval over repetitions)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = out / "latency_vs_load.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return [path]
