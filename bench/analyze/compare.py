"""``compare BASE NEW``: per-cell change of latency, throughput and memory, with significance tests on the raw
samples so that noise is not reported as a regression.

    result = compare(load_records([base]), load_records([new]), parse_fail_on("p95_ms:+10%"))
    result.exit_code   # 1 when a gated change exceeds its threshold and is significant

**Significance.** A change of a sample-based metric (latency percentiles, mean, throughput) is *significant* when
both tests agree at level alpha (default 0.05):

1. Mann–Whitney U (two-sided, normal approximation with tie correction and continuity correction) rejects
   "BASE and NEW latencies come from the same distribution": p < alpha. Rank-based, so a few outliers cannot
   make a change significant on their own.
2. The percentile-bootstrap (1 - alpha) confidence interval of the metric's ratio NEW/BASE (e.g. p95 of NEW over
   p95 of BASE, each side resampled with replacement) excludes 1.

Requiring both is deliberately conservative: a gate that cries wolf gets switched off. The price: a change
confined to the tail (p99 up while the bulk of the distribution does not move) fails test 1 and is not gated.
Both tests treat the timed iterations as independent draws, which back-to-back timings only approximate (a
busy machine makes neighbouring iterations slow together), so p-values are somewhat optimistic; the threshold
on the size of the change is the second guard. Single-valued metrics (peak memory) have no samples to test:
their changes are reported untested, and gated on the threshold alone.

**Gating.** ``--fail-on "p95_ms:+10%,throughput_sps:-5%"``: a cell fails when the metric moved in the stated
direction by more than the stated amount *and* the change is significant (or the metric is single-valued).
A cell that ran in BASE but failed in NEW fails the gate too. Cells whose environment fingerprints
(archbench.bench.env.fingerprint) differ are marked and never gated unless ``force`` is set.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from archbench.bench.analyze.stats import CV_WARN
from archbench.bench.env import fingerprint
from archbench.bench.errors import UsageError
from archbench.bench.measure.harness import BUSY_PCT

# ----------------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U statistic of NEW: the number of (base, new) pairs with new > base, ties counting 1/2
    z: float  # standardized U (continuity- and tie-corrected); > 0 means NEW tends to be larger (slower)
    p_value: float  # two-sided, normal approximation
    n_base: int
    n_new: int

    @property
    def prob_new_greater(self) -> float:
        """P(a NEW sample > a BASE sample) + P(tie)/2: 0.5 for no shift (the 'common-language effect size')."""
        return self.u / (self.n_base * self.n_new)


def _average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of x, ties sharing their average rank; and the size of every tie group."""
    order = np.argsort(x, kind="mergesort")
    _, start, counts = np.unique(x[order], return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0  # group occupying sorted positions start..start+t-1 -> mean 1-based rank
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks, counts


def mann_whitney_u(base: Sequence[float], new: Sequence[float]) -> MannWhitney:
    """Two-sided Mann–Whitney U test of NEW against BASE (normal approximation, tie and continuity corrected).

    U_new = R_new - n2 (n2 + 1) / 2, where R_new is the rank sum of NEW in the pooled sample (average ranks for ties).
    Under H0, E[U] = n1 n2 / 2 and Var[U] = n1 n2 / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))), n = n1 + n2,
    t = size of each tie group. z = (|U - E[U]| - 1/2) / sqrt(Var[U]) signed like U - E[U]; p = erfc(|z| / sqrt 2).
    The normal approximation is good from about 8 samples per side; archbench takes at least 20.
    """
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(new, dtype=np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs samples on both sides")
    ranks, ties = _average_ranks(np.concatenate([a, b]))
    u = float(ranks[n1:].sum() - n2 * (n2 + 1) / 2.0)
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value identical: no evidence of any shift
        return MannWhitney(u, 0.0, 1.0, n1, n2)
    diff = u - mu
    z = math.copysign(max(abs(diff) - 0.5, 0.0), diff) / math.sqrt(var)
    return MannWhitney(u, z, math.erfc(abs(z) / math.sqrt(2.0)), n1, n2)


# Statistics a bootstrap computes on each resample. Percentiles use numpy's "linear" method like archbench.bench.analyze.stats.
STATS = ("p50", "p90", "p95", "p99", "mean")
_Q = (50.0, 90.0, 95.0, 99.0)


def _stats_rows(x: np.ndarray) -> np.ndarray:
    """(k, n) resamples -> (len(STATS), k) statistics."""
    qs = np.percentile(x, _Q, axis=1, method="linear")
    return np.vstack([qs, x.mean(axis=1)])


@dataclass(frozen=True)
class RatioCI:
    ratio: float  # statistic of NEW / statistic of BASE, on the full samples
    lo: float  # percentile-bootstrap confidence interval of the ratio
    hi: float
    level: float  # e.g. 0.95

    @property
    def excludes_one(self) -> bool:
        return self.lo > 1.0 or self.hi < 1.0


def bootstrap_ratio_cis(
    base: Sequence[float], new: Sequence[float], alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
) -> dict[str, RatioCI]:
    """Percentile-bootstrap (1 - alpha) CIs of NEW/BASE for every statistic in STATS (p50 ... mean).

    Each of ``n_boot`` rounds resamples both sides with replacement (same size as the side) and takes the ratio
    of the statistic; the CI is the alpha/2 and 1 - alpha/2 quantiles of those ratios. Resamples are drawn in
    chunks so that memory stays ~ 16 MiB whatever the sample count. Deterministic for a given seed."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(new, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_ratio_cis needs samples on both sides")
    rng = np.random.default_rng(seed)
    point = _stats_rows(b[None, :])[:, 0] / _stats_rows(a[None, :])[:, 0]
    chunk = max(1, min(n_boot, 2_000_000 // max(a.size, b.size)))
    ratios = []
    done = 0
    while done < n_boot:
        k = min(chunk, n_boot - done)
        sa = _stats_rows(a[rng.integers(0, a.size, size=(k, a.size))])
        sb = _stats_rows(b[rng.integers(0, b.size, size=(k, b.size))])
        ratios.append(sb / sa)
        done += k
    r = np.concatenate(ratios, axis=1)
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2], axis=1)
    return {s: RatioCI(float(point[i]), float(lo[i]), float(hi[i]), 1 - alpha) for i, s in enumerate(STATS)}


# ----------------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    name: str  # the name --fail-on uses
    field: str  # the Record field
    stat: str | None  # the bootstrap statistic it is (STATS), None for a single-valued metric
    worse: int  # +1: larger is worse (latency, memory); -1: smaller is worse (throughput)
    inverse: bool = False  # the metric is 1/stat (throughput = batch / mean latency): its ratio is 1/stat ratio


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("p50_ms", "latency_p50_ms", "p50", +1),
    Metric("p90_ms", "latency_p90_ms", "p90", +1),
    Metric("p95_ms", "latency_p95_ms", "p95", +1),
    Metric("p99_ms", "latency_p99_ms", "p99", +1),
    Metric("mean_ms", "latency_mean_ms", "mean", +1),
    Metric("throughput_sps", "throughput_sps", "mean", -1, inverse=True),
    Metric("peak_rss_mib", "peak_rss_mib", None, +1),
    Metric("cuda_max_allocated_mib", "cuda_max_allocated_mib", None, +1),
)}
_ALIASES = {m.field: m.name for m in METRICS.values()} | {"sps": "throughput_sps", "rss_mib": "peak_rss_mib",
                                                          "memory": "peak_rss_mib"}
# What the table shows for every cell (the gate may use any metric of METRICS).
SHOWN = ("p50_ms", "p95_ms", "throughput_sps", "peak_rss_mib")


@dataclass(frozen=True)
class Threshold:
    metric: str  # a METRICS name
    limit: float  # signed fraction: +0.10 fails on a rise of more than 10%, -0.05 on a fall of more than 5%

    def describe(self) -> str:
        return f"{self.metric}:{self.limit:+.0%}" if abs(self.limit * 100 % 1) < 1e-9 else \
            f"{self.metric}:{self.limit:+.2%}"


_THRESHOLD_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*:\s*([+-]?)\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_fail_on(text: str | None) -> list[Threshold]:
    """'p95_ms:+10%,throughput_sps:-5%' -> thresholds. Without a sign, the metric's worse direction is meant."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _THRESHOLD_RE.match(part)
        if not m:
            raise UsageError(f"bad --fail-on item {part.strip()!r}: expected METRIC:+N% or METRIC:-N%, "
                             "e.g. p95_ms:+10%")
        name = _ALIASES.get(m.group(1), m.group(1))
        if name not in METRICS:
            raise UsageError(f"unknown --fail-on metric {m.group(1)!r}; known: {', '.join(METRICS)}")
        sign = {"+": 1, "-": -1, "": METRICS[name].worse}[m.group(2)]
        out.append(Threshold(name, sign * float(m.group(3)) / 100.0))
    return out


# ----------------------------------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Change:
    metric: str
    base: float | None
    new: float | None
    change: float | None  # new / base - 1
    ci_lo: float | None  # bootstrap CI of the change (ratio - 1); None for single-valued metrics
    ci_hi: float | None
    significant: bool | None  # None: not testable (single-valued metric or no raw samples)


@dataclass
class CellComparison:
    model: str
    knobs: str
    runtime: str
    precision: str
    batch: int
    device: str
    threads: int
    status: str  # compared | only in base | only in new | failed in base | failed in new | failed in both
    mode: str = "infer"  # infer | train (Record.mode)
    env_match: bool = True
    env_diff: str = ""  # which fingerprint fields differ, "field base -> new"
    changes: dict[str, Change] = field(default_factory=dict)
    mwu: MannWhitney | None = None
    failures: list[str] = field(default_factory=list)  # the thresholds this cell exceeded significantly
    gated: bool = True  # False when env differs and not forced
    unstable: bool = False  # CV > 10% on either side: the machine was noisy, re-measure before trusting a change
    busy_pct: float | None = None  # the larger other_cpu_pct of the two sides when above BUSY_PCT (archbench.bench.measure.harness)

    @property
    def failed(self) -> bool:
        return self.gated and bool(self.failures)


@dataclass
class Comparison:
    cells: list[CellComparison]
    thresholds: list[Threshold]
    alpha: float
    force: bool

    @property
    def failures(self) -> list[CellComparison]:
        return [c for c in self.cells if c.failed]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


_FP_FIELDS = ("cpu_model", "cpu_count", "gpu_name", "torch_version", "onnxruntime_version", "threads")


def _env_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in _FP_FIELDS if str(a.get(k, "")) != str(b.get(k, "")))


def _pair_key(r: dict[str, Any]) -> tuple:
    # archbench.bench.record.cell_key without threads: a thread-count change is an environment difference, not a new cell.
    return (r.get("model"), r.get("knobs") or "", r.get("runtime"), r.get("precision"), r.get("batch"),
            r.get("device"), r.get("mode") or "infer")


def pair_cells(
    base: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """(base, new) record pairs of the same cell; one side None when the other run lacks the cell.

    When a side holds several records of one cell (several machines or thread counts), records with the same
    fingerprint pair first, then the same hostname and threads, then the same threads."""
    nb: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in new:
        nb[_pair_key(r)].append(r)
    pairs: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    bb: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in base:
        bb[_pair_key(r)].append(r)
    for key, bs in bb.items():
        ns = list(nb.pop(key, []))
        bs = list(bs)
        if len(bs) == 1 and len(ns) == 1:
            pairs.append((bs[0], ns[0]))
            continue
        for same in (fingerprint, lambda r: (r.get("hostname"), r.get("threads")), lambda r: r.get("threads")):
            for b in list(bs):
                match = next((n for n in ns if same(n) == same(b)), None)
                if match is not None:
                    pairs.append((b, match))
                    bs.remove(b)
                    ns.remove(match)
        pairs += [(b, None) for b in bs] + [(None, n) for n in ns]
    for ns in nb.values():
        pairs += [(None, n) for n in ns]
    return pairs


def _cell(r: dict[str, Any], status: str) -> CellComparison:
    return CellComparison(model=str(r.get("model")), knobs=str(r.get("knobs") or ""), runtime=str(r.get("runtime")),
                          precision=str(r.get("precision")), batch=int(r.get("batch") or 0),
                          device=str(r.get("device")), threads=int(r.get("threads") or 0), status=status,
                          mode=str(r.get("mode") or "infer"))


def _change(m: Metric, b: dict[str, Any], n: dict[str, Any], cis: dict[str, RatioCI] | None,
            mwu: MannWhitney | None, alpha: float) -> Change:
    vb, vn = b.get(m.field), n.get(m.field)
    ch = vn / vb - 1.0 if vb and vn is not None else None
    if m.stat is None:
        return Change(m.name, vb, vn, ch, None, None, None)
    if cis is None or mwu is None:
        return Change(m.name, vb, vn, ch, None, None, None)
    ci = cis[m.stat]
    lo, hi = (1.0 / ci.hi - 1.0, 1.0 / ci.lo - 1.0) if m.inverse else (ci.lo - 1.0, ci.hi - 1.0)
    return Change(m.name, vb, vn, ch, lo, hi, bool(mwu.p_value < alpha and ci.excludes_one))


def _exceeds(t: Threshold, c: Change) -> bool:
    if c.change is None:
        return False
    return c.change > t.limit if t.limit >= 0 else c.change < t.limit


def compare_pair(
    b: dict[str, Any], n: dict[str, Any], thresholds: Sequence[Threshold] = (), alpha: float = 0.05,
    force: bool = False, n_boot: int = 1000, seed: int = 0,
) -> CellComparison:
    """Compare one cell measured in BASE (b) and NEW (n): changes, tests and the gate."""
    c = _cell(n, "compared")
    c.env_diff = _env_diff(b, n)
    c.env_match = not c.env_diff
    c.gated = c.env_match or force
    ok_b, ok_n = b.get("status") == "ok", n.get("status") == "ok"
    if not (ok_b and ok_n):
        c.status = "failed in both" if not (ok_b or ok_n) else ("failed in new" if ok_b else "failed in base")
        if c.status == "failed in new" and thresholds:
            c.failures.append(f"ok in base, {n.get('status')} in new: {str(n.get('error') or '')[:80]}")
        return c
    c.unstable = any((r.get("latency_cv") or 0) > CV_WARN for r in (b, n))
    busy = max((r.get("other_cpu_pct") or 0.0) for r in (b, n))
    c.busy_pct = busy if busy > BUSY_PCT else None
    sb, sn = b.get("samples_ms") or [], n.get("samples_ms") or []
    cis = None
    if len(sb) >= 2 and len(sn) >= 2:
        c.mwu = mann_whitney_u(sb, sn)
        cis = bootstrap_ratio_cis(sb, sn, alpha=alpha, n_boot=n_boot, seed=seed)
    wanted = list(SHOWN) + [t.metric for t in thresholds if t.metric not in SHOWN]
    for name in wanted:
        c.changes[name] = _change(METRICS[name], b, n, cis, c.mwu, alpha)
    for t in thresholds:
        ch = c.changes[t.metric]
        if _exceeds(t, ch) and ch.significant is not False:
            if ch.significant is None and METRICS[t.metric].stat is not None:
                continue  # a latency metric without raw samples cannot be shown significant: not gated
            c.failures.append(f"{t.metric} {ch.change:+.1%} beyond {t.limit:+.0%}"
                              + ("" if ch.significant else " (single value, untested)"))
    return c


def compare(
    base: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], thresholds: Sequence[Threshold] = (),
    alpha: float = 0.05, force: bool = False, n_boot: int = 1000, seed: int = 0,
) -> Comparison:
    """Compare every cell of BASE with the same cell of NEW (see the module docstring for the rules)."""
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
    def measured(rs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:  # --find-max-batch trials are no cells
        return [r for r in rs if r.get("mode") != "maxbatch-trial"]

    cells = []
    for b, n in pair_cells(measured(base), measured(new)):
        if b is not None and n is not None:
            cells.append(compare_pair(b, n, thresholds, alpha, force, n_boot, seed))
            continue
        r = b if b is not None else n
        assert r is not None
        cells.append(_cell(r, "only in base" if n is None else "only in new"))
    return Comparison(cells, list(thresholds), alpha, force)


# ----------------------------------------------------------------------------------------------------- output


def _pct_cell(ch: Change | None) -> str:
    if ch is None or ch.change is None:
        return "-"
    mark = {True: " *", False: "", None: " ?"}[ch.significant]
    if ch.change >= 1.0:  # +11007.6% reads worse than 111x
        return f"{1 + ch.change:.3g}x{mark}"
    return f"{ch.change:+.1%}{mark}"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def verdict(c: CellComparison) -> str:
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
        text += " [unstable: CV > 10%]"
    if c.busy_pct is not None:
        text += f" [busy machine: {c.busy_pct:.0f}% other CPU]"
    if not c.env_match:
        text += f" [env differs: {c.env_diff}" + ("]" if c.gated else "; not gated]")
    return text


COLUMNS = ("model", "runtime", "precision", "batch", "device", "p50 ms base", "p50 ms new", "Δ p50", "Δ p95",
           "Δ samples/s", "Δ peak RSS", "p (MWU)", "verdict")


def table_rows(result: Comparison) -> list[list[str]]:
    """Rows for COLUMNS, display strings (' *' significant, ' ?' untested)."""
    rows = []
    for c in result.cells:
        p50 = c.changes.get("p50_ms")
        model = c.model + (f" {c.knobs}" if c.knobs not in ("", "{}") else "") + \
            ("" if c.mode == "infer" else f" ({c.mode})")
        rows.append([
            model, c.runtime, c.precision, str(c.batch), c.device,
            _num(p50.base if p50 else None), _num(p50.new if p50 else None),
            _pct_cell(p50), _pct_cell(c.changes.get("p95_ms")), _pct_cell(c.changes.get("throughput_sps")),
            _pct_cell(c.changes.get("peak_rss_mib")),
            "-" if c.mwu is None else (f"{c.mwu.p_value:.2g}" if c.mwu.p_value >= 1e-4 else "<1e-4"),
            verdict(c),
        ])
    return rows


def legend(result: Comparison) -> str:
    gate = ", ".join(t.describe() for t in result.thresholds) or "none (report only)"
    return (f"Δ = new / base - 1 (a rise beyond +100% shown as the ratio, e.g. 3.2x). * = significant at alpha "
            f"{result.alpha:g} (Mann-Whitney U p < alpha and the bootstrap {1 - result.alpha:.0%} CI of the ratio "
            f"excludes 1); ? = untested (single value or no raw samples). Gate: {gate}{' (--force: env differences gated too)' if result.force else ''}.")


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
    from dataclasses import asdict

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
    names = list(SHOWN) + [t.metric for t in result.thresholds if t.metric not in SHOWN]
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
