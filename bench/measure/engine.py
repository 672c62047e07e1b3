"""The run: a RunSpec becomes cells, cells are grouped into jobs, jobs run in worker processes in interleaved
rounds, repetitions are combined into records with intervals, records land on disk as they come.

    spec = RunSpec(models=["resnet_s"], runtimes=["torch", "onnxruntime"], batches=[1, 8], out=Path("runs/x"))
    records = run(spec)

First the artifacts worker (measure.artifacts; one process builds every model's) for models whose runtimes need an
artefact (the ONNX export for ONNX Runtime and OpenVINO, the input specs of an .onnx file). Then rounds: in round r
every unfinished (model, runtime, precision) group runs repetition r, the groups in a random order (a model's
groups back to back, so its runtimes' repetitions are paired in time), repetition r of every cell before
repetition r+1 of any — Google Benchmark's random interleaving, asv's and pyperf's separate processes. Round 0
gives each group a fresh worker process (it also measures memory, cold start and fidelity); later rounds only time,
in one worker per runtime started for the round (measure.dispatch.Pool), so a cell's repetitions are still each
in a process of their own, at a fraction of the start-up cost. A cell stops after ``repetitions`` rounds once its p50 interval is within ``rel_ci`` (or its budget
verdict is decided: ``decided``), or at ``max_repetitions``.

Every repetition is appended to ``repetitions.jsonl`` and fsync'ed the moment it arrives; a cell's combined record
(analyze.combine) goes to ``records.jsonl`` when its last repetition is in. ``resume`` skips cells with an ok
record and continues the others from the repetitions already on disk.

Where the workers run is the dispatcher's business (measure.dispatch.Dispatcher): this machine, one job after
another (``dispatch.Local``), or a Ray cluster with ``cluster`` set (measure.cluster.dispatcher: a round's jobs at once, one
node each). The plan, the rounds, the stop rule, resume and the files on disk are the same either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archbench.bench.cell import QUICK, Cell, Job, Options, StopRule, canonical_knobs
from archbench.bench.measure import dispatch
from archbench.bench.record import Record, append_jsonl, read_records

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_REPETITIONS = 5


@dataclass(frozen=True)
class RunSpec:
    """What one `archbench run` measures (frozen: a variant is ``dataclasses.replace(spec, ...)``)."""

    models: list[str]  # sources: zoo names, pkg.module:factory, path/to/model.onnx
    out: Path
    runtimes: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batches: list[int] = field(default_factory=lambda: [1])
    device: str = "cpu"
    threads: int = 0  # 0: os.cpu_count()
    knobs: dict[str, Any] = field(default_factory=dict)
    # Per model, the knob sets to measure instead of ``knobs`` (mode generate: one per --prompt-len, as seq_len);
    # each is its own cell identity, artefact folder and worker group.
    variants: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    options: Options = field(default_factory=Options)  # how cells are measured, not what they are
    mode: str = "infer"  # infer | train | maxbatch-trial | generate: part of a cell's identity
    rule: StopRule = QUICK
    timeout_s: float = DEFAULT_TIMEOUT_S  # per cell, from the moment the worker starts it (or starts up)
    resume: bool = False
    repetitions: int = DEFAULT_REPETITIONS  # worker processes per cell at least (rounds of the run)
    max_repetitions: int | None = None  # with rel_ci: add repetitions up to this many (default 3 x repetitions)
    rel_ci: float | None = None  # target p50 interval half-width, as a fraction; None: exactly `repetitions`
    seed: int | None = None  # of the round order (None: from the clock; recorded in the log)
    cluster: str | None = None  # None: this machine; "local", "auto" or a Ray address: jobs on Ray (measure.cluster.dispatcher)
    target: tuple[str, ...] = ()  # with cluster: Ray custom resources (NAME) or node labels (KEY=VALUE), all required
    # Serving cells (modes.serve), (mode, scenario descriptor) each, measured at batch 1 after ``batches``
    scenarios: list[tuple[str, str]] = field(default_factory=list)
    baseline: str = ""  # one of ``models``: every other model's cells are compared with its (analyze.findings)
    artifacts: bool = True  # the mode's models go through the artifacts worker first (modes: ``artifacts``)

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def cell(self, model: str, runtime: str, precision: str, batch: int, mode: str | None = None,
             knobs: dict[str, Any] | None = None, scenario: str = "") -> Cell:
        return Cell(source=model, runtime=runtime, precision=precision, batch=batch, device=self.device,
                    threads=self.resolved_threads(), knobs=canonical_knobs(self.knobs if knobs is None else knobs),
                    mode=mode or self.mode, options=self.options, scenario=scenario)

    def knob_sets(self, model: str) -> list[dict[str, Any]]:
        """The knob sets ``model`` is measured with: its ``variants``, else ``knobs``."""
        return self.variants.get(model) or [self.knobs]

    def cells(self) -> Iterator[Cell]:
        """Every cell, in the order given: models (and their knob sets), then runtimes, precisions, batches."""
        for m in self.models:
            for knobs in self.knob_sets(m):
                for rt in self.runtimes:
                    for p in self.precisions:
                        for b in self.batches:
                            yield self.cell(m, rt, p, b, knobs=knobs)
                        for mode, scenario in self.scenarios:
                            yield self.cell(m, rt, p, 1, mode=mode, knobs=knobs, scenario=scenario)

    def workdir(self, model: str, knobs: dict[str, Any] | str | None = None) -> Path:
        """The artefact folder of ``model`` with ``knobs`` (default: the spec's), shared by its runtimes and
        precisions (measure.artifacts)."""
        k = json.loads(knobs) if isinstance(knobs, str) else (self.knobs if knobs is None else knobs)
        suffix = "" if not k else "_" + dispatch.slug(json.dumps(k, sort_keys=True))
        return self.out / "artifacts" / (dispatch.slug(model) + suffix)


def plan(spec: RunSpec, done: set[tuple] | None = None) -> list[tuple[Cell, ...]]:
    """Groups of cells still to run (one measuring job each), in the order given."""
    done = done or set()
    groups: dict[tuple, list[Cell]] = {}
    for c in spec.cells():
        if c.key() not in done:
            groups.setdefault((c.source, c.knobs, c.runtime, c.precision, c.scenario), []).append(c)
    return [tuple(g) for g in groups.values()]


def done_cells(path: Path) -> set[tuple]:
    """Keys of cells with an ok record in an existing records.jsonl (what --resume skips; failed cells run again)."""
    if not path.exists():
        return set()
    return {r.key() for r in read_records(path) if r.ok}


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def artifact_kind(runtimes: list[str], source: str) -> str | None:
    """What the artifacts worker must build for ``source`` measured on ``runtimes``; None: no artifacts worker."""
    from archbench.bench.measure.runtimes import get_runtime
    from archbench.bench.measure.sources import is_onnx_ref

    kinds = set()
    for name in runtimes:
        try:
            kinds.add(get_runtime(name).artifact)
        except (ValueError, ImportError):
            continue
    if "onnx" in kinds:
        return "onnx"
    return "none" if is_onnx_ref(source) and kinds else None


Progress = Callable[[Record, int, int], None]


def dispatcher(spec: RunSpec) -> dispatch.Dispatcher:
    """Where ``spec``'s jobs run: this machine, or the Ray cluster of ``spec.cluster`` (connected here: a cluster
    that cannot be reached, or has no node for ``spec.target``, is a UsageError before anything runs)."""
    if spec.cluster is None:
        return dispatch.Local(spec.out, spec.timeout_s)
    from archbench.bench.measure.cluster.dispatcher import ClusterDispatcher

    return ClusterDispatcher(spec.cluster, spec.target, spec.out, spec.timeout_s, spec.device)


def run(spec: RunSpec, progress: Progress | None = None,
        decided: Callable[[Record], bool] | None = None) -> list[Record]:
    """Run every cell of ``spec`` not already done; return the combined records of this invocation.

    ``progress(record, done, total)`` is called for every repetition (``total`` grows when ``rel_ci`` adds
    repetitions); ``decided(record)`` -> True stops a cell's repetitions early (its budget verdict is known)."""
    import random

    from archbench.bench.analyze.combine import combine

    if spec.repetitions < 1:
        raise ValueError(f"repetitions must be >= 1, got {spec.repetitions}")
    spec.out.mkdir(parents=True, exist_ok=True)
    jsonl, reps_path = spec.out / "records.jsonl", spec.out / "repetitions.jsonl"
    if jsonl.exists() and not spec.resume:
        raise FileExistsError(f"{jsonl} exists; pass --resume to continue that run or choose another --out")
    groups = plan(spec, done_cells(jsonl) if spec.resume else set())
    where = dispatcher(spec)
    cells = [c for g in groups for c in g]
    reps: dict[tuple, list[Record]] = {c.key(): [] for c in cells}
    if spec.resume and reps_path.exists():
        for r in read_records(reps_path):
            if r.key() in reps:
                reps[r.key()].append(r)
    cap = max(spec.repetitions, spec.max_repetitions or (3 * spec.repetitions if spec.rel_ci else spec.repetitions))
    total = len(cells) * spec.repetitions
    run_id = new_run_id()
    seed = spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    records: list[Record] = []
    final: set[tuple] = set()
    count = 0

    def on_rep(rec: Record) -> None:
        nonlocal count
        append_jsonl(reps_path, rec)
        reps.setdefault(rec.key(), []).append(rec)
        count += 1
        if progress:
            progress(rec, count, max(total, count))

    def wants_more(c: Cell) -> bool:
        got = reps[c.key()]
        if c.key() in final or any(r.status == "skipped" for r in got):
            return False
        if got and not any(r.ok for r in got):
            return False  # failed in every repetition so far: a retry would fail the same way
        n = len(got)
        if n < spec.repetitions:
            return True
        if n >= cap or spec.rel_ci is None:
            return False
        rec = combine(got, spec.rel_ci)
        if decided is not None and rec.ok and decided(rec):
            return False
        return rec.ok and (rec.p50_rel_ci is None or rec.p50_rel_ci > spec.rel_ci)

    def finish(c: Cell) -> None:
        final.add(c.key())
        rec = combine(reps[c.key()], spec.rel_ci)
        rec.baseline = spec.baseline
        append_jsonl(jsonl, rec)
        records.append(rec)

    (spec.out / "logs").mkdir(parents=True, exist_ok=True)
    where.artifacts(artifact_jobs(spec, groups, run_id))
    with open(spec.out / "logs" / "rounds.log", "a", encoding="utf-8") as log:
        log.write(f"run {run_id}: seed {seed}, {len(cells)} cells, {spec.repetitions}..{cap} repetitions\n")
    start = min((len(v) for v in reps.values()), default=0)
    for rnd in range(start, cap + start):
        # a resumed run: a cell that already ran this round before the interruption waits for the next one, so
        # every repetition keeps a round of its own (speedups pair repetitions by round)
        active = [tuple(c for c in g if wants_more(c) and not _ran_in(reps[c.key()], rnd)) for g in groups]
        active = [g for g in active if g]
        for c in cells:  # cells that need nothing more: their record now (an earlier round completed them)
            if c.key() not in final and not wants_more(c) and reps[c.key()]:
                finish(c)
        if not active:
            break
        total = max(total, count + sum(len(g) for g in active))
        where.run_round([Job(cells=g, workdir=str(spec.workdir(g[0].source, g[0].knobs)), run_id=run_id,
                             rule=spec.rule, repetition=rnd) for g in _interleave(active, rng)], on_rep)
    for c in cells:
        if c.key() not in final and reps[c.key()]:
            finish(c)
    return records


def _ran_in(got: list[Record], rnd: int) -> bool:
    return any(r.rep_rounds and r.rep_rounds[0] == rnd for r in got)


def _interleave(groups: list[tuple[Cell, ...]], rng: Any) -> list[tuple[Cell, ...]]:
    """A random order of the round's groups, a model's groups kept together (in random order among themselves)."""
    by_source: dict[str, list[tuple[Cell, ...]]] = {}
    for g in groups:
        by_source.setdefault(g[0].source, []).append(g)
    sources = list(by_source)
    rng.shuffle(sources)
    out = []
    for s in sources:
        gs = by_source[s]
        rng.shuffle(gs)
        out += gs
    return out


def artifact_jobs(spec: RunSpec, groups: list[tuple[Cell, ...]], run_id: str) -> list[Job]:
    """One artifacts job per model (and knob set) whose runtimes need files, run before any measuring worker."""
    if not spec.artifacts:  # the mode builds its model in the measuring worker (train)
        return []
    by_source: dict[tuple[str, str], list[Cell]] = {}
    for g in groups:
        by_source.setdefault((g[0].source, g[0].knobs), []).extend(g)
    jobs = []
    for (source, knobs), cells in by_source.items():
        kind = artifact_kind([c.runtime for c in cells], source)
        if kind is not None:
            jobs.append(Job(cells=tuple(cells), workdir=str(spec.workdir(source, knobs)), run_id=run_id,
                            rule=spec.rule, kind="artifacts", artifact=kind))
    return jobs
