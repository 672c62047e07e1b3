"""archbench inside pytest-benchmark: the ``archbench_bench`` fixture's engine and ``assert_budget``.

How a benchmark is timed (``time_with_benchmark``), so pytest-benchmark's own statistics, its saved JSON and its
``--benchmark-compare`` rest on exactly the samples archbench reports percentiles from:

1. one cold call (``first_inference_ms``), then warm-up by archbench.bench.measure.harness's rule: at least ``warmup_iters`` calls
   *and* ``warmup_s`` seconds, rotating through the input sets; the warm-up calls are timed to estimate the
   per-call cost;
2. the number of timed calls is fixed from that estimate by the same stop rule as archbench.bench.measure.harness.measure
   (``min_iters`` calls and ``min_time_s`` seconds, capped by ``max_iters`` and ``max_time_s``), because
   ``benchmark.pedantic`` takes a round count, not a time;
3. ``benchmark.pedantic(target, setup=next_inputs, rounds=n, iterations=1)``: one call per round, so every
   pytest-benchmark round is one archbench sample; ``setup`` (not timed) hands over the next of several random
   input sets (never zeros); on CUDA it synchronizes before the call and ``target`` synchronizes after it, so a
   sample is the wall time of the call *including* its GPU work (a few microseconds above CUDA-event time; use
   ``archbench kernels`` for event-timed kernel microbenchmarks);
4. the per-round durations pytest-benchmark stored (``benchmark.stats.stats.data``) become ``samples_ms``;
   p50/p90/p95/p99, mean, std and CV come from archbench.bench.analyze.stats.summarize over them, so archbench's p50 *is*
   pytest-benchmark's median.

With ``--benchmark-disable`` the target runs once, untimed (a smoke test): the record has no latency.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from archbench.bench.analyze.budgets import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    SKIPPED,
    Budget,
    RecordVerdict,
    judge_record,
    parse_budget,
)
from archbench.bench.analyze.stats import fill_latency
from archbench.bench.errors import UsageError
from archbench.bench.measure.harness import StopRule
from archbench.bench.numfmt import num
from archbench.bench.record import Record

# The fixture's default stop rule: archbench.bench.measure.harness's default (>= 30 calls and >= 1 s, after >= 5 calls and 0.2 s
# of warm-up). Longer than `archbench run`'s QUICK rule: a regression gate wants steadier medians.
DEFAULT_RULE = StopRule()


class BudgetFailed(AssertionError):
    """A budget was missed (FAIL), its cell failed (ERROR), or, when strict, could not be decided."""


class BudgetInconclusive(pytest.PytestWarning):
    """A budget term the samples could not decide (see archbench.bench.analyze.budgets). ``-W error::...`` makes it fail."""


def rule_with_min_time(rule: StopRule, min_time_s: float | None) -> StopRule:
    """``rule`` with ``min_time_s`` replaced; warm-up shortened to at most that long too (quick test runs)."""
    if min_time_s is None:
        return rule
    if not min_time_s > 0:
        raise UsageError(f"archbench min time {min_time_s!r}: expected seconds > 0, e.g. 0.5")
    return replace(rule, min_time_s=min_time_s, warmup_s=min(rule.warmup_s, min_time_s))


def rounds_for(rule: StopRule, per_call_s: float) -> int:
    """Timed calls archbench.bench.measure.harness.measure would make at ``per_call_s`` each: enough for ``min_iters`` and
    ``min_time_s``, at most ``max_iters``, and no more than fit in ``max_time_s`` (at least one)."""
    per_call_s = max(per_call_s, 1e-9)
    n = max(rule.min_iters, math.ceil(rule.min_time_s / per_call_s))
    return max(1, min(n, rule.max_iters, math.floor(rule.max_time_s / per_call_s)))


@dataclass(frozen=True)
class Timed:
    samples_ms: list[float]  # one per timed call; empty when benchmarks are disabled
    first_ms: float | None  # the cold call
    warmup_iters: int
    measure_s: float  # wall time of the timed rounds (setup included)
    other_cpu_pct: float | None = None  # others' share of all CPUs during the timed rounds (archbench.bench.measure.harness)


def _noop() -> None:
    return None


def time_with_benchmark(benchmark: Any, fn: Callable[[Any], Any], input_sets: Sequence[Any], rule: StopRule,
                        cuda: bool = False) -> Timed:
    """Time ``fn(inputs)`` through ``benchmark.pedantic`` by archbench.bench.measure.harness's rules (module docstring)."""
    if not input_sets:
        raise ValueError("archbench_bench needs at least one input set")
    k = len(input_sets)
    sync: Callable[[], None] = _noop
    if cuda:
        import torch

        sync = torch.cuda.synchronize
    if getattr(benchmark, "disabled", False):
        benchmark.pedantic(fn, args=(input_sets[0],), rounds=1)
        return Timed([], None, 0, 0.0)

    from archbench.bench.measure.harness import warm_up

    clock = time.perf_counter
    w = warm_up(fn, input_sets, rule, sync)  # the cold call and the warm-up of every archbench timing loop
    first_ms, per_call = w.first_ms, w.per_call_s
    rounds = rounds_for(rule, per_call)

    order = itertools.count()

    def next_inputs() -> tuple[tuple[Any, ...], dict[str, Any]]:
        sync()  # nothing queued before may land in the timed call
        return (input_sets[next(order) % k],), {}

    def target(inputs: Any) -> Any:
        out = fn(inputs)
        sync()
        return out

    from archbench.bench.measure.harness import cpu_snapshot, other_cpu_pct

    before = cpu_snapshot()
    loop_start = clock()
    benchmark.pedantic(target, setup=next_inputs, rounds=rounds, warmup_rounds=0, iterations=1)
    measure_s = clock() - loop_start
    others = other_cpu_pct(before, cpu_snapshot())
    samples = [d * 1e3 for d in benchmark.stats.stats.data]  # seconds per round (iterations=1) -> ms
    return Timed(samples, first_ms, w.iters, measure_s, others)


def fill_timed(rec: Record, timed: Timed) -> None:
    """Latency fields of ``rec`` from the samples (analyze.stats.fill_latency, as the workers fill them)."""
    if not timed.samples_ms:
        rec.first_inference_ms = timed.first_ms
        rec.warmup_iters, rec.measure_s = timed.warmup_iters, timed.measure_s
        rec.warning = "benchmarks disabled (--benchmark-disable): ran once, untimed"
        return
    fill_latency(rec, timed.samples_ms, first_ms=timed.first_ms, warmup_iters=timed.warmup_iters,
                     measure_s=timed.measure_s, other_cpu_pct=timed.other_cpu_pct, flops_per_call=rec.flops,
                     min_time_hint="--archbench-min-time")


# Record fields copied into benchmark.extra_info["archbench"] (everything but the raw samples and provenance).
EXTRA_FIELDS = (
    "model", "runtime", "precision", "batch", "device", "threads", "family", "knobs", "input_shape", "input_dtype",
    "quant_method", "params", "macs", "flops", "size_mib", "n_samples", "throughput_sps", "achieved_gflops",
    "load_ms", "first_inference_ms", "warmup_iters", "other_cpu_pct", "warning",
)
PERCENTILES = (("p50_ms", "latency_p50_ms"), ("p90_ms", "latency_p90_ms"), ("p95_ms", "latency_p95_ms"),
               ("p99_ms", "latency_p99_ms"), ("mean_ms", "latency_mean_ms"), ("std_ms", "latency_std_ms"),
               ("min_ms", "latency_min_ms"), ("max_ms", "latency_max_ms"), ("cv", "latency_cv"))
TIMING_NOTE = ("pytest-benchmark pedantic, 1 call per round, rounds from archbench.bench.measure.harness's stop rule after its "
               "warm-up, inputs rotated by setup (untimed), CUDA synchronized around each call")


def extra_info(rec: Record, rule: StopRule, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What goes into ``benchmark.extra_info["archbench"]``: counts, percentiles, stop rule, environment."""
    from archbench.bench.env import fingerprint

    d = asdict(rec)
    env = {k: d[k] for k in ("archbench_version", "git_commit", "python_version", "torch_version",
                             "onnxruntime_version", "onnx_version", "triton_version", "os", "hostname",
                             "cpu_model", "cpu_count", "gpu_name", "gpu_driver")}
    info: dict[str, Any] = {k: d[k] for k in EXTRA_FIELDS}
    info.update({short: d[fld] for short, fld in PERCENTILES})
    info.update(stop_rule=asdict(rule), timing=TIMING_NOTE, fingerprint=fingerprint(rec), environment=env)
    if extra:
        info.update(extra)
    return info


def _is_cuda(obj: Any) -> bool:
    if hasattr(obj, "is_cuda"):
        return bool(obj.is_cuda)
    if isinstance(obj, dict):
        return any(_is_cuda(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_is_cuda(v) for v in obj)
    return False


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "model"


class ArchbenchBench:
    """The ``archbench_bench`` fixture: benchmark a model or any callable through pytest-benchmark.

    ``archbench_bench.model("resnet_s", runtime="onnxruntime")`` builds, prepares and times a model reference
    (zoo name, ``pkg.module:factory`` or ``.onnx``) in this process; ``archbench_bench(fn, input_sets)`` times
    ``fn(inputs)`` for a kernel or anything else. Both return a archbench.bench.record.Record (what ``archbench run``
    writes, minus fidelity and peak memory) and attach its numbers to ``benchmark.extra_info["archbench"]``.
    One benchmark per test, as pytest-benchmark allows.
    """

    def __init__(self, benchmark: Any, rule: StopRule = DEFAULT_RULE, workroot: Path | None = None,
                 threads: int | None = None) -> None:
        self.benchmark = benchmark
        self.rule = rule
        self.workroot = workroot or Path.cwd() / ".archbench-pytest"
        self.threads = threads  # None: all CPUs for models, torch's current setting for callables

    def __call__(self, fn: Callable[[Any], Any], input_sets: Sequence[Any], *, name: str = "",
                 runtime: str = "callable", precision: str = "", batch: int = 1, device: str | None = None,
                 params: int | None = None, macs: int | None = None, flops: int | None = None,
                 threads: int | None = None, rule: StopRule | None = None,
                 extra: dict[str, Any] | None = None) -> Record:
        """Time ``fn(inputs)`` over ``input_sets`` (several random sets, rotated). ``flops`` defaults to
        2 x ``macs``; ``extra`` is merged into the extra_info (e.g. bytes moved and its formula). ``threads``
        (or --archbench-threads) sets torch's intra-op pool while timing; by default it is left as it is."""
        import torch

        from archbench.bench.env import environment

        cuda = _is_cuda(input_sets[0]) if device is None else device == "cuda"
        rule = rule or self.rule
        if flops is None and macs is not None:
            flops = 2 * macs
        name = name or getattr(fn, "__name__", "callable")
        threads = threads or self.threads or torch.get_num_threads()
        rec = Record(model=name, runtime=runtime, precision=precision, batch=batch,
                     device="cuda" if cuda else "cpu", threads=threads, params=params, macs=macs, flops=flops,
                     timestamp=_now(), **environment())
        self._group(name)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            fill_timed(rec, time_with_benchmark(self.benchmark, fn, input_sets, rule, cuda))
        finally:
            torch.set_num_threads(previous)
        self.benchmark.extra_info["archbench"] = extra_info(rec, rule, extra)
        return rec

    def model(self, ref: str, runtime: str = "torch", precision: str = "fp32", batch: int = 1,
              device: str = "cpu", *, knobs: dict[str, Any] | None = None, threads: int | None = None,
              input_sets: int = 4, input_shape: tuple[int, ...] | None = None, dtype: str | None = None,
              weights: str | None = None, rule: StopRule | None = None) -> Record:
        """Build ``ref``, prepare it on ``runtime`` at ``precision`` and time one forward at ``batch``.

        The same path as ``archbench run``'s workers (archbench.bench.measure.prepare: prepare / start_record), in
        this process: params and batch-1 MACs (x batch), the runtime's threads (default: --archbench-threads, else
        all CPUs), its size and load time. A torch-free runtime gets its artefacts (ONNX export, variant) built here
        first. A runtime that cannot run the precision skips the test. torch's thread setting is restored after.
        """
        import torch

        from archbench.bench.cell import Cell, Job, Options, canonical_knobs
        from archbench.bench.measure.prepare import prepare, start_record
        from archbench.bench.measure.runtimes import UnsupportedCell, get_runtime

        knobs = dict(knobs or {})
        threads = threads or self.threads or _threads()
        rule = rule or self.rule
        workdir = self.workroot / (_slug(ref) + ("_" + _slug(json.dumps(knobs, sort_keys=True)) if knobs else ""))
        shape = tuple(input_shape) if input_shape else None
        cell = Cell(source=ref, runtime=runtime, precision=precision, batch=batch, device=device, threads=threads,
                    knobs=canonical_knobs(knobs), options=Options(input_shape=shape, dtype=dtype, weights=weights,
                                                                   input_sets=input_sets))
        job = Job(cells=(cell,), workdir=str(workdir), rule=rule)
        previous = torch.get_num_threads()
        try:
            try:
                cls = get_runtime(runtime)
                cls.check(precision, device)
                if not cls.needs_torch:
                    from archbench.bench.measure.artifacts import build
                    from archbench.bench.measure.variants import build_variants

                    build(replace(job, kind="artifacts", artifact=cls.artifact), lambda *a, **k: None)
                    build_variants(job, workdir)
                p = prepare(job)
                rt, model = p.runtime, p.model
            except UnsupportedCell as e:
                pytest.skip(f"{ref} {runtime} {precision} on {device}: {e}")
            except ValueError as e:
                raise UsageError(str(e)) from None
            rec = start_record(cell, rt, model, "", None)
            sets = [rt.convert(model.inputs(batch, s)) for s in range(input_sets)]
            self._group(ref)
            cuda = device == "cuda" and cls.needs_torch
            fill_timed(rec, time_with_benchmark(self.benchmark, rt.run, sets, rule, cuda=cuda))
            if rt.notes:
                rec.warning = "; ".join([*rt.notes, rec.warning]).strip("; ")
        finally:
            torch.set_num_threads(previous)
        self.benchmark.extra_info["archbench"] = extra_info(rec, rule)
        return rec

    def _group(self, name: str) -> None:
        # Group pytest-benchmark's table by model (runtimes and precisions side by side), unless a
        # @pytest.mark.benchmark(group=...) chose a group already.
        if getattr(self.benchmark, "group", None) is None:
            self.benchmark.group = name


def _threads() -> int:
    return os.cpu_count() or 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ budgets


def format_verdict(v: RecordVerdict, title: str) -> str:
    """``title: VERDICT`` and one line per term: its verdict, the bound, the measured value and why."""
    lines = [f"{title}: {v.verdict}"]
    if v.reason:
        lines.append(f"  {v.reason}")
    width = max((len(str(t.term)) for t in v.terms), default=0)
    for t in v.terms:
        why = f"; {t.reason}" if t.reason else ""
        lines.append(f"  {t.verdict:<12}  {str(t.term):<{width}}  measured {num(t.value)}{why}")
    return "\n".join(lines)


def budget_title(b: Budget) -> str:
    """``edge (p95_ms <= 20, size_mib <= 30)`` for a profile; the expression as written otherwise."""
    terms = ", ".join(str(t) for t in b.terms)
    return f"{b.name} ({terms})" if b.name else repr(b.source)




def _as_record(measured: Any) -> Record:
    if isinstance(measured, Record):
        return measured
    if isinstance(measured, dict):
        return Record.from_dict(measured)
    raise TypeError(f"assert_budget takes an archbench Record or a record dict, not {type(measured).__name__}")


def check_budget(measured: Record | dict[str, Any], budget: str | Budget, title: str = "",
                 strict: bool = False, context: Sequence[Record] = ()) -> RecordVerdict:
    """Judge and act like a test: FAIL/ERROR (and INCONCLUSIVE when ``strict``) raise BudgetFailed; SKIPPED
    skips; INCONCLUSIVE otherwise warns (BudgetInconclusive). Returns the verdict."""
    __tracebackhide__ = True  # pytest shows the test's line, not this function's
    rec = _as_record(measured)
    b = budget if isinstance(budget, Budget) else parse_budget(budget)
    v = judge_record(rec, b, context)
    msg = format_verdict(v, title or f"budget {budget_title(b)} on {rec.label()}")
    if v.verdict == SKIPPED:
        pytest.skip(msg)
    if v.verdict in (FAIL, ERROR) or (strict and v.verdict == INCONCLUSIVE):
        raise BudgetFailed(msg)
    if v.verdict == INCONCLUSIVE:
        warnings.warn(BudgetInconclusive(msg), stacklevel=3)
    return v


def assert_budget(measured: Record | dict[str, Any], budget: str | Budget, *, strict: bool = False,
                  context: Sequence[Record] = ()) -> RecordVerdict:
    """Assert that a measurement meets a budget: ``assert_budget(rec, "p95_ms<=20, size_mib<=30")``.

    ``measured``: what ``archbench_bench`` returned, or any record dict (a line of records.jsonl). ``budget``: an
    expression, ``file.toml[:PROFILE]`` or a archbench.bench.analyze.budgets.Budget. Percentile terms are judged from the raw
    samples with order-statistic confidence bounds (archbench.bench.analyze.budgets): a miss raises BudgetFailed (an
    AssertionError) listing every term's verdict, bound, measured value and bounds; a term the samples cannot
    decide warns (BudgetInconclusive), or fails with ``strict=True``. A malformed budget raises
    archbench.bench.errors.UsageError naming the term.
    """
    __tracebackhide__ = True
    return check_budget(measured, budget, strict=strict, context=context)
