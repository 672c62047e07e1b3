"""Tables of records: the compact end-of-run table (``archbench run``) and report.md's table per model family.

Columns that only some records carry (fidelity metrics such as ``top1_agree``, ``cosine``, ``sqnr_db``; the budget
verdict) appear only when at least one record has them; a record without them shows "-".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from tabulate import tabulate

from archbench.bench.analyze.budgets import Verdicts
from archbench.bench.analyze.findings import reportable
from archbench.bench.analyze.stats import CV_WARN
from archbench.bench.env import fingerprint
from archbench.bench.record import Record
from archbench.bench.report.findings import verdict_word
from archbench.bench.report.format import human, num, pct

TABLE_COLS = ("model", "runtime", "precision", "batch", "status", "p50 ms", "p50 95% CI", "reps", "p95 ms",
              "samples/s", "MACs", "size MiB", "peak RSS MiB")


def cv_cell(r: Record) -> str:
    """'55% !' (the mark when CV > CV_WARN), '-' without one."""
    if r.latency_cv is None:
        return "-"
    return f"{r.latency_cv:.0%}" + (" !" if r.latency_cv > CV_WARN else "")


def interval_cell(r: Record) -> str:
    """'0.412-0.455 (±5.0%)', or the CV of the one loop when there is no interval ('CV 12% !')."""
    if r.latency_p50_lo_ms is None or r.latency_p50_hi_ms is None:
        return "-" if r.latency_cv is None else f"CV {cv_cell(r)}"
    return f"{num(r.latency_p50_lo_ms)}-{num(r.latency_p50_hi_ms)} ({ci_cell(r)})"


def ci_cell(r: Record) -> str:
    """The p50 interval as '+/-4.2%' (with ' !' when it missed its precision target: ``stable`` False); one
    repetition has none: '-'."""
    if r.p50_rel_ci is None:
        return "-"
    return f"±{r.p50_rel_ci:.1%}" + (" !" if r.stable is False else "")


def table_rows(records: Sequence[Record]) -> list[list[str]]:
    """Rows for TABLE_COLS (the compact table `archbench run` prints)."""
    rows = []
    for r in records:
        rows.append([
            r.model, r.runtime, r.precision, str(r.batch),
            r.status + ("" if r.ok else f": {str(r.error or '')[:60]}"),
            num(r.latency_p50_ms), ci_cell(r), "-" if r.repetitions is None else str(r.repetitions),
            num(r.latency_p95_ms), num(r.throughput_sps), human(r.macs), num(r.size_mib), num(r.peak_rss_mib),
        ])
    return rows


# Optional columns: (record field, header, formatter). Shown only when some record has a value.
OPTIONAL_COLS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("cuda_max_allocated_mib", "CUDA peak MiB", num),
    ("train_peak_mem_mib", "train peak MiB", num),
    ("activation_mib_per_sample", "act. MiB/sample", num),
    ("max_batch", "max batch", num),
    ("time_to_train_s", "time to train s", num),
    ("top1_agree", "top-1 agree", pct),
    ("cosine", "cosine", lambda x: num(x, decimals=5)),
    ("sqnr_db", "SQNR dB", lambda x: num(x, decimals=1)),
    ("max_abs_err", "max abs err", lambda x: num(x, 2)),
    ("task_metric", "task metric", num),
)


def verdict_cell(r: Record, verdicts: Verdicts) -> str:
    """'✓ pass', '✗ **FAIL**: why', '? inconclusive: why', or '-' when no verdict is reported beside ``r``."""
    v, why = verdict_word(r, verdicts)
    if v is None:
        return "-"
    if v == "pass":
        return "✓ pass"
    if v == "fail":
        return "✗ **FAIL**" + (f": {why}" if why else "")
    if v == "inconclusive":
        return "? inconclusive" + (f": {why}" if why else "")
    return v + (f": {why}" if why else "")


def model_name(r: Record) -> str:
    """The model with its knobs, when it has any: 'resnet_s {"width": 0.5}'."""
    return r.model + (f" {r.knobs}" if r.knobs not in (None, "", "{}") else "")


def family_tables(records: Sequence[Record], verdicts: Verdicts | None = None
                  ) -> dict[str, tuple[list[str], list[list[str]]]]:
    """family -> (headers, rows) of its ok cells, models in first-seen order; optional columns only when present."""
    from archbench.bench.analyze.merge import machine_labels

    verdicts = verdicts or {}
    ok = [r for r in reportable(records) if r.ok and not r.scenario]  # serving runs: report.serving's table
    labels = machine_labels(records) if records else {}
    many = len(labels) > 1
    modes = len({r.mode or "infer" for r in ok}) > 1 or any((r.mode or "infer") != "infer" for r in ok)
    optional = [(f, h, fmt) for f, h, fmt in OPTIONAL_COLS if any(getattr(r, f) is not None for r in ok)]
    has_verdict = any(verdict_word(r, verdicts)[0] is not None for r in ok)
    headers = ["model", *(["mode"] if modes else []), "runtime", "precision", "batch",
               *(["machine"] if many else []), "params", "MACs",
               "size MiB", "p50 ms", "p50 95% CI ms", "p95 ms", "reps", "samples/s", "peak RSS MiB",
               *[h for _, h, _ in optional],
               *(["budget"] if has_verdict else [])]
    order: dict[str, int] = {}
    for r in ok:
        order.setdefault(r.model, len(order))
    by_family: dict[str, list[Record]] = defaultdict(list)
    for r in sorted(ok, key=lambda r: order[r.model]):  # stable: runtimes stay in measured order
        by_family[r.family or "other"].append(r)
    out = {}
    for fam, rs in by_family.items():
        rows = []
        for r in rs:
            rows.append([
                model_name(r), *([r.mode or "infer"] if modes else []), r.runtime, r.precision, str(r.batch),
                *([labels[fingerprint(r)]] if many else []),
                human(r.params), human(r.macs), num(r.size_mib),
                num(r.latency_p50_ms), interval_cell(r), num(r.latency_p95_ms),
                "-" if r.repetitions is None else str(r.repetitions), num(r.throughput_sps), num(r.peak_rss_mib),
                *[("-" if getattr(r, f) is None else fmt(getattr(r, f))) for f, _, fmt in optional],
                *([verdict_cell(r, verdicts)] if has_verdict else []),
            ])
        out[fam] = (headers, rows)
    return out


# Columns of text; every other column holds numbers and is right-aligned.
_TEXT_COLS = {"model", "mode", "runtime", "precision", "machine", "budget", "module", "type", "bound",
              "lowest intensity (FLOP/B)", "bytes/forward"}


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table, text columns left-aligned and number columns right-aligned."""
    align = ["left" if h in _TEXT_COLS else "right" for h in headers]
    return tabulate(rows, headers=list(headers), tablefmt="github", disable_numparse=True, colalign=align)
