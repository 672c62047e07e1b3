"""``archbench run --scenario server --find-max-qps --sla "p99_ms<=50"``: the highest offered QPS whose server run
is VALID and meets the SLA, per model x runtime x precision x serving configuration.

**Search** (``bracket_search``): a trial at the start QPS (``--qps``, default ``DEFAULT_START``); while trials pass,
double the QPS; while they fail, halve it (at most ``MAX_HALVINGS`` times): that brackets the answer in
[last passing, first failing]. Then bisect the bracket until (first failing - last passing) / last passing <=
``--max-qps-tol`` (default ``DEFAULT_REL_TOL``). Trials: about log2(answer / start) + log2(1 / tol). It assumes a
trial passes below some QPS and fails above it; noise near the edge can make a pass and a fail swap there, which
bisection turns into an answer inside the noise band - the bracket says how wide.

**A trial** is an ordinary server-scenario cell at that QPS (modes.serve; mode ``server``, the QPS in its
``scenario``), run like every cell: ``--repetitions`` worker processes (each appended to repetitions.jsonl), combined
with intervals (analyze.combine), the record appended to records.jsonl with ``sla`` set. It passes when it is
VALID (measure.loadgen: it kept up, ran long enough) and every SLA term holds on its estimate (p99_ms: the
geometric mean of the repetitions' p99s). A repetition that comes back INVALID ends the trial (it cannot pass).

**The answer** is the best passing trial's record again, with ``max_qps`` (its offered QPS) and ``max_qps_fail``
(the first failing QPS above it: the answer's bracket) set, and the trials listed in its ``warning``; its p99
interval is the trial's interval over repetitions. No passing trial: ``max_qps`` = 0 on the lowest trial's record.
``--resume`` reuses trials already in records.jsonl.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from archbench.bench.analyze.search import Bracket, SearchState, drive
from archbench.bench.cell import Job
from archbench.bench.record import Record, append_jsonl, read_records
from archbench.bench.scenario import SERVER, Scenario

DEFAULT_START = 128.0  # requests/s: 256 queries (the server minimum) take 2 s, the default minimum duration
DEFAULT_REL_TOL = 0.10
MAX_HALVINGS = 7  # start / 128 at the lowest: below that one trial takes minutes
MAX_DOUBLINGS = 20  # start x 10^6 at the highest


def bracket_search(passes: Callable[[float], bool], start: float = DEFAULT_START, rel_tol: float = DEFAULT_REL_TOL,
                   growth: float = 2.0) -> SearchState:
    """Highest q with passes(q): analyze.search's walk on real numbers (doubling or halving from ``start``, then
    bisection to ``rel_tol``; module docstring)."""
    if not (start > 0 and math.isfinite(start)) or not 0 < rel_tol < 1 or growth <= 1:
        raise ValueError(f"need start > 0, 0 < rel_tol < 1, growth > 1; got {start}, {rel_tol}, {growth}")
    return drive(Bracket(start=start, growth=growth, up_steps=MAX_DOUBLINGS, down_steps=MAX_HALVINGS,
                         rel_tol=rel_tol), passes)


def sla_verdict(rec: Record, terms: Any) -> tuple[bool, str]:
    """(passes, why): VALID, and every SLA term (archbench.bench.analyze.budgets.Term) holds on its estimate."""
    if not rec.ok:
        return False, f"{rec.status}: {rec.error[:120]}"
    if rec.valid is False:
        return False, f"INVALID: {rec.invalid_reason[:160]}"
    for t in terms:
        value, note = t.metric.read(rec)
        if value is None:
            return False, f"{t.metric.name}: {note}"
        if not t.holds(value):
            return False, f"{t.metric.name} {value:.4g} misses {t.op} {t.limit:g}"
    return True, "VALID, " + ", ".join(f"{t.metric.name} {t.metric.value(rec):.4g} {t.op} {t.limit:g}" for t in terms)


def run_search(spec: Any, progress: Callable[[Record, int, int], None] | None = None) -> list[Record]:
    """``--find-max-qps``: a search per model x knobs x runtime x precision x server scenario of ``spec``."""
    from archbench.bench.analyze.budgets import parse_expression
    from archbench.bench.measure.engine import artifact_kind, new_run_id

    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / "logs").mkdir(parents=True, exist_ok=True)
    jsonl, reps_path = spec.out / "records.jsonl", spec.out / "repetitions.jsonl"
    if jsonl.exists() and not spec.resume:
        raise FileExistsError(f"{jsonl} exists; pass --resume to continue that run or choose another --out")
    earlier = {r.key(): r for r in read_records(jsonl)} if spec.resume and jsonl.exists() else {}
    terms = parse_expression(spec.options.serve.find_max_qps).terms
    rel_tol = spec.options.serve.max_qps_rel_tol or DEFAULT_REL_TOL
    run_id = new_run_id()
    records: list[Record] = []

    def on_record(rec: Record) -> None:
        append_jsonl(jsonl, rec)
        records.append(rec)
        if progress:
            progress(rec, len(records), 0)

    templates = [Scenario.parse(mode, d) for mode, d in spec.scenarios if mode == SERVER]
    for m in spec.models:
        for knobs in spec.knob_sets(m):
            workdir = spec.workdir(m, knobs)
            cells = [spec.cell(m, rt, p, 1, knobs=knobs) for rt in spec.runtimes for p in spec.precisions]
            kind = artifact_kind(spec.runtimes, m)
            if kind is not None:
                from archbench.bench.measure import dispatch

                dispatch.build_artifacts(Job(cells=tuple(cells), workdir=str(workdir), run_id=run_id, rule=spec.rule,
                                             kind="artifacts", artifact=kind), spec.out, spec.timeout_s)
            for rt in spec.runtimes:
                for p in spec.precisions:
                    for tpl in templates:
                        def trial(q: float, m: str = m, knobs: Any = knobs, rt: str = rt, p: str = p,
                                  tpl: Scenario = tpl, workdir: Any = workdir) -> Record:
                            cell = spec.cell(m, rt, p, 1, mode=SERVER, knobs=knobs,
                                             scenario=replace(tpl, qps=q).descriptor())
                            if cell.key() in earlier and earlier[cell.key()].ok:
                                return earlier[cell.key()]
                            rec = _trial(spec, cell, str(workdir), run_id, reps_path)
                            rec.sla = spec.options.serve.find_max_qps
                            on_record(rec)
                            return rec

                        _search(tpl, trial, terms, rel_tol, on_record)
    return records


def _trial(spec: Any, cell: Any, workdir: str, run_id: str, reps_path: Any) -> Record:
    """One trial: --repetitions worker processes (stopping at the first INVALID one), combined."""
    from archbench.bench.analyze.combine import combine
    from archbench.bench.measure.dispatch import run_job

    got: list[Record] = []
    for r in range(spec.repetitions):
        one: list[Record] = []
        run_job(Job(cells=(cell,), workdir=workdir, run_id=run_id, rule=spec.rule, repetition=r), spec.out,
                spec.timeout_s, one.append)
        for rec in one:
            append_jsonl(reps_path, rec)
        got += one
        if not one or not one[-1].ok or one[-1].valid is False:
            break
    return combine(got, spec.rel_ci)


def _search(tpl: Scenario, trial: Callable[[float], Record], terms: Any, rel_tol: float,
            on_record: Callable[[Record], None]) -> None:
    seen: dict[float, tuple[Record, bool, str]] = {}

    def passes(q: float) -> bool:
        rec = trial(q)
        ok, why = sla_verdict(rec, terms)
        seen[q] = (rec, ok, why)
        return ok

    s = bracket_search(passes, tpl.qps or DEFAULT_START, rel_tol)
    tried = ", ".join(f"{q:g} {'pass' if ok else 'fail'}" for q, ok in s.trials)
    notes = [f"max-QPS search trials (offered qps): {tried}"]
    if s.best:
        rec = replace(seen[s.best][0])
        if s.first_failure is None:
            notes.append(f"every trial passed: the search stopped doubling at {s.best:g} qps")
        else:
            notes.append(f"{s.first_failure:g} qps failed: {seen[s.first_failure][2]}")
    else:
        low = min(seen)
        rec = replace(seen[low][0])
        notes.append(f"no offered QPS met the SLA; the lowest, {low:g} qps: {seen[low][2]}")
    rec.max_qps, rec.max_qps_fail = s.best, s.first_failure
    rec.warning = "; ".join([*notes, rec.warning]).strip("; ")
    on_record(rec)
