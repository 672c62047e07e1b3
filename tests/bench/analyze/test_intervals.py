"""Intervals over repetitions: the math on synthetic data with known answers, combining repetitions into a record,
budgets and compare judging on them, and the engine's interleaved rounds, resume and adaptive stopping."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from archbench.bench.analyze.intervals import (
    log_interval,
    paired_ratio,
    repetitions_needed,
    speedup,
    t_quantile,
    t_sf,
    welch_log,
)
from archbench.bench.analyze.stats import fill_latency
from archbench.bench.record import Record

# ------------------------------------------------------------------------------------------------ the math


@pytest.mark.parametrize("df, q", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042), (60, 2.000),
                                   (120, 1.980), (1000, 1.962)])
def test_t_quantile_matches_tables(df: int, q: float) -> None:
    assert t_quantile(df) == pytest.approx(q, abs=2e-3)


@pytest.mark.parametrize("t, df, p", [(2.0, 10, 0.036694), (1.0, 3, 0.195501), (3.0, 2, 0.047733),
                                      (0.0, 5, 0.5), (12.706, 1, 0.025)])
def test_t_tail_matches_tables(t: float, df: float, p: float) -> None:
    assert t_sf(t, df) == pytest.approx(p, abs=2e-5)


def test_log_interval_covers_the_true_value_95_percent_of_the_time() -> None:
    """Repetitions drawn lognormal around a known geometric mean: the 95% interval covers it ~95% of 4000 trials."""
    rng = np.random.default_rng(0)
    true = 2.0
    for reps in (3, 5, 8):
        hits = sum(log_interval(true * np.exp(rng.normal(0, 0.1, reps))).contains(true) for _ in range(4000))
        assert 0.935 <= hits / 4000 <= 0.965, (reps, hits / 4000)


def test_one_repetition_has_no_interval() -> None:
    iv = log_interval([3.0])
    assert iv.estimate == pytest.approx(3.0) and (iv.lo, iv.hi, iv.n, iv.rel_halfwidth) == (None, None, 1, None)
    with pytest.raises(ValueError):
        log_interval([])


def test_paired_ratio_cancels_what_a_round_does_to_both() -> None:
    """Each round slows both cells by a shared factor (0.5x-3x): unpaired intervals are wide, the paired one is
    tight around the true ratio 2."""
    rng = np.random.default_rng(1)
    shared = rng.uniform(0.5, 3.0, 6)
    slow = 2.0 * shared * np.exp(rng.normal(0, 0.01, 6))
    fast = 1.0 * shared * np.exp(rng.normal(0, 0.01, 6))
    paired = paired_ratio(slow, fast)
    assert paired.contains(2.0) and paired.rel_halfwidth < 0.03
    assert log_interval(slow).rel_halfwidth > 0.3  # the cells' own intervals are wide


def test_speedup_pairs_repetitions_by_round() -> None:
    a = Record("m", "torch", "fp32", 1, "cpu", 1, latency_p50_ms=2.0, rep_p50_ms=[2.0, 4.0, 2.2], rep_rounds=[0, 1, 2])
    b = Record("m", "onnxruntime", "fp32", 1, "cpu", 1, latency_p50_ms=1.0, rep_p50_ms=[2.1, 1.0, 2.0],
               rep_rounds=[1, 0, 2])
    iv = speedup(a, b)
    assert iv.n == 3 and iv.estimate == pytest.approx((2.0 / 1.0 * 4.0 / 2.1 * 2.2 / 2.0) ** (1 / 3))
    one = speedup(replace(a, rep_rounds=[0]), replace(b, rep_rounds=[5]))
    assert one.lo is None and one.estimate == pytest.approx(2.0)


def test_welch_false_positives_and_power_on_synthetic_runs() -> None:
    """Unchanged: ~5% of 2000 pairs significant at 0.05. A 25% slowdown with 5% noise, 5 repetitions: found >95%."""
    rng = np.random.default_rng(2)
    fp = sum(welch_log(np.exp(rng.normal(0, 0.05, 5)), np.exp(rng.normal(0, 0.05, 5))).p_value < 0.05
             for _ in range(2000))
    assert 0.03 <= fp / 2000 <= 0.07
    power = sum(welch_log(np.exp(rng.normal(0, 0.05, 5)), 1.25 * np.exp(rng.normal(0, 0.05, 5))).p_value < 0.05
                for _ in range(500))
    assert power / 500 > 0.95
    assert welch_log([1.0], [2.0, 3.0]) is None


def test_repetitions_needed_shrinks_the_interval_to_the_target() -> None:
    assert repetitions_needed(0.04, 3, 0.05) == 3
    m = repetitions_needed(0.20, 3, 0.05)
    spread = 0.20 * math.sqrt(3) / t_quantile(2)
    assert t_quantile(m - 1) * spread / math.sqrt(m) <= 0.05 < t_quantile(m - 2) * spread / math.sqrt(m - 1)


# ------------------------------------------------------------------------------------------------ combining


def _rep(p50: float, rnd: int, n: int = 20, seed: int = 0, **kw) -> Record:
    rng = np.random.default_rng(seed + rnd)
    rec = Record("mlp_s", "torch", "fp32", 2, "cpu", 1, **kw)
    fill_latency(rec, list(p50 * np.exp(rng.normal(0, 0.02, n))), first_ms=5.0, warmup_iters=3, measure_s=0.1,
                     other_cpu_pct=1.0)
    rec.rep_rounds = [rnd]
    return rec


def test_combine_repetitions_into_intervals() -> None:
    from archbench.bench.analyze.combine import combine

    reps = [_rep(1.0, 0, peak_rss_mib=100.0), _rep(1.1, 1), _rep(0.9, 2)]
    out = combine(reps, target=0.05)
    assert out.repetitions == 3 and out.rep_rounds == [0, 1, 2] and len(out.samples_by_rep) == 3
    assert out.n_samples == 60 and out.peak_rss_mib == 100.0  # repetition 0's memory pass
    iv = log_interval(out.rep_p50_ms)
    assert (out.latency_p50_ms, out.latency_p50_lo_ms, out.latency_p50_hi_ms) == (iv.estimate, iv.lo, iv.hi)
    assert out.latency_p50_lo_ms < 1.0 < out.latency_p50_hi_ms
    assert out.throughput_sps == pytest.approx(2000.0 / out.latency_mean_ms)
    assert out.throughput_lo_sps < out.throughput_sps < out.throughput_hi_sps
    assert out.stable is False and "imprecise: p50" in out.warning and "about" in out.warning
    tight = combine([_rep(1.0, r) for r in range(3)], target=0.05)
    assert tight.stable is True and "imprecise" not in tight.warning


def test_combine_keeps_failures_visible() -> None:
    from archbench.bench.analyze.combine import combine

    bad = Record("mlp_s", "torch", "fp32", 2, "cpu", 1, status="failed", error="worker killed by SIGKILL",
                 rep_rounds=[1])
    out = combine([_rep(1.0, 0), bad, _rep(1.0, 2)])
    assert out.ok and out.repetitions == 2 and "1 of 3 repetitions failed: worker killed" in out.warning
    assert combine([bad]).status == "failed"


# ------------------------------------------------------------------------------------------------ judging


def _with_reps(p50s: list[float], **kw) -> Record:
    from archbench.bench.analyze.combine import combine

    return combine([_rep(v, i, **kw) for i, v in enumerate(p50s)])


@pytest.mark.parametrize("budget, verdict", [("p50_ms<=1.5", "PASS"), ("p50_ms<=0.7", "FAIL"),
                                             ("p50_ms<=1.0", "INCONCLUSIVE"), ("throughput_sps>=1000", "PASS")])
def test_budgets_judge_latency_on_the_interval_over_repetitions(budget: str, verdict: str) -> None:
    from archbench.bench.analyze.budgets import judge_record, parse_budget

    rec = _with_reps([1.0, 1.1, 0.95])
    v = judge_record(rec, parse_budget(budget))
    assert v.verdict == verdict, v.terms[0].reason
    if verdict == "INCONCLUSIVE":
        assert "repetitions" in v.terms[0].reason and "over 3 repetitions" in v.terms[0].reason


def test_compare_tests_repetitions_and_respects_the_noise_floor() -> None:
    from archbench.bench.analyze.compare import compare_pair

    base = _with_reps([1.0, 1.01, 0.99, 1.0, 1.0])
    same = _with_reps([1.0, 0.99, 1.01, 1.0, 1.01], seed=50)
    slower = _with_reps([1.25, 1.26, 1.24, 1.25, 1.25], seed=90)
    assert compare_pair(base, same).changes["p50_ms"].significant is False
    ch = compare_pair(base, slower).changes["p50_ms"]
    assert ch.significant is True and ch.ci_lo < 0.25 < ch.ci_hi
    # the per-process figure is scaled to 5 repetitions a side: 1.3 ** sqrt(2/5) - 1 = 18% < 25%: still resolved;
    # 1.5 ** sqrt(2/5) - 1 = 29% > 25%: within the noise
    assert compare_pair(base, slower, noise=0.30).changes["p50_ms"].significant is True
    assert compare_pair(base, slower, noise=0.50).changes["p50_ms"].significant is False


def test_run_floor_scales_the_per_process_noise_to_the_repetitions() -> None:
    from archbench.bench.analyze.compare import run_floor

    assert run_floor(0.0, 5, 5) == 0.0
    assert run_floor(0.3, 5, 5) == pytest.approx(1.3 ** math.sqrt(0.4) - 1, rel=1e-12)
    assert run_floor(0.3, 1, 1) == pytest.approx(1.3 ** math.sqrt(2) - 1, rel=1e-12)  # one process a side: wider
    assert run_floor(0.3, 3, 12) == pytest.approx(1.3 ** math.sqrt(1 / 3 + 1 / 12) - 1, rel=1e-12)
    assert run_floor(0.3, 20, 20) < run_floor(0.3, 5, 5) < run_floor(0.3, 2, 2)  # more repetitions, lower floor
    # the band it claims, checked by simulation: two runs of 5 lognormal process medians whose per-process 95%
    # band is +/-30%: their geometric means' ratio stays within the floor ~95% of the time
    rng = np.random.default_rng(3)
    sigma = math.log1p(0.3) / 1.959964
    a = rng.normal(0.0, sigma, size=(20000, 5)).mean(axis=1)
    b = rng.normal(0.0, sigma, size=(20000, 5)).mean(axis=1)
    inside = np.abs(b - a) <= math.log1p(run_floor(0.3, 5, 5))
    assert 0.945 < inside.mean() < 0.955


# ------------------------------------------------------------------------------------------------ engine


FAST_REP = dict(warmup_iters=1, warmup_s=0.0, min_iters=3, min_time_s=0.0, max_time_s=1.0)


def _spec(out: Path, **kw):
    from archbench.bench.cell import StopRule
    from archbench.bench.measure.engine import RunSpec

    return RunSpec(models=["mlp_s"], out=out, runtimes=["torch"], threads=1, rule=StopRule(**FAST_REP), **kw)


@pytest.mark.slow
def test_rounds_interleave_resume_and_adaptive_stopping(tmp_path: Path) -> None:
    from archbench.bench.measure.engine import run
    from archbench.bench.record import read_records

    out = tmp_path / "run"
    (rec,) = run(_spec(out, repetitions=2, seed=3))
    assert rec.repetitions == 2 and rec.rep_rounds == [0, 1] and rec.latency_p50_lo_ms is not None
    assert len(read_records(out / "repetitions.jsonl")) == 2
    # An impossible precision target runs to the cap; a loose one stops at the minimum.
    (capped,) = run(_spec(tmp_path / "cap", repetitions=2, rel_ci=1e-6, max_repetitions=4))
    assert capped.repetitions == 4 and "imprecise" in capped.warning
    # A cell whose budget verdict is decided stops at the minimum, however imprecise.
    (decided,) = run(_spec(tmp_path / "decided", repetitions=2, rel_ci=1e-6, max_repetitions=4),
                     decided=lambda r: True)
    assert decided.repetitions == 2
    # Resume: a run killed after its repetitions were written but before its record: finished from disk.
    (out / "records.jsonl").unlink()
    (again,) = run(replace(_spec(out, repetitions=2), resume=True))
    assert again.repetitions == 2 and again.rep_rounds == [0, 1]
    assert len(read_records(out / "repetitions.jsonl")) == 2  # nothing measured twice


def test_rounds_run_every_cell_before_the_next_repetition(tmp_path: Path, monkeypatch) -> None:
    """Repetition r of every group before r+1 of any, in a seeded random order, a model's groups together."""
    from archbench.bench.cell import Cell
    from archbench.bench.measure import dispatch, engine

    seen: list[tuple[int, str, str]] = []

    def fake_run_job(job, out, timeout_s, on_record):
        for c in job.cells:
            seen.append((job.repetition, c.source, c.runtime))
            rec = _rep(1.0, job.repetition)
            on_record(replace(rec, model=c.source, runtime=c.runtime, threads=c.threads, batch=c.batch,
                              knobs=c.knobs))

    monkeypatch.setattr(dispatch, "run_job", fake_run_job)
    # later rounds' torch jobs go to the round's pooled worker: the same fake, in the order given
    monkeypatch.setattr(dispatch.Pool, "start", lambda self, jobs: None)
    monkeypatch.setattr(dispatch.Pool, "run", lambda self, job, on_record: fake_run_job(job, None, 0, on_record))
    monkeypatch.setattr(engine, "artifact_jobs", lambda *a, **k: [])
    spec = replace(_spec(tmp_path / "run", repetitions=3, seed=7), models=["a:x", "b:y", "c:z"],
                   runtimes=["torch", "torch-compile"])
    recs = engine.run(spec)
    assert len(recs) == 6 and all(r.repetitions == 3 for r in recs)
    rounds = [r for r, _, _ in seen]
    assert rounds == sorted(rounds) and rounds.count(0) == 6
    for rnd in range(3):
        order = [s for r, s, _ in seen if r == rnd]
        assert order == sorted(order, key=order.index)  # a model's two runtimes back to back
        assert [s for i, s in enumerate(order) if i % 2 == 0] == [s for i, s in enumerate(order) if i % 2 == 1]
    firsts = [[s for r, s, _ in seen if r == rnd][::2] for rnd in range(3)]
    assert len({tuple(f) for f in firsts}) > 1  # the order changes between rounds
    assert json.loads((tmp_path / "run" / "records.jsonl").read_text().splitlines()[0])["repetitions"] == 3
    assert isinstance(Cell, type)


def test_baseline_ratios_pair_each_model_with_the_baseline_by_round() -> None:
    """run --baseline: the other model's p50 over the baseline's, round by round. Known answer: v2 is 1.25x v1 in
    every round while the rounds themselves swing 1x-2x (slow spells): the paired ratio is 1.25 with a tight
    interval, though the two cells' own intervals overlap widely. A model equal to the baseline is 'no
    significant difference'."""
    from archbench.bench.analyze.combine import combine
    from archbench.bench.analyze.findings import baseline_ratios
    from archbench.bench.report.findings import baseline_lines, findings

    swings = [1.0, 1.6, 1.1, 2.0, 1.3]
    noise = [1.01, 0.99, 1.0, 1.02, 0.98]

    def cell(model: str, factor: float, jitter: list[float]) -> Record:
        reps = [replace(_rep(s * factor * j, r), model=model) for r, (s, j) in enumerate(zip(swings, jitter, strict=True))]
        rec = combine(reps)
        rec.baseline = "v1:build"
        return rec

    v1, v2, same = cell("v1:build", 1.0, [1.0] * 5), cell("v2:build", 1.25, noise), cell("v3:build", 1.0, noise)
    assert v1.latency_p50_lo_ms < v2.latency_p50_ms < v1.latency_p50_hi_ms  # unpaired: indistinguishable
    got = {r.model: r for r in baseline_ratios([v1, v2, same])}
    assert set(got) == {"v2:build", "v3:build"}
    assert got["v2:build"].ratio == pytest.approx(1.25, rel=0.02) and got["v2:build"].pairs == 5
    assert 1.2 < got["v2:build"].lo < 1.25 < got["v2:build"].hi < 1.3 and got["v2:build"].significant
    assert got["v3:build"].significant is False
    lines = baseline_lines([v1, v2, same])
    assert lines[0].startswith("v2:build torch fp32 b2: 1.25x the p50 of v1:build (95% CI 1.2") and \
        lines[0].endswith("5 paired repetitions): slower")
    assert lines[1].endswith("no significant difference (the interval includes 1x)")
    (f,) = [f for f in findings([v1, v2, same]) if f.kind == "baseline"]
    assert "Against the baseline v1:build" in f.text and f.items == lines
    # no --baseline: nothing compared; another machine's or runtime's cell: not paired
    assert baseline_ratios([replace(v1, baseline=""), replace(v2, baseline="")]) == []
    assert baseline_ratios([v1, replace(v2, runtime="onnxruntime")]) == []


def test_resume_after_a_kill_mid_round_gives_every_repetition_its_own_round(tmp_path: Path, monkeypatch) -> None:
    """Killed in round 1 after model a's repetition but before b's: resuming runs b in round 1 and a in round 2,
    never a second 'round 1' for a (speedups pair repetitions by round)."""
    from archbench.bench.measure import dispatch, engine
    from archbench.bench.record import append_jsonl

    def fake_run_job(job, out, timeout_s, on_record):
        for c in job.cells:
            on_record(replace(_rep(1.0, job.repetition), model=c.source, runtime=c.runtime, threads=c.threads,
                              batch=c.batch, knobs=c.knobs))

    monkeypatch.setattr(dispatch, "run_job", fake_run_job)
    monkeypatch.setattr(dispatch.Pool, "start", lambda self, jobs: None)
    monkeypatch.setattr(dispatch.Pool, "run", lambda self, job, on_record: fake_run_job(job, None, 0, on_record))
    monkeypatch.setattr(engine, "artifact_jobs", lambda *a, **k: [])
    spec = replace(_spec(tmp_path / "run", repetitions=3, seed=1), models=["a:x", "b:y"])
    spec.out.mkdir(parents=True)
    cells = {c.source: c for c in spec.cells()}
    for model, rnd in (("a:x", 0), ("b:y", 0), ("a:x", 1)):  # what the killed run left on disk
        c = cells[model]
        append_jsonl(spec.out / "repetitions.jsonl", replace(_rep(1.0, rnd), model=model, runtime=c.runtime,
                                                             threads=c.threads, batch=c.batch, knobs=c.knobs))
    recs = {r.model: r for r in engine.run(replace(spec, resume=True))}
    assert recs["a:x"].rep_rounds == recs["b:y"].rep_rounds == [0, 1, 2]
