"""``compare BASE NEW``: per-cell change of latency, throughput and memory, with significance tests at the level
that varies between runs, so that noise is not reported as a regression.

**Records with repetitions** (schema 3, ``archbench run --repetitions N``, N >= 2 on both sides): a latency
statistic's change is tested on the per-repetition values (one per worker process): Welch's t test on their logs
(analyze.intervals.welch_log) and the matching interval of the ratio. It is *significant* when p < alpha **and**
the change is larger than the machine's noise floor for two runs of that many repetitions (``run_floor``: from
``noise``, the per-process figure ``archbench doctor`` measured and cached, or ``--noise``): a change smaller than
that is never called significant. The older, sample-level tests below remain for records of one repetition, and
the comparison says so.

    result = compare(load_records([base]), load_records([new]), parse_fail_on("p95_ms:+10%"))
    result.exit_code   # 1 when a gated change exceeds its threshold and is significant

Records in, dataclasses out (CellComparison, Change); the tests live in archbench.bench.analyze.significance and the
text (table, verdict, legend, JSON, CSV rows) in archbench.bench.report.compare.

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
A cell that ran in BASE but failed in NEW fails the gate too. Cells whose environment differs (archbench.bench.env.fingerprint,
and the cell's own ``runtime_version`` when both sides recorded one) are marked and never gated unless ``force``
is set.

**Metrics.** ``--fail-on`` takes any metric of the registry (archbench.bench.analyze.metrics) that can be gated
(``metrics.gateable``): latency percentiles p50-p99, mean and throughput (tested on the samples), and single-valued
ones such as peak_rss_mib, cuda_mem_mib, size_mib or top1_agree (gated on the threshold alone).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from archbench.bench.analyze.metrics import METRICS, Metric, gateable, metric
from archbench.bench.analyze.significance import (
    STATS,
    MannWhitney,
    RatioCI,
    bootstrap_ratio_cis,
    mann_whitney_u,
)
from archbench.bench.analyze.stats import BUSY_PCT, CV_WARN
from archbench.bench.env import FINGERPRINT_FIELDS, fingerprint
from archbench.bench.errors import UsageError
from archbench.bench.record import Record

__all__ = ["STATS", "MannWhitney", "RatioCI", "bootstrap_ratio_cis", "mann_whitney_u"]  # re-exported statistics

# What the table shows for every cell (the gate may use any gateable metric).
SHOWN = ("p50_ms", "p95_ms", "throughput_sps", "peak_rss_mib")

# ----------------------------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Threshold:
    metric: str  # a metrics.METRICS name
    limit: float  # signed fraction: +0.10 fails on a rise of more than 10%, -0.05 on a fall of more than 5%

    def describe(self) -> str:
        return f"{self.metric}:{self.limit:+.0%}" if abs(self.limit * 100 % 1) < 1e-9 else \
            f"{self.metric}:{self.limit:+.2%}"


_THRESHOLD_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*:\s*([+-]?)\s*(\d+(?:\.\d+)?)\s*%\s*$")


def fail_on_metrics() -> list[str]:
    """The metric names ``--fail-on`` accepts (archbench.bench.analyze.metrics.gateable), in registry order."""
    return [m.name for m in METRICS.values() if gateable(m)]


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
        try:
            met = metric(m.group(1))
        except UsageError:
            met = None
        if met is None or met.name not in METRICS or not gateable(met):
            raise UsageError(f"unknown --fail-on metric {m.group(1)!r}; known: {', '.join(fail_on_metrics())}")
        sign = {"+": 1, "-": -1, "": met.worse}[m.group(2)]
        out.append(Threshold(met.name, sign * float(m.group(3)) / 100.0))
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
    env_diff: str = ""  # which environment fields differ, "field base -> new"
    changes: dict[str, Change] = field(default_factory=dict)
    mwu: MannWhitney | None = None
    failures: list[str] = field(default_factory=list)  # the thresholds this cell exceeded significantly
    gated: bool = True  # False when env differs and not forced
    unstable: bool = False  # CV > 10% on either side: the machine was noisy, re-measure before trusting a change
    busy_pct: float | None = None  # the larger other_cpu_pct of the two sides when above BUSY_PCT (archbench.bench.measure.harness)
    repetitions: int = 1  # the fewer repetitions of the two sides: >= 2 means tests on per-repetition values

    @property
    def failed(self) -> bool:
        return self.gated and bool(self.failures)


@dataclass
class Comparison:
    cells: list[CellComparison]
    thresholds: list[Threshold]
    alpha: float
    force: bool
    noise: float = 0.0  # the per-process noise figure used (a fraction); each cell's floor is run_floor() of it
    noise_source: str = ""  # where it came from (archbench doctor's cache, --noise, or "" for none)

    def floor(self) -> tuple[int, float]:
        """(R, the noise floor run_floor applies to two runs of R repetitions), R the most any compared cell had:
        what the CLI and the legend state."""
        r = max((c.repetitions for c in self.cells if c.status == "compared"), default=1)
        return r, run_floor(self.noise, r, r)

    @property
    def failures(self) -> list[CellComparison]:
        return [c for c in self.cells if c.failed]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def env_diff(a: Record, b: Record) -> str:
    """Which environment fields differ between two records of one cell, as "field base -> new": the machine
    fingerprint's fields (archbench.bench.env.FINGERPRINT_FIELDS), and ``runtime_version`` when both recorded one
    (a new onnxruntime or openvino under the same torch is a different environment too)."""
    diffs = [f"{k} {getattr(a, k)} -> {getattr(b, k)}" for k in FINGERPRINT_FIELDS
             if str(getattr(a, k)) != str(getattr(b, k))]
    if a.runtime_version and b.runtime_version and a.runtime_version != b.runtime_version:
        diffs.append(f"runtime_version {a.runtime_version} -> {b.runtime_version}")
    return ", ".join(diffs)


def _pair_key(r: Record) -> tuple:
    # Record.key without threads: a thread-count change is an environment difference, not a new cell.
    return (r.model, r.knobs or "", r.runtime, r.precision, r.batch, r.device, r.mode or "infer")


def pair_cells(base: Sequence[Record], new: Sequence[Record]) -> list[tuple[Record | None, Record | None]]:
    """(base, new) record pairs of the same cell; one side None when the other run lacks the cell.

    When a side holds several records of one cell (several machines or thread counts), records with the same
    fingerprint pair first, then the same hostname and threads, then the same threads."""
    nb: dict[tuple, list[Record]] = defaultdict(list)
    for r in new:
        nb[_pair_key(r)].append(r)
    pairs: list[tuple[Record | None, Record | None]] = []
    bb: dict[tuple, list[Record]] = defaultdict(list)
    for r in base:
        bb[_pair_key(r)].append(r)
    same_as: tuple[Callable[[Record], object], ...] = (fingerprint, lambda r: (r.hostname, r.threads),
                                                      lambda r: r.threads)
    for key, bs in bb.items():
        ns = list(nb.pop(key, []))
        bs = list(bs)
        if len(bs) == 1 and len(ns) == 1:
            pairs.append((bs[0], ns[0]))
            continue
        for same in same_as:
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


def _cell(r: Record, status: str) -> CellComparison:
    return CellComparison(model=r.model, knobs=r.knobs or "", runtime=r.runtime, precision=r.precision,
                          batch=int(r.batch or 0), device=r.device, threads=int(r.threads or 0), status=status,
                          mode=r.mode or "infer")


def per_rep(r: Record, stat: str) -> list[float]:
    """A record's per-repetition values of ``stat`` (p50, p90, p95, p99, mean); [] with fewer than 2."""
    import numpy as np

    stored = {"p50": r.rep_p50_ms, "p95": r.rep_p95_ms, "p99": r.rep_p99_ms, "mean": r.rep_mean_ms}.get(stat)
    if stored is not None and len(stored) >= 2:
        return list(stored)
    reps = [s for s in (r.samples_by_rep or []) if s]
    if len(reps) < 2 or not stat.startswith("p"):
        return []
    return [float(np.percentile(np.asarray(s, dtype=float), float(stat[1:]), method="linear")) for s in reps]


def run_floor(noise: float, n_base: int, n_new: int) -> float:
    """The smallest change two runs of ``n_base`` and ``n_new`` repetitions can tell from noise, given ``noise``: the
    95% band of one worker process's median (what ``archbench doctor`` measures, as a fraction). A run's estimate
    is the geometric mean of its repetitions (independent processes), so the band of the ratio of two runs' estimates
    is the per-process band on the log scale times sqrt(1/n_base + 1/n_new):

        floor = (1 + noise) ** sqrt(1/n_base + 1/n_new) - 1

    (0.632x the log band for 5 repetitions a side, 1.41x for one). ``noise`` 0 gives 0."""
    import math

    if noise <= 0:
        return 0.0
    return math.expm1(math.log1p(noise) * math.sqrt(1 / max(1, n_base) + 1 / max(1, n_new)))


def _rep_change(m: Metric, b: Record, n: Record, alpha: float, noise: float) -> Change | None:
    """The change of a latency metric from per-repetition values (Welch on logs), or None without them."""
    import math

    from archbench.bench.analyze.intervals import t_quantile, welch_log

    if m.stat is None:
        return None
    rb, rn = per_rep(b, m.stat), per_rep(n, m.stat)
    w = welch_log(rb, rn)
    if w is None:
        return None
    vb, vn = m.value(b), m.value(n)
    ch = vn / vb - 1.0 if vb and vn is not None else None
    import numpy as np

    lb, ln_ = np.log(rb), np.log(rn)
    se = math.sqrt(lb.var(ddof=1) / lb.size + ln_.var(ddof=1) / ln_.size)
    half = t_quantile(max(1, round(w.df)), 1 - alpha) * se
    lo, hi = w.ratio * math.exp(-half), w.ratio * math.exp(half)  # of new/base in the statistic itself
    if m.inverse:  # throughput = batch / mean: its ratio is the inverse
        lo, hi = 1.0 / hi, 1.0 / lo
    big_enough = ch is not None and abs(ch) > run_floor(noise, len(rb), len(rn))
    return Change(m.name, vb, vn, ch, lo - 1.0, hi - 1.0, bool(w.p_value < alpha and big_enough))


def _change(m: Metric, b: Record, n: Record, cis: dict[str, RatioCI] | None, mwu: MannWhitney | None,
            alpha: float, noise: float = 0.0) -> Change:
    rep = _rep_change(m, b, n, alpha, noise)
    if rep is not None:
        return rep
    vb, vn = m.value(b), m.value(n)
    ch = vn / vb - 1.0 if vb and vn is not None else None
    if m.stat is None or cis is None or mwu is None:
        return Change(m.name, vb, vn, ch, None, None, None)
    ci = cis[m.stat]
    lo, hi = (1.0 / ci.hi - 1.0, 1.0 / ci.lo - 1.0) if m.inverse else (ci.lo - 1.0, ci.hi - 1.0)
    big_enough = ch is not None and abs(ch) > run_floor(noise, 1, 1)
    return Change(m.name, vb, vn, ch, lo, hi, bool(mwu.p_value < alpha and ci.excludes_one and big_enough))


def _exceeds(t: Threshold, c: Change) -> bool:
    if c.change is None:
        return False
    return c.change > t.limit if t.limit >= 0 else c.change < t.limit


def compare_pair(
    b: Record, n: Record, thresholds: Sequence[Threshold] = (), alpha: float = 0.05, force: bool = False,
    n_boot: int = 1000, seed: int = 0, noise: float = 0.0,
) -> CellComparison:
    """Compare one cell measured in BASE (b) and NEW (n): changes, tests and the gate."""
    c = _cell(n, "compared")
    c.env_diff = env_diff(b, n)
    c.env_match = not c.env_diff
    c.gated = c.env_match or force
    if not (b.ok and n.ok):
        c.status = "failed in both" if not (b.ok or n.ok) else ("failed in new" if b.ok else "failed in base")
        if c.status == "failed in new" and thresholds:
            c.failures.append(f"ok in base, {n.status} in new: {str(n.error or '')[:80]}")
        return c
    c.repetitions = min(b.repetitions or 1, n.repetitions or 1)
    # Unstable: with repetitions, an interval that missed its precision target; with one loop, CV > 10%.
    c.unstable = any((r.stable is False) if (r.repetitions or 1) >= 2 else (r.latency_cv or 0) > CV_WARN
                     for r in (b, n))
    busy = max((r.other_cpu_pct or 0.0) for r in (b, n))
    c.busy_pct = busy if busy > BUSY_PCT else None
    sb, sn = b.samples_ms or [], n.samples_ms or []
    cis = None
    if len(sb) >= 2 and len(sn) >= 2:
        c.mwu = mann_whitney_u(sb, sn)
        cis = bootstrap_ratio_cis(sb, sn, alpha=alpha, n_boot=n_boot, seed=seed)
    for name in shown_metrics(thresholds):
        c.changes[name] = _change(METRICS[name], b, n, cis, c.mwu, alpha, noise)
    for t in thresholds:
        ch = c.changes[t.metric]
        if _exceeds(t, ch) and ch.significant is not False:
            if ch.significant is None and METRICS[t.metric].stat is not None:
                continue  # a latency metric without raw samples cannot be shown significant: not gated
            c.failures.append(f"{t.metric} {ch.change:+.1%} beyond {t.limit:+.0%}"
                              + ("" if ch.significant else " (single value, untested)"))
    return c


def shown_metrics(thresholds: Sequence[Threshold] = ()) -> list[str]:
    """SHOWN, then every gated metric not among them: the metrics each compared cell carries a Change of."""
    return list(SHOWN) + [t.metric for t in thresholds if t.metric not in SHOWN]


def compare(
    base: Sequence[Record], new: Sequence[Record], thresholds: Sequence[Threshold] = (), alpha: float = 0.05,
    force: bool = False, n_boot: int = 1000, seed: int = 0, noise: float = 0.0,
) -> Comparison:
    """Compare every cell of BASE with the same cell of NEW (see the module docstring for the rules); ``noise``:
    the machine's per-process noise as a fraction (``run_floor`` turns it into each cell's floor)."""
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")

    def measured(rs: Sequence[Record]) -> list[Record]:  # --find-max-batch trials are no cells
        return [r for r in rs if r.mode != "maxbatch-trial"]

    cells = []
    for b, n in pair_cells(measured(base), measured(new)):
        if b is not None and n is not None:
            cells.append(compare_pair(b, n, thresholds, alpha, force, n_boot, seed, noise))
            continue
        r = b if b is not None else n
        assert r is not None
        cells.append(_cell(r, "only in base" if n is None else "only in new"))
    return Comparison(cells, list(thresholds), alpha, force, noise)
