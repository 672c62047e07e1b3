"""Repetitions of a cell (one worker process each, in different rounds of the run) combined into one record.

    final = combine([rep0, rep1, rep2], target=0.05)

Each repetition arrives as a record of one timed loop (its ``rep_*`` lists hold one value). The combined record
keeps repetition 0's memory, fidelity and cold-start fields (later repetitions only time), pools the samples, and
replaces p50/p95/p99/mean (and throughput) by their estimate over repetitions with a 95% interval
(analyze.intervals). The per-loop "CV > 10%" flag gives way to what matters across processes: the interval's width.
A generation record's TTFT and end-to-end time get the same treatment (``_combine_generation``); a serving record its
p90, achieved QPS and validity (analyze.serving.combine_serving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from archbench.bench.analyze.intervals import log_interval, repetitions_needed
from archbench.bench.record import Record

DEFAULT_TARGET = 0.05  # a p50 interval within +/-5% counts as precise


def combine(reps: Sequence[Record], target: float | None = None) -> Record:
    """One record from a cell's repetitions (any order); failed/skipped repetitions are named in ``warning``."""
    if not reps:
        raise ValueError("combine() needs at least one repetition")
    ok = sorted((r for r in reps if r.ok), key=lambda r: r.rep_rounds[0] if r.rep_rounds else 0)
    bad = [r for r in reps if not r.ok]
    if not ok:
        return bad[0]
    out = replace(ok[0])  # repetition 0 (the earliest round) has memory, fidelity and the cold start
    if not all(r.rep_p50_ms for r in ok):  # untimed (a max-batch trial): nothing to combine
        return out
    notes = [w for w in out.warning.split("; ") if w and not w.startswith(("unstable:", "busy machine:"))
             and w != "re-measure on an idle one"]  # the busy warning's own second half
    if bad:
        notes.append(f"{len(bad)} of {len(reps)} repetitions {bad[0].status}: {bad[0].error[:200]}")
    nodes = {r.node_id for r in ok if r.node_id}
    if len(nodes) > 1:  # --cluster (measure.cluster.dispatcher): each repetition went to whichever node was free
        notes.append(f"repetitions ran on {len(nodes)} cluster nodes: the interval includes node-to-node differences")
    out.samples_by_rep = [r.samples_ms for r in ok]
    out.samples_ms = [x for r in ok for x in r.samples_ms]
    out.rep_rounds = [r.rep_rounds[0] if r.rep_rounds else i for i, r in enumerate(ok)]
    out.repetitions = len(ok)
    out.n_samples = len(out.samples_ms)
    out.measure_s = sum(r.measure_s or 0.0 for r in ok)
    busy = [r.other_cpu_pct for r in ok if r.other_cpu_pct is not None]
    out.other_cpu_pct = max(busy) if busy else None
    for stat in ("p50", "p95", "p99", "mean"):
        values = [v for r in ok for v in getattr(r, f"rep_{stat}_ms")]
        setattr(out, f"rep_{stat}_ms", values)
        iv = log_interval(values)
        setattr(out, f"latency_{stat}_ms", iv.estimate)
        setattr(out, f"latency_{stat}_lo_ms", iv.lo)
        setattr(out, f"latency_{stat}_hi_ms", iv.hi)
        if stat == "p50":
            out.p50_rel_ci = iv.rel_halfwidth
    out.throughput_sps = out.batch * 1000.0 / out.latency_mean_ms
    if out.latency_mean_lo_ms and out.latency_mean_hi_ms:
        out.throughput_lo_sps = out.batch * 1000.0 / out.latency_mean_hi_ms
        out.throughput_hi_sps = out.batch * 1000.0 / out.latency_mean_lo_ms
    if out.flops:
        # achieved GFLOP/s from the combined p50 (training: a step is ~3 forwards, as measure.train_step counts it)
        per_call = out.flops * (3 if out.loss_fn else 1)  # loss_fn: a training step
        out.achieved_gflops = per_call / (out.latency_p50_ms * 1e-3) / 1e9
    if out.train_samples and out.throughput_sps:
        out.time_to_train_s = out.train_samples / out.throughput_sps  # as measure.train_step.time_to_train_s
    if out.rep_ttft_ms:
        _combine_generation(out, ok)
    pooled = _pooled(out.samples_ms)
    out.latency_p90_ms, out.latency_std_ms, out.latency_min_ms, out.latency_max_ms, out.latency_cv = pooled
    if out.scenario:  # serving: p90 and achieved QPS over repetitions, validity (modes.serve)
        from archbench.bench.analyze.serving import combine_serving

        combine_serving(out, ok)
    goal = target if target is not None else DEFAULT_TARGET
    if out.p50_rel_ci is None:
        out.stable = None
        notes.append("one repetition: no interval across worker processes (--repetitions 3 or more gives one)")
    else:
        out.stable = out.p50_rel_ci <= goal
        if not out.stable:
            more = repetitions_needed(out.p50_rel_ci, out.repetitions, goal)
            notes.append(f"imprecise: p50 +/-{out.p50_rel_ci:.0%} over {out.repetitions} repetitions (target "
                         f"+/-{goal:.0%}; about {more} would reach it)")
    from archbench.bench.analyze.stats import busy_warning

    if busy_warning(out.other_cpu_pct):
        notes.append(busy_warning(out.other_cpu_pct))
    out.warning = "; ".join(notes)
    return out


def _combine_generation(out: Record, ok: Sequence[Record]) -> None:
    """--mode generate (modes.generate): TTFT and the whole generation over repetitions, as the latencies (their
    TPOT) are; the decode bandwidth from the combined TPOT p50."""
    out.rep_ttft_ms = [v for r in ok for v in r.rep_ttft_ms]
    out.rep_ttft_p95_ms = [v for r in ok for v in r.rep_ttft_p95_ms]
    out.rep_e2e_ms = [v for r in ok for v in r.rep_e2e_ms]
    out.ttft_samples_ms = [x for r in ok for x in r.ttft_samples_ms]
    iv = log_interval(out.rep_ttft_ms)
    out.ttft_ms, out.ttft_lo_ms, out.ttft_hi_ms = iv.estimate, iv.lo, iv.hi
    out.ttft_p95_ms = log_interval(out.rep_ttft_p95_ms).estimate if out.rep_ttft_p95_ms else out.ttft_p95_ms
    out.e2e_ms = log_interval(out.rep_e2e_ms).estimate if out.rep_e2e_ms else out.e2e_ms
    if out.decode_bytes and out.latency_p50_ms:
        out.decode_gbps = out.decode_bytes / (out.latency_p50_ms * 1e-3) / 1e9  # as modes.generate


def _pooled(samples: list[float]) -> tuple[float, float, float, float, float]:
    """Descriptive statistics of all samples pooled (p90, std, min, max, CV): no interval is claimed for these."""
    from archbench.bench.analyze.stats import summarize

    st = summarize(samples)
    return st.p90_ms, st.std_ms, st.min_ms, st.max_ms, st.cv
