"""`archbench run`: flags -> RunSpec, the engine, the summary table, budgets and exit code."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from archbench.bench.analyze.stats import BUSY_PCT
from archbench.bench.cli.options import DEFAULT_ZOO, cluster_from_args, csv_list, knobs_from_args
from archbench.bench.errors import UsageError
from archbench.bench.measure.runtimes import RUNTIMES

# ----------------------------------------------------------------------------------------------------- run

def spec_from_args(args: argparse.Namespace):
    from pathlib import Path

    from archbench.bench.cell import QUICK, Options, StopRule
    from archbench.bench.measure.engine import RunSpec
    from archbench.bench.measure.runtimes import get_runtime
    from archbench.bench.measure.sources import is_onnx_ref, parse_dtype, parse_shape

    models = args.models or DEFAULT_ZOO
    from archbench.bench.measure.sources import check_ref

    knobs = knobs_from_args(args)
    for m in models:  # fail fast, before any worker starts, on names that cannot resolve (zoo, .onnx, hub)
        check_ref(m, knobs)
    from archbench.bench.cli import trainopts

    runtimes = csv_list(args.runtime if args.runtime is not None else trainopts.default_runtimes(args), what="runtime")
    for rt in runtimes:
        if rt not in RUNTIMES:
            raise UsageError(f"unknown runtime {rt!r}; known: {', '.join(RUNTIMES)}")
    if all(is_onnx_ref(m) for m in models) and args.runtime is None:
        # An .onnx file runs where no PyTorch module is needed: by default on those of these runtimes installed here.
        runtimes = [r for r in RUNTIMES if _torch_free_and_installed(get_runtime, r)] or runtimes
    batches = csv_list(args.batch, int, "batch")
    if any(b <= 0 for b in batches):
        raise UsageError(f"bad --batch {args.batch!r}: batch sizes must be positive")
    precisions = csv_list(args.precision, what="precision")
    if args.input_shape is not None:
        parse_shape(args.input_shape)
    if args.dtype is not None:
        parse_dtype(args.dtype)
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    rule = StopRule(
        warmup_iters=args.warmup if args.warmup is not None else QUICK.warmup_iters,
        warmup_s=QUICK.warmup_s,
        min_iters=args.min_iters if args.min_iters is not None else QUICK.min_iters,
        min_time_s=args.min_time if args.min_time is not None else QUICK.min_time_s,
        max_time_s=max(QUICK.max_time_s, 10 * (args.min_time or 0)),
    )
    from datetime import datetime

    out = Path(args.out) if args.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    from archbench.bench.cli import trainopts

    mode, train = trainopts.from_args(args, models, runtimes)
    options = Options(input_shape=parse_shape(args.input_shape) if args.input_shape is not None else None, dtype=args.dtype,
                      weights=args.weights, **train)
    if args.repetitions < 1:
        raise UsageError(f"--repetitions {args.repetitions}: must be >= 1")
    if args.rel_ci is not None and not 0 < args.rel_ci < 1:
        raise UsageError(f"--rel-ci {args.rel_ci}: a fraction between 0 and 1, e.g. 0.03")
    if args.max_repetitions is not None and args.max_repetitions < args.repetitions:
        raise UsageError(f"--max-repetitions {args.max_repetitions}: must be >= --repetitions {args.repetitions}")
    if args.max_repetitions is not None and args.rel_ci is None:
        raise UsageError("--max-repetitions only applies with --rel-ci")
    baseline = getattr(args, "baseline", None) or ""
    if baseline and baseline not in models:
        raise UsageError(f"--baseline {baseline}: not one of this run's models ({', '.join(models)})")
    if baseline and len(set(models)) < 2:
        raise UsageError(f"--baseline {baseline}: needs at least one other model to compare with it")
    from archbench.bench.cli import genopts
    from archbench.bench.modes import get_mode

    return RunSpec(baseline=baseline, artifacts=get_mode(mode).artifacts,
        mode=mode, options=options, variants=genopts.variants(args, models, knobs, mode),
        models=models, out=out, runtimes=runtimes, precisions=precisions, batches=batches, device=args.device,
        threads=args.threads or 0, knobs=knobs_from_args(args), rule=rule, timeout_s=args.timeout,
        resume=args.resume, repetitions=args.repetitions, rel_ci=args.rel_ci,
        max_repetitions=args.max_repetitions, seed=args.seed, **cluster_from_args(args),
    )


def _torch_free_and_installed(get_runtime: Any, name: str) -> bool:
    try:
        cls = get_runtime(name)
    except ImportError:
        return False
    return not cls.needs_torch and bool(cls.version())


def cmd_run(args: argparse.Namespace) -> int:

    from archbench.bench.measure import engine
    from archbench.bench.record import latest_per_cell, read_records

    spec = spec_from_args(args)
    from archbench.bench.cli import budget_args, genopts, serveopts

    spec = serveopts.apply(args, spec)  # --scenario offline/server/concurrency: serving cells (modes.serve)

    budget = budget_args.budget_from_args(args)  # a malformed budget is exit 2 before any cell runs
    budget_args.check_precisions(args.precision)
    spec = replace(spec, options=replace(spec.options, **budget_args.options_from_args(args)))
    if (spec.out / "records.jsonl").exists() and not spec.resume:
        raise UsageError(f"{spec.out / 'records.jsonl'} exists; pass --resume to continue it or choose another --out")
    genopts.check_resume(spec)  # --mode generate: new_tokens is one value per run, not part of a cell's key
    if spec.device == "cuda" and spec.cluster is None:  # on a cluster the nodes have the GPUs, not this driver
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device visible to torch here")
    n_cells = sum(1 for _ in spec.cells())  # models (x their knob sets: --prompt-len) x runtimes x ...
    reps = f"{spec.repetitions} repetitions" + (f" (up to {spec.max_repetitions or 3 * spec.repetitions} until "
                                                f"p50 is within +/-{spec.rel_ci:.0%})" if spec.rel_ci else "")
    print(f"archbench run: {n_cells} cells ({len(spec.models)} models x {', '.join(spec.runtimes)} x "
          f"{', '.join(spec.precisions)} x batch {','.join(map(str, spec.batches)) or '-'}"
          f"{f' + {len(spec.scenarios)} serving scenario(s)' if spec.scenarios else ''}) on {spec.device}, "
          f"{spec.resolved_threads()} threads, {reps} each, interleaved -> {spec.out}", file=sys.stderr)
    bar = _progress(n_cells * spec.repetitions)
    if spec.options.train.find_max_batch:  # trials per group are not known in advance: no total, no bar
        print(f"archbench run: --find-max-batch, {spec.mode} mode: one search per model x runtime x precision, "
              f"starting at batch {min(spec.batches)}", file=sys.stderr)
        bar = lambda msg, i, n: print(f"[{i}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if spec.options.serve.find_max_qps:  # nor are a max-QPS search's
        bar = lambda msg, i, n: print(f"[{i}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    def progress(rec: Any, i: int, total: int) -> None:
        mark = "ok" if rec.status == "ok" else rec.status.upper()
        what = "" if rec.mode == "infer" else f" {rec.mode}" + (f" (max batch {rec.max_batch})"
                                                               if rec.max_batch is not None else "")
        what += f" prompt {rec.prompt_len}" if rec.prompt_len else ""
        what += f" {rec.scenario}{' INVALID' if rec.valid is False else ''}" if rec.scenario else ""
        rnd = f" round {rec.rep_rounds[0] + 1}" if rec.repetitions == 1 and rec.rep_rounds else ""
        bar(f"{rec.model} {rec.runtime} {rec.precision} b{rec.batch}{what}{rnd}: {mark}", i, total)

    def decided(rec: Any) -> bool:
        """A cell's repetitions may stop early once its budget verdict is PASS or FAIL (--rel-ci)."""
        from archbench.bench.analyze.budgets import FAIL, PASS, judge_record

        return budget is not None and judge_record(rec, budget, ()).verdict in (PASS, FAIL)

    interrupted = 0
    _signals_interrupt()
    try:
        if spec.options.train.find_max_batch:
            from archbench.bench.modes.maxbatch import run_search

            run_search(spec, progress=progress)
        elif spec.options.serve.find_max_qps:
            from archbench.bench.modes.maxqps import run_search as search_qps

            search_qps(spec, progress=progress)
        else:
            engine.run(spec, progress=progress, decided=decided if budget else None)
    except KeyboardInterrupt as e:
        # Ctrl-C, or SIGTERM/SIGHUP (CI timeouts, container stops): dispatch has killed the running worker's
        # process group on the way out; every finished repetition and record is already on disk.
        interrupted = getattr(e, "signum", signal.SIGINT)
        print(f"\narchbench: interrupted by {signal.Signals(interrupted).name}; finished cells are kept "
              f"(re-run with --resume --out {spec.out})", file=sys.stderr)
    jsonl = spec.out / "records.jsonl"
    records = latest_per_cell(read_records(jsonl)) if jsonl.exists() else []
    if not records:
        print(f"archbench: no cell finished; nothing written to {jsonl}", file=sys.stderr)
        return 128 + interrupted if interrupted else 1
    print(f"archbench run: writing reports to {spec.out}", file=sys.stderr, flush=True)
    try:
        return _report(args, spec, records, budget, interrupted)
    except KeyboardInterrupt as e:  # a signal while reporting: the records are complete, the files atomic
        sig = getattr(e, "signum", signal.SIGINT)
        print(f"\narchbench: interrupted by {signal.Signals(sig).name} while writing reports; {jsonl} is complete "
              f"(`archbench report {spec.out}` writes them)", file=sys.stderr)
        return 128 + sig


def _report(args: argparse.Namespace, spec: Any, records: list[Any], budget: Any, interrupted: int) -> int:
    """Reports, summary, verdicts and the exit code of a run whose records are on disk."""
    from archbench.bench import modes
    from archbench.bench.analyze.roofline import PEAKS_FILE, load_peaks, save_peaks
    from archbench.bench.cli import budget_args, serveopts
    from archbench.bench.report.markdown import write_reports

    jsonl = spec.out / "records.jsonl"
    peaks = load_peaks(spec.out / PEAKS_FILE)
    new = modes.peaks(records, peaks)  # what a mode's report reads beside its records (generate: copy bandwidth)
    if new:
        peaks += new
        save_peaks(spec.out / PEAKS_FILE, peaks)
    plots = modes.plots(records, spec.out / "plots")
    paths = write_reports(spec.out, records, command="archbench " + " ".join(sys.argv[1:]), peaks=peaks,
                          plots=plots, sections=modes.report_sections(records, peaks))
    for line in modes.summaries(records, peaks):
        print(line)
    serveopts.warn(records)
    from archbench.bench.report.findings import baseline_lines, winner_lines

    for line in winner_lines(records) + baseline_lines(records):
        print(line)
    busy = [r.other_cpu_pct for r in records if r.other_cpu_pct is not None and r.other_cpu_pct > BUSY_PCT]
    if busy:
        print(f"archbench: warning: {len(busy)} of {len(records)} cells were timed while other processes took up to "
              f"{max(busy):.0f}% of the CPUs; their latencies are inflated: re-measure on an idle machine",
              file=sys.stderr)
    print(f"wrote {jsonl}, " + ", ".join(str(p) for p in paths), file=sys.stderr)
    budget_rc = budget_args.judge_and_report(spec.out, records, budget, args) if budget and records else 0
    if interrupted:
        return 128 + interrupted  # 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP
    if budget_rc:
        return budget_rc
    # A max-batch trial that ran out of memory is how the search works, not a failed cell.
    return 1 if any(r.status == "failed" and r.mode != "maxbatch-trial" for r in records) else 0


def _progress(total: int) -> Callable[[str, int, int], None]:
    """A one-line progress display on stderr (tqdm when stderr is a terminal, plain lines otherwise)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="rep", file=sys.stderr, dynamic_ncols=True)

        def update(msg: str, i: int, n: int) -> None:
            if n and n != bar.total:  # --rel-ci added repetitions
                bar.total = n
            bar.set_postfix_str(msg, refresh=False)
            bar.update(max(0, i - bar.n))
            if n and i >= n:
                bar.close()

        return update

    import time

    start = time.monotonic()

    def plain(msg: str, i: int, n: int) -> None:
        eta = ""
        if n and 0 < i < n:
            eta = f", ETA {(time.monotonic() - start) / i * (n - i):.0f} s"
        print(f"[{i}/{n or '?'}{eta}] {msg}", file=sys.stderr, flush=True)

    return plain


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: stop the workers, keep what finished, exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _signals_interrupt() -> None:
    """SIGTERM and SIGHUP raise Terminated in the main thread (SIGINT already raises KeyboardInterrupt)."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    # Ctrl-C stops a run even when it was started with SIGINT ignored (a shell's background job, nohup): a run
    # that cannot be stopped cleanly would leave its workers behind.
    signal.signal(signal.SIGINT, signal.default_int_handler)
