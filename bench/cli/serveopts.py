"""The serving flags of ``archbench run`` (``--scenario``, the load, the server's knobs, validity rules,
``--find-max-qps``) and their validation; torch-free.

    archbench run mlp_s --scenario server --qps 100,200,400 --executors 1,2
    archbench run resnet_s --scenario single-stream,offline --batch 1,8 --max-batch 8,32
    archbench run mlp_s --scenario concurrency --concurrency 1,4 --executors 2
    archbench run resnet_s --runtime onnxruntime --find-max-qps --sla "p99_ms<=20" --max-batch 1,8

Every combination of the lists is a serving cell of its own (scenario x load x executors x max batch x queue
delay), measured at batch 1 (one sample per request; batching is the server's ``--max-batch``). Single-stream
cells (``--scenario single-stream``, the default) are the ordinary ones, at every ``--batch``: measure them beside a
server's cells and the report predicts its latency curve from them (analyze.capacity).
"""

from __future__ import annotations

import argparse
import itertools
import os
from dataclasses import replace
from typing import Any

from archbench.bench.cli.argtypes import (
    count,
    count_list,
    positive_list,
    positive_number,
    seconds,
    seconds_list,
)
from archbench.bench.errors import UsageError

SCENARIOS = ("single-stream", "offline", "server", "concurrency")  # scenario: SINGLE_STREAM + KINDS


def _scenarios(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    bad = [t for t in items if t not in SCENARIOS]
    if bad or not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {', '.join(SCENARIOS)}")
    return list(dict.fromkeys(items))


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("serving scenarios (--scenario; see bench/measure/loadgen.py for the rules and what "
                             "each number is)")
    g.add_argument("--scenario", type=_scenarios, default=None, metavar="S[,S...]",
                   help="single-stream (default: one request at a time), offline (all samples at once, batched: "
                        "samples/s), server (Poisson arrivals at --qps: latency with queueing), concurrency "
                        "(--concurrency requests always in flight); a comma list measures several")
    g.add_argument("--qps", type=positive_list, default=None, metavar="Q[,Q...]",
                   help="server: offered requests/s (a list: one cell each); --find-max-qps: where the search starts")
    g.add_argument("--concurrency", type=count_list(1), default=None, metavar="N[,N...]",
                   help="concurrency: requests always in flight")
    g.add_argument("--executors", type=count_list(1), default=None, metavar="N[,N...]",
                   help="executor threads, each with its own runtime instance (default 1)")
    g.add_argument("--executor-threads", type=count(1), default=None, metavar="N",
                   help="intra-op threads of each executor (default: --threads / executors, at least 1)")
    g.add_argument("--max-batch", type=count_list(1), default=None, metavar="B[,B...]",
                   help="dynamic batching: most queued requests one executor runs as one batch (default 1; "
                        "offline 32)")
    g.add_argument("--max-queue-delay-ms", type=seconds_list, default=None, metavar="MS[,MS...]",
                   help="dynamic batching: longest the oldest queued request waits for its batch to fill (default 0)")
    g.add_argument("--min-duration", type=seconds, default=None, metavar="S",
                   help="validity: issue requests for at least S seconds per repetition (default 2)")
    g.add_argument("--min-queries", type=count(1), default=None, metavar="N",
                   help="validity: complete at least N requests per repetition (default: server and concurrency "
                        "256, offline 1024)")
    g.add_argument("--qps-tolerance", type=positive_number, default=None, metavar="F",
                   help="validity: INVALID when achieved QPS < (1 - F) x offered or the backlog at the last arrival "
                        "exceeds F x requests (default 0.1)")
    g.add_argument("--find-max-qps", action="store_true",
                   help="server: the highest offered QPS whose run is VALID and meets --sla (doubling, then "
                        "bisection); one search per model x runtime x precision x server configuration")
    g.add_argument("--sla", default=None, metavar="EXPR",
                   help="--find-max-qps: what a trial must meet, e.g. 'p99_ms<=50' (budget syntax)")
    g.add_argument("--max-qps-tol", type=positive_number, default=None, metavar="F",
                   help="--find-max-qps: stop bisecting when (first failing - last passing) / last passing <= F "
                        "(default 0.1)")


_LOAD_FLAGS = ("qps", "concurrency", "executors", "executor_threads", "max_batch", "max_queue_delay_ms",
               "min_duration", "min_queries", "qps_tolerance", "find_max_qps", "sla", "max_qps_tol")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply(args: argparse.Namespace, spec: Any) -> Any:
    """``spec`` with its serving cells (RunSpec.scenarios) and options; UsageError for flags that cannot apply."""
    from archbench.bench.modes.maxqps import DEFAULT_START
    from archbench.bench.scenario import OFFLINE_MAX_BATCH, Scenario

    given = [n for n in _LOAD_FLAGS if getattr(args, n, None) not in (None, False)]
    chosen = getattr(args, "scenario", None)
    if chosen is None:
        chosen = ["server"] if getattr(args, "find_max_qps", False) else ["single-stream"]
    serving = [s for s in chosen if s != "single-stream"]
    if not serving:
        if given:
            raise UsageError(f"{', '.join(map(_flag, given))} only appl{'y' if len(given) > 1 else 'ies'} with "
                             "--scenario offline, server or concurrency")
        return spec
    if spec.mode != "infer":
        raise UsageError(f"--scenario {','.join(serving)} measures inference (--mode infer), not --mode {spec.mode}")
    _check_combinations(args, chosen, serving)
    executors = args.executors or [1]
    delays = args.max_queue_delay_ms or [0.0]
    cells: list[tuple[str, str]] = []
    for kind in serving:
        loads = {"server": args.qps or [0.0], "concurrency": args.concurrency, "offline": [None]}[kind]
        batches = args.max_batch or [OFFLINE_MAX_BATCH if kind == "offline" else 1]
        for load, e, b, d in itertools.product(loads, executors, batches, delays):
            if kind == "offline" or b == 1:
                d = 0.0  # the queue delay waits for a batch to fill: moot without batching or in a full queue
            threads = args.executor_threads or max(1, spec.resolved_threads() // e)
            kw: dict[str, Any] = {"qps": (load or DEFAULT_START) if kind == "server" else None,
                                  "concurrency": load if kind == "concurrency" else None}
            s = Scenario(kind, executors=e, executor_threads=threads, max_batch=b, queue_delay_ms=d, **kw)
            if (kind, s.descriptor()) not in cells:
                cells.append((kind, s.descriptor()))
    from archbench.bench.cell import ServeOptions

    options = replace(spec.options, serve=ServeOptions(
        min_duration_s=args.min_duration or 0.0, min_queries=args.min_queries or 0, tolerance=args.qps_tolerance or 0.0,
        find_max_qps=args.sla or "", max_qps_rel_tol=args.max_qps_tol or 0.0))
    batches = spec.batches if "single-stream" in chosen else []
    return replace(spec, scenarios=cells, options=options, batches=batches)


def _check_combinations(args: argparse.Namespace, chosen: list[str], serving: list[str]) -> None:
    for flag in ("qps_tolerance", "max_qps_tol"):
        v = getattr(args, flag)
        if v is not None and v >= 1:
            raise UsageError(f"{_flag(flag)} {v:g}: a fraction between 0 and 1, e.g. 0.1")
    search = bool(getattr(args, "find_max_qps", False))
    if search:
        if args.sla is None:
            raise UsageError("--find-max-qps needs --sla, e.g. --sla 'p99_ms<=50'")
        if chosen != ["server"]:
            raise UsageError(f"--find-max-qps runs server trials only; --scenario {','.join(chosen)} has more")
        if args.qps and len(args.qps) > 1:
            raise UsageError("--find-max-qps starts from one --qps value")
        from archbench.bench.analyze.budgets import parse_expression

        parse_expression(args.sla)  # a malformed SLA is exit 2 before anything runs
    else:
        for flag in ("sla", "max_qps_tol"):
            if getattr(args, flag) is not None:
                raise UsageError(f"{_flag(flag)} only applies with --find-max-qps")
        if "server" in serving and not args.qps:
            raise UsageError("--scenario server needs --qps Q[,Q...] (the offered load), or --find-max-qps")
    if args.qps and "server" not in serving:
        raise UsageError("--qps only applies with --scenario server")
    if args.qps:
        from archbench.bench.measure.loadgen import MAX_REQUESTS
        from archbench.bench.scenario import DEFAULT_MIN_DURATION_S

        q = max(args.qps)
        n = q * (args.min_duration or DEFAULT_MIN_DURATION_S)
        if n > MAX_REQUESTS:
            raise UsageError(f"--qps {q:g} for {args.min_duration or DEFAULT_MIN_DURATION_S:g} s is {n:.3g} requests: "
                             f"more than the {MAX_REQUESTS:,} one run holds; lower --qps or --min-duration")
    if "concurrency" in serving and not args.concurrency:
        raise UsageError("--scenario concurrency needs --concurrency N[,N...] (requests in flight)")
    if args.concurrency and "concurrency" not in serving:
        raise UsageError("--concurrency only applies with --scenario concurrency")
    if "single-stream" not in chosen and getattr(args, "batch", "1") != "1":
        raise UsageError("--batch sizes single-stream cells; a serving request is one sample (batching is "
                         "--max-batch): add single-stream to --scenario to measure both")


def warn(records: list[Any]) -> None:
    """Warning lines after the run's summary: INVALID serving cells, executors that oversubscribe the CPUs."""
    import sys

    bad = [r for r in records if r.valid is False and not (r.sla and r.max_qps is None)]
    if bad:
        print(f"archbench: warning: {len(bad)} serving cell(s) INVALID (see the table): their latencies describe a "
              f"server that did not keep up or ran too short, e.g. {bad[0].model} {bad[0].runtime} {bad[0].mode} "
              f"{bad[0].scenario}: {bad[0].invalid_reason[:200]}", file=sys.stderr)
    cpus = os.cpu_count() or 1
    over = [r for r in records if r.scenario and (r.executors or 1) * (r.executor_threads or 1) > cpus]
    if over:
        print(f"archbench: warning: {len(over)} serving cell(s) run more executor threads than this machine's "
              f"{cpus} CPUs (executors x --executor-threads)", file=sys.stderr)
