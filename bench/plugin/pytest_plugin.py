"""The archbench pytest plugin (registered as ``archbench`` through the ``pytest11`` entry point).

Two ways to put budgets under test:

- the ``archbench_bench`` fixture benchmarks a model or a callable through pytest-benchmark with archbench's
  harness rules (archbench.bench.plugin.fixture) and returns a Record; ``assert_budget(rec, "p95_ms<=20, size_mib<=30")``
  judges it like ``archbench check``;
- ``pytest --archbench`` collects one test per budget x (model, runtime, precision, batch) from the rootdir's
  pyproject.toml (read by archbench.bench.plugin.suite)::

      [tool.archbench]
      models = ["mlp_s", "resnet_s"]          # required: zoo names, pkg.module:factory or file.onnx
      runtimes = ["torch", "onnxruntime"]     # default ["torch"]
      precisions = ["fp32"]                   # default ["fp32"]
      batch = [1, 8]                          # default [1]
      device = "cpu"                          # default "cpu"
      threads = 0                             # intra-op threads; default 0: --archbench-threads, else all CPUs
      timeout_s = 300                         # per cell
      input_shape = [1, 3, 160, 160]          # for factories that state no example input (as --input-shape)
      dtype = "float32"                       # its dtype (as --dtype)

      [tool.archbench.budgets.edge]           # one table per profile; the schema of archbench.bench.analyze.budgets' profiles
      p95_ms = "<= 20"
      size_mib = "<= 30"

  (``--archbench-budgets FILE.toml`` takes the profiles from a budget file's ``[profiles.NAME]`` tables instead.)
  Each cell is measured once per session by archbench.bench.measure.engine, in its own worker process exactly like
  ``archbench run``, and every budget is judged against it: a miss fails with the measured value, the bound and
  the verdict; a malformed budget or suite table is a collection error naming the offending term and profile.

Options (``pytest --help``, group "archbench"): ``--archbench-min-time`` / ini ``archbench_min_time`` (seconds of
timed calls, default 1), ``--archbench-threads`` / ini ``archbench_threads``, ``--archbench-out DIR`` (keep the
cells' records.jsonl), ``--archbench-strict`` (INCONCLUSIVE fails), ``--archbench-same-machine``,
``--archbench-cluster ADDRESS`` / ``--archbench-target LABEL`` (the --archbench cells on a Ray cluster, as
``archbench run --cluster --target``: archbench.bench.measure.cluster.dispatcher).

When pytest-benchmark saves or compares, archbench adds its machine fingerprint (archbench.bench.env.fingerprint: CPU
model and count, GPU, torch and onnxruntime versions, threads) to ``machine_info["archbench"]`` and warns when a
baseline's differs (``--archbench-same-machine`` makes that an error).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from archbench.bench.analyze.budgets import Budget
from archbench.bench.errors import UsageError
from archbench.bench.measure.harness import StopRule
from archbench.bench.plugin.fixture import (
    DEFAULT_RULE,
    ArchbenchBench,
    BudgetFailed,
    BudgetInconclusive,
    assert_budget,
    check_budget,
    rule_with_min_time,
)
from archbench.bench.plugin.suite import Cell, Suite, load_suite, samples_to_bound
from archbench.bench.record import Record

__all__ = ["ArchbenchBench", "BudgetFailed", "BudgetInconclusive", "assert_budget", "load_suite", "samples_to_bound"]



def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("archbench", "archbench: deployment budgets as tests")
    g.addoption("--archbench", action="store_true", default=False,
                help="collect one test per budget x (model, runtime, precision, batch) from [tool.archbench] "
                     "in the rootdir's pyproject.toml")
    g.addoption("--archbench-budgets", metavar="FILE.toml", default=None,
                help="take the budgets from this budget file's [profiles.NAME] tables instead of "
                     "[tool.archbench.budgets.NAME]")
    g.addoption("--archbench-out", metavar="DIR", default=None,
                help="keep the --archbench cells' records.jsonl and logs here (default: a temporary folder)")
    g.addoption("--archbench-strict", action="store_true", default=False,
                help="budgets the samples cannot decide (INCONCLUSIVE) fail instead of warning")
    g.addoption("--archbench-min-time", metavar="SECONDS", type=float, default=None,
                help="seconds of timed calls per benchmark or cell (default 1.0; ini: archbench_min_time)")
    g.addoption("--archbench-threads", metavar="N", type=int, default=None,
                help="intra-op threads of the measured runtime: archbench_bench (default: all CPUs for models, "
                     "torch's setting for callables) and --archbench cells without [tool.archbench] threads "
                     "(default: all CPUs); ini: archbench_threads")
    g.addoption("--archbench-same-machine", action="store_true", default=False,
                help="with --benchmark-compare: refuse a baseline whose archbench fingerprint differs")
    g.addoption("--archbench-cluster", metavar="ADDRESS", default=None,
                help="measure the --archbench cells on a Ray cluster, one node per job: local, auto, HOST:6379 or "
                     "ray://HOST:10001 (as archbench run --cluster; needs pip install 'archbench[ray]')")
    g.addoption("--archbench-target", metavar="LABEL", default=None,
                help="with --archbench-cluster: only nodes with these Ray resources (NAME) or labels (KEY=VALUE)")
    parser.addini("archbench_min_time", "seconds of timed calls per archbench benchmark or cell", default="")
    parser.addini("archbench_threads", "intra-op threads of the runtime archbench_bench measures", default="")


def _min_time(config: pytest.Config) -> float | None:
    value = config.getoption("archbench_min_time")
    if value is None:
        text = str(config.getini("archbench_min_time") or "").strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise pytest.UsageError(f"ini archbench_min_time = {text!r}: expected seconds, e.g. 0.5") from None
    return value


def fixture_threads(config: pytest.Config) -> int | None:
    """--archbench-threads, else ini archbench_threads, else None (the fixture's defaults)."""
    value = config.getoption("archbench_threads")
    if value is None:
        text = str(config.getini("archbench_threads") or "").strip()
        if not text:
            return None
        if not text.isdigit():
            raise pytest.UsageError(f"ini archbench_threads = {text!r}: expected a positive integer")
        value = int(text)
    if value < 1:
        raise pytest.UsageError(f"--archbench-threads {value}: expected a positive integer")
    return value


def stop_rule(config: pytest.Config) -> StopRule:
    """The fixture's stop rule: archbench.bench.measure.harness's default, with --archbench-min-time / archbench_min_time."""
    try:
        return rule_with_min_time(DEFAULT_RULE, _min_time(config))
    except UsageError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture
def archbench_bench(benchmark: Any, request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> ArchbenchBench:
    """Benchmark a model (``.model("resnet_s", runtime=...)``) or a callable (``(fn, input_sets)``) through
    pytest-benchmark with archbench's warm-up, rotated random inputs and CUDA sync; see archbench.bench.plugin.fixture."""
    return ArchbenchBench(benchmark, stop_rule(request.config), tmp_path_factory.getbasetemp() / "archbench",
                          fixture_threads(request.config))


# ------------------------------------------------------------------------------------------ --archbench suite


def pyproject_path(config: pytest.Config) -> Path:
    """The rootdir's pyproject.toml (the ini file pytest chose, when that is a pyproject.toml)."""
    if config.inipath is not None and config.inipath.name == "pyproject.toml":
        return Path(config.inipath)
    return Path(config.rootpath) / "pyproject.toml"


def suite_rule(config: pytest.Config, suite: Suite) -> StopRule:
    """The fixture's rule, with at least twice the samples the suite's percentile budgets need for a bound."""
    rule = stop_rule(config)
    return replace(rule, min_iters=max(rule.min_iters, 2 * samples_to_bound(suite.budgets)))


def cluster_options(config: pytest.Config) -> dict[str, Any]:
    """RunSpec's ``cluster`` and ``target`` from --archbench-cluster / --archbench-target ({} without a cluster)."""
    cluster, target = config.getoption("archbench_cluster"), config.getoption("archbench_target")
    if cluster is None:
        if target:
            raise pytest.UsageError("--archbench-target picks cluster nodes: it needs --archbench-cluster")
        return {}
    from archbench.bench.measure.cluster.dispatcher import parse_target, require_ray

    try:
        require_ray()
        return {"cluster": cluster, "target": parse_target(target)}
    except UsageError as e:
        raise pytest.UsageError(str(e)) from None


class CellRunner:
    """Measures each cell once per session (archbench.bench.measure.engine: one worker process per model/runtime/precision, all
    the suite's batches in it) and keeps its record for every budget that judges it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[Cell, Record] = {}
        out = config.getoption("archbench_out")
        self.keep = out is not None
        self._out: Path | None = Path(out) if out else None

    def out(self) -> Path:
        if self._out is None:
            self._out = Path(tempfile.mkdtemp(prefix="archbench-pytest-"))
        return self._out

    def record(self, cell: Cell, suite: Suite) -> Record:
        if cell not in self.records:
            from archbench.bench.cell import Options
            from archbench.bench.measure.engine import RunSpec, run

            todo = [b for b in suite.batches if Cell(cell.model, cell.runtime, cell.precision, b) not in self.records]
            threads = suite.threads or fixture_threads(self.config) or 0  # 0: all CPUs, as archbench run
            spec = RunSpec(models=[cell.model], out=self.out(), runtimes=[cell.runtime], precisions=[cell.precision],
                           batches=todo, device=suite.device, threads=threads, rule=suite_rule(self.config, suite),
                           options=Options(input_shape=suite.input_shape, dtype=suite.dtype),
                           timeout_s=suite.timeout_s, resume=True, **cluster_options(self.config))
            for rec in run(spec):
                self.records[Cell(rec.model, rec.runtime, rec.precision, rec.batch)] = rec
        if cell not in self.records:
            raise RuntimeError(f"archbench.bench.measure.engine returned no record for {cell.id}")
        return self.records[cell]

    def close(self) -> None:
        if self._out is not None and not self.keep:
            shutil.rmtree(self._out, ignore_errors=True)


_RUNNER = pytest.StashKey[CellRunner]()
_REPORTED_ERROR = pytest.StashKey[bool]()  # collecting the budget file failed, and pytest reported it


class BudgetFile(pytest.File):
    """pyproject.toml as the collector of budget x cell items (budgets from it or from --archbench-budgets)."""

    def collect(self) -> Iterator[BudgetItem]:
        budgets_file = self.config.getoption("archbench_budgets")
        try:
            suite = load_suite(pyproject_path(self.config), Path(budgets_file) if budgets_file else None)
        except UsageError as e:
            self.config.stash[_REPORTED_ERROR] = True
            raise self.CollectError(f"archbench: {e}") from None
        for budget in suite.budgets:
            for cell in suite.cells():
                yield BudgetItem.from_parent(self, name=f"{budget.name}[{cell.id}]", budget=budget, cell=cell,
                                             suite=suite)


class BudgetItem(pytest.Item):
    """One budget judged against one cell; fails with the measured value, the bound and the verdict."""

    def __init__(self, *, budget: Budget, cell: Cell, suite: Suite, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget, self.cell, self.suite = budget, cell, suite

    def runtest(self) -> None:
        runner = self.config.stash[_RUNNER]
        rec = runner.record(self.cell, self.suite)
        v = check_budget(rec, self.budget, strict=self.config.getoption("archbench_strict"),
                         context=list(runner.records.values()))
        self.user_properties.append(("archbench_verdict", v.verdict))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, BudgetFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"archbench budget {self.name}"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> BudgetFile | None:
    # `pytest --archbench pyproject.toml` (or a folder holding it): only the budget items, through here.
    if parent.config.getoption("archbench") and file_path.resolve() == pyproject_path(parent.config).resolve():
        return BudgetFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect, so they select budget items too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # Walking down to the paths given (`pytest --archbench tests`), pytest visits the rootdir's pyproject.toml too and
    # then drops what it collected there: add the budget items unless some already came through.
    if not config.getoption("archbench") or config.stash.get(_REPORTED_ERROR, False):
        return
    if any(isinstance(i, BudgetItem) for i in items):
        return
    col = BudgetFile.from_parent(session, path=pyproject_path(config))
    # Collected like any file: a failed report is an "ERROR collecting pyproject.toml" and stops the session.
    rep = col.ihook.pytest_make_collect_report(collector=col)
    col.ihook.pytest_collectreport(report=rep)
    if rep.passed:
        items.extend(i for i in rep.result if isinstance(i, pytest.Item))


class _PytestBenchmarkFixes:
    """Two rough edges of pytest-benchmark (5.3, with pytest 9) that archbench's CI recipe runs into:

    - it words its "machine_info is different" warning with the storage path relative to the working directory and
      raises ValueError when the storage is not below it (this repository's baseline, compared from another folder):
      an INTERNALERROR. The warning is given with the absolute path instead;
    - ``--benchmark-compare-fail`` signals a regression by raising PerformanceRegression out of the terminal
      summary: after its own "Performance has regressed" lines, pytest printed ~60 lines of its internals. The
      exception is caught, the session's exit status set to 1 (tests failed), and one line says why.
    """

    def __init__(self) -> None:
        self.session: pytest.Session | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    @pytest.hookimpl(wrapper=True, optionalhook=True)
    def pytest_benchmark_compare_machine_info(self, config: pytest.Config, benchmarksession: Any,
                                              machine_info: dict[str, Any],
                                              compared_benchmark: dict[str, Any]) -> Iterator[Any]:
        try:
            return (yield)
        except ValueError:
            path = getattr(benchmarksession.storage, "path", None)
            if path is None or Path.cwd() in Path(path).resolve().parents:
                raise
            benchmarksession.logger.warning(f"Benchmark machine_info is different from the baseline's in {path}")
            return []

    @pytest.hookimpl(wrapper=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Iterator[None]:
        from pytest_benchmark.session import PerformanceRegression

        try:
            return (yield)
        except PerformanceRegression:
            terminalreporter.write_line("archbench: --benchmark-compare-fail: performance has regressed (above); "
                                        "exit status 1", red=True, bold=True)
            if self.session is not None:
                self.session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return None


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("benchmark"):
        config.pluginmanager.register(_PytestBenchmarkFixes(), "archbench-pytest-benchmark-fixes")
    out = config.getoption("archbench_out")
    if config.getoption("archbench") and out and (Path(out) / "records.jsonl").exists():
        raise pytest.UsageError(f"--archbench-out {out}: records.jsonl exists there; remove it or choose another "
                                "folder (cells are measured afresh each session)")
    if config.getoption("archbench"):
        cluster_options(config)  # no Ray, a bad --archbench-target: a usage error before collection
    config.stash[_RUNNER] = CellRunner(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    runner = config.stash.get(_RUNNER, None)
    if runner is not None:
        runner.close()


def pytest_report_header(config: pytest.Config) -> str | None:
    if not config.getoption("archbench"):
        return None
    rule = stop_rule(config)
    src = config.getoption("archbench_budgets") or pyproject_path(config).name
    return (f"archbench: budgets from {src}; cells measured by archbench.bench.measure.engine workers, >= {rule.min_time_s:g} s and "
            f">= {rule.min_iters} timed calls each (more for percentile budgets)")


# ---------------------------------------------------------------------------------- pytest-benchmark hooks


def machine_fingerprint(threads: int | None = None) -> dict[str, Any]:
    """archbench's idea of "the same machine" (archbench.bench.env.fingerprint) of this process, for pytest-benchmark's
    machine_info; ``threads``: what archbench_bench gives a runtime (--archbench-threads; default all CPUs)."""
    from archbench.bench.env import FINGERPRINT_FIELDS, environment, fingerprint_of

    values = {**environment(), "threads": threads or os.cpu_count() or 1}
    return {"fingerprint": fingerprint_of(values), **{k: values[k] for k in FINGERPRINT_FIELDS}}


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["archbench"] = machine_fingerprint(fixture_threads(config))


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before pytest-benchmark's own, which may raise (below)
def pytest_benchmark_compare_machine_info(config: pytest.Config, benchmarksession: Any,
                                          machine_info: dict[str, Any], compared_benchmark: dict[str, Any]) -> None:
    mine = machine_info.get("archbench") or machine_fingerprint(fixture_threads(config))
    theirs = (compared_benchmark.get("machine_info") or {}).get("archbench")
    if theirs is None:
        msg = ("archbench: the baseline has no archbench fingerprint (saved without the archbench plugin); "
               "cannot tell whether it was measured on this machine")
    elif theirs.get("fingerprint") == mine.get("fingerprint"):
        return
    else:
        diff = "; ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in mine
                         if k != "fingerprint" and theirs.get(k) != mine.get(k))
        msg = f"archbench: the baseline was measured on another machine or stack ({diff}); its timings do not compare"
    if config.getoption("archbench_same_machine"):
        raise pytest.UsageError(msg + " (--archbench-same-machine)")
    benchmarksession.logger.warning(msg)
