"""The pytest plugin (bench/pytest_plugin.py, bench/pytest_bench.py): assert_budget, `pytest --archbench`, the
archbench_bench fixture's pytest-benchmark JSON, and the fingerprint check on --benchmark-compare.

pytester runs pytest in this process; the budget-item run spawns one archbench.bench.measure.engine worker for the tiniest zoo model
(mlp_s) with a 0.05 s stop rule, so the whole file stays well under 20 s.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import textwrap

import pytest
from tests_helpers import make_record

import archbench.bench.analyze.orderstats  # noqa: F401
import archbench.bench.analyze.stats  # noqa: F401

# pytester runs pytest in this process and, after each test, drops the modules that test imported; a C extension
# (numpy, torch) imported for the first time inside a run would then fail to load again. Import what the inner runs
# use up front, so they stay.
import archbench.bench.measure.engine  # noqa: F401
import archbench.bench.measure.prepare  # noqa: F401
import archbench.bench.measure.profile  # noqa: F401
import archbench.bench.measure.quantize  # noqa: F401
import archbench.bench.measure.runtimes  # noqa: F401
import archbench.models  # noqa: F401
from archbench.bench.errors import UsageError
from archbench.bench.measure.harness import StopRule
from archbench.bench.plugin.fixture import BudgetFailed, BudgetInconclusive, assert_budget, rounds_for
from archbench.bench.plugin.pytest_plugin import load_suite, samples_to_bound

QUICK_INI = '[tool.pytest.ini_options]\narchbench_min_time = "0.05"\n'
# In-process runs import bench before the inner session could rewrite its asserts: harmless, say nothing.
QUIET = ("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")


def _record(n: int = 200, lo: float = 1.0, hi: float = 2.0, **kw):
    rng = random.Random(0)
    fields = {"size_mib": 10.0, "params": 123_456, "samples_ms": [rng.uniform(lo, hi) for _ in range(n)]}
    return make_record(**(fields | kw))


# ------------------------------------------------------------------------------------------- assert_budget


def test_plugin_registered_through_the_pytest11_entry_point(pytestconfig):
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert eps.get("archbench") == "archbench.bench.plugin.pytest_plugin"
    assert pytestconfig.pluginmanager.hasplugin("archbench")


def test_assert_budget_passes_and_returns_the_verdict():
    v = assert_budget(_record(), "p95_ms<=20, size_mib<=30")
    assert v.verdict == "PASS" and [t.verdict for t in v.terms] == ["PASS", "PASS"]


def test_assert_budget_failure_names_value_bound_and_verdict():
    with pytest.raises(BudgetFailed) as e:
        assert_budget(_record(), "p95_ms<=1.5, size_mib<=5, params<=1000000")
    msg = str(e.value)
    assert msg.splitlines()[0] == "budget 'p95_ms<=1.5, size_mib<=5, params<=1000000' on m torch fp32 b1: FAIL"
    p95, size, params = msg.splitlines()[1:]
    assert p95.split()[:4] == ["FAIL", "p95_ms", "<=", "1.5"] and "measured 1.9" in p95
    assert "95% bounds [" in p95 and "from n=200" in p95 and "even the lower bound misses <= 1.5" in p95
    assert size.split() == ["FAIL", "size_mib", "<=", "5", "measured", "10"]
    assert params.split() == ["PASS", "params", "<=", "1e+06", "measured", "123,456"]


def test_assert_budget_inconclusive_warns_or_fails_when_strict():
    rec = _record(n=20)  # no order statistic of 20 samples is a 95% upper bound on p95
    with pytest.warns(BudgetInconclusive, match="p95_ms <= 1.99.*too few"):
        assert assert_budget(rec, "p95_ms<=1.99").verdict == "INCONCLUSIVE"
    with pytest.raises(BudgetFailed, match="INCONCLUSIVE"):
        assert_budget(rec, "p95_ms<=1.99", strict=True)


def test_assert_budget_failed_cell_and_malformed_budget():
    with pytest.raises(BudgetFailed, match=r"ERROR\n  cell failed: worker killed"):
        assert_budget(_record(status="failed", error="worker killed"), "p95_ms<=20")
    with pytest.raises(UsageError, match="'p95_ms<=20ms'.*not a number"):
        assert_budget(_record(), "p95_ms<=20ms")


@pytest.mark.parametrize(("per_call_s", "rounds"), [
    (1e-5, 100_000),  # 1 s needs 100k calls: capped by max_iters
    (0.01, 100),  # min_time_s / per call
    (0.5, 30),  # min_iters wins
    (2.0, 15),  # max_time_s / per call cuts below min_iters, as archbench.bench.measure.harness.measure stops at max_time_s
])
def test_rounds_follow_the_harness_stop_rule(per_call_s, rounds):
    assert rounds_for(StopRule(min_iters=30, min_time_s=1.0, max_iters=100_000, max_time_s=30.0), per_call_s) == rounds


def test_percentile_budgets_ask_for_enough_samples(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.archbench]\nmodels = ["mlp_s"]\n[tool.archbench.budgets.a]\np95_ms = "<= 9"\n'
                         '[tool.archbench.budgets.b]\nsize_mib = "<= 9"\n')
    assert samples_to_bound(load_suite(pyproject).budgets) == 59  # 1 - 0.95^59 >= 0.95 > 1 - 0.95^58
    pyproject.write_text(pyproject.read_text() + 'p99_ms = "<= 9"\n')
    assert samples_to_bound(load_suite(pyproject).budgets) == 299


# ------------------------------------------------------------------------------------------- pytest --archbench

SUITE = QUICK_INI + textwrap.dedent("""
    [tool.archbench]
    models = ["mlp_s"]

    [tool.archbench.budgets.roomy]
    p95_ms = "<= 1000"
    size_mib = "<= 30"

    [tool.archbench.budgets.tight]
    p50_ms = "<= 0.0001"
    params = "<= 1000"
""")


def test_budget_items_pass_and_fail_with_value_bound_and_verdict(pytester):
    pytester.makepyprojecttoml(SUITE)
    res = pytester.runpytest("--archbench", "--archbench-out", "cells", *QUIET)
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    res.stdout.fnmatch_lines([
        "*archbench budget tight[[]mlp_s-torch-fp32-b1[]]*",
        "budget tight (p50_ms <= 0.0001, params <= 1000) on mlp_s torch fp32 b1: FAIL",
        "  FAIL * p50_ms <= 0.0001  measured *; 95% interval [[]*, *[]] ms over * repetitions: it misses <= 0.0001",
        "  FAIL * params <= 1000    measured 85,002",
        "FAILED pyproject.toml::tight[[]mlp_s-torch-fp32-b1[]]*",
    ])
    assert "Traceback" not in out
    # One cell, measured once by a archbench.bench.measure.engine worker, judged by both budgets.
    records = [json.loads(line) for line in (pytester.path / "cells" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["status"] == "ok" and records[0]["n_samples"] >= 59


BAD_SUITES = [
    ('models = ["mlp_s"]\n[tool.archbench.budgets.edge]\np95_ms = "<= 20ms"\n',
     ["*'p95_ms <= 20ms' in *pyproject.toml [[]tool.archbench.budgets.edge[]], key 'p95_ms': '20ms' is not a number*"]),
    ('models = ["mlp_s"]\n[tool.archbench.budgets.edge]\nsize_mib = "<= 30"\np95 = "<= 20"\n',
     ["*[[]tool.archbench.budgets.edge[]]: unknown budget metric 'p95'; did you mean p95_ms?"]),
    ('models = ["mlp_s"]\n[tool.archbench.budgets.edge]\np95_ms = "== 20"\n',
     ["*'p95_ms == 20' in *[[]tool.archbench.budgets.edge[]], key 'p95_ms': operator '=='; use one of <=, >=, <, >"]),
    ('runtimes = ["torch"]\n[tool.archbench.budgets.edge]\np95_ms = "<= 20"\n',
     ["*[[]tool.archbench[]] has no 'models' key*"]),
    ('models = ["mlp_s"]\nruntimes = ["onnxruntme"]\n[tool.archbench.budgets.edge]\np95_ms = "<= 20"\n',
     ["*unknown runtime 'onnxruntme' in runtimes; did you mean 'onnxruntime'?*"]),
    ('models = ["mlp_ss"]\n[tool.archbench.budgets.edge]\np95_ms = "<= 20"\n', ["*models: unknown model 'mlp_ss'*"]),
    ('models = ["mlp_s"]\n', ["*no [[]tool.archbench.budgets.NAME[]] table*"]),
    ('models = ["mlp_s"]\ninput_shape = "1,7"\n[tool.archbench.budgets.edge]\np95_ms = "<= 20"\n',
     ["*input_shape = '1,7'; expected positive integers, e.g. [[]1, 3, 160, 160[]]"]),
]


@pytest.mark.parametrize(("table", "lines"), BAD_SUITES, ids=["unit-in-number", "unknown-metric", "operator",
                                                               "no-models", "unknown-runtime", "unknown-model",
                                                               "no-budgets", "input-shape"])
def test_malformed_suite_is_a_collection_error_naming_it(pytester, table, lines):
    pytester.makepyprojecttoml(QUICK_INI + "[tool.archbench]\n" + table)
    res = pytester.runpytest("--archbench", *QUIET)
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines(["*ERROR collecting pyproject.toml*", *lines, "*1 error during collection*"])


def test_budgets_file_and_keyword_selection(pytester):
    pytester.makepyprojecttoml(QUICK_INI + '[tool.archbench]\nmodels = ["mlp_s", "resnet_s"]\nbatch = [1, 8]\n')
    pytester.makefile(".toml", budgets='[profiles.edge]\np95_ms = "<= 20"\n[profiles.server]\np99_ms = "<= 50"\n')
    res = pytester.runpytest("--archbench", "--archbench-budgets", "budgets.toml", "--co", "-q", "-k", "server and b8",
                             *QUIET)
    res.stdout.fnmatch_lines(["pyproject.toml::server[[]mlp_s-torch-fp32-b8[]]",
                              "pyproject.toml::server[[]resnet_s-torch-fp32-b8[]]", "2/8 tests collected*"])
    assert pytester.runpytest("--co", "-q").ret == pytest.ExitCode.NO_TESTS_COLLECTED  # no --archbench, no items


@pytest.mark.parametrize("where", ["no-args", "tests-dir", "pyproject-and-tests", "from-subfolder"])
def test_budget_items_are_collected_however_pytest_is_pointed(pytester, where):
    """`pytest --archbench tests` once collected only tests/ and passed without judging a budget (pytest visits the
    rootdir's pyproject.toml on the way down to tests/, then drops it)."""
    pytester.makepyprojecttoml(QUICK_INI + '[tool.archbench]\nmodels = ["mlp_s"]\nbatch = [1, 8]\n'
                               '[tool.archbench.budgets.edge]\np95_ms = "<= 20"\n')
    pytester.mkdir("tests").joinpath("test_plain.py").write_text("def test_ok():\n    pass\n")
    args = {"no-args": [], "tests-dir": ["tests"], "pyproject-and-tests": ["pyproject.toml", "tests"],
            "from-subfolder": []}[where]
    if where == "from-subfolder":
        pytester.chdir()
        import os

        os.chdir("tests")
    res = pytester.runpytest("--archbench", "--co", "-q", *args, *QUIET)
    res.stdout.fnmatch_lines_random(["*pyproject.toml::edge[[]mlp_s-torch-fp32-b1[]]",
                                     "*pyproject.toml::edge[[]mlp_s-torch-fp32-b8[]]", "*test_plain.py::test_ok"])
    res.stdout.fnmatch_lines(["3 tests collected*"])
    sel = pytester.runpytest("--archbench", "--co", "-q", "-k", "edge and b8", *args, *QUIET)
    sel.stdout.fnmatch_lines(["*pyproject.toml::edge[[]mlp_s-torch-fp32-b8[]]", "1/3 tests collected*"])


def test_malformed_suite_is_an_error_when_pointed_at_tests_too(pytester):
    pytester.makepyprojecttoml(QUICK_INI + '[tool.archbench]\nmodels = ["mlp_s"]\n[tool.archbench.budgets.edge]\n'
                               'p95 = "<= 20"\n')
    pytester.mkdir("tests").joinpath("test_plain.py").write_text("def test_ok():\n    pass\n")
    res = pytester.runpytest("--archbench", "tests", *QUIET)
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines(["*ERROR collecting pyproject.toml*", "*unknown budget metric 'p95'*"])


# ------------------------------------------------------------------------------------------- the fixture

FIXTURE_TESTS = """
import torch

from archbench.bench.plugin.pytest_plugin import assert_budget


def test_model(archbench_bench):
    rec = archbench_bench.model("mlp_s")
    assert_budget(rec, "size_mib<=30, params<=100000")


def test_callable(archbench_bench):
    sets = [torch.randn(64, 64, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    rec = archbench_bench(lambda x: x @ x, sets, name="matmul64", macs=64**3, extra={"note": "square"})
    assert rec.flops == 2 * 64**3
"""


def test_benchmark_json_carries_archbench_extra_info(pytester):
    pytester.makepyprojecttoml(QUICK_INI + 'archbench_threads = "1"\n')
    pytester.makepyfile(test_fixture=FIXTURE_TESTS)
    res = pytester.runpytest("--benchmark-json=bench.json", *QUIET)
    res.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "bench.json").read_text())
    assert data["machine_info"]["archbench"]["fingerprint"].count("|") == 5
    assert data["machine_info"]["archbench"]["threads"] == 1  # the ini's archbench_threads
    by_name = {b["name"]: b for b in data["benchmarks"]}
    model, fn = by_name["test_model"], by_name["test_callable"]
    info = model["extra_info"]["archbench"]
    assert (info["model"], info["runtime"], info["precision"], info["batch"], info["threads"]) == (
        "mlp_s", "torch", "fp32", 1, 1)
    assert info["params"] == 85002 and info["macs"] > 0 and info["flops"] == 2 * info["macs"] and info["size_mib"] > 0
    assert info["p50_ms"] <= info["p90_ms"] <= info["p95_ms"] <= info["p99_ms"]
    if os.path.exists("/proc/stat"):  # others' CPU share while timing (archbench.bench.measure.harness.other_cpu_pct)
        assert 0 <= info["other_cpu_pct"] <= 100
    # archbench's percentiles rest on pytest-benchmark's own rounds: one call per round.
    assert info["n_samples"] == model["stats"]["rounds"] and model["stats"]["iterations"] == 1
    assert info["p50_ms"] == pytest.approx(model["stats"]["median"] * 1e3)
    assert info["stop_rule"]["min_time_s"] == 0.05 and info["environment"]["torch_version"]
    assert info["fingerprint"] == data["machine_info"]["archbench"]["fingerprint"]
    assert model["group"] == "mlp_s"
    cinfo = fn["extra_info"]["archbench"]
    assert cinfo["model"] == "matmul64" and cinfo["macs"] == 64**3 and cinfo["note"] == "square"
    assert cinfo["runtime"] == "callable" and cinfo["threads"] == 1
    assert cinfo["achieved_gflops"] > 0


def test_benchmark_disable_runs_once_untimed(pytester):
    pytester.makepyprojecttoml(QUICK_INI)
    pytester.makepyfile(test_fixture=FIXTURE_TESTS.replace(
        'assert_budget(rec, "size_mib<=30, params<=100000")',
        'assert rec.n_samples is None and "disabled" in rec.warning'))
    pytester.runpytest("--benchmark-disable", *QUIET).assert_outcomes(passed=2)


@pytest.mark.filterwarnings("ignore:Benchmark machine_info is different")  # pytest-benchmark's own, on any change
def test_compare_refuses_a_baseline_from_another_machine(pytester):
    from pytest_benchmark.logger import PytestBenchmarkWarning
    from pytest_benchmark.utils import get_machine_id

    base = {"machine_info": {"archbench": {"fingerprint": "Other CPU|64||2.0|1.0|64", "cpu_model": "Other CPU"}},
            "commit_info": {}, "benchmarks": [], "datetime": "2026-01-01T00:00:00", "version": "5.3.1"}
    store = pytester.path / "store" / get_machine_id()
    store.mkdir(parents=True)
    (store / "0001_base.json").write_text(json.dumps(base))
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    args = ["--benchmark-storage=store", "--benchmark-compare=0001", *QUIET]
    # pytest-benchmark warns at configure time; in process, that reaches this test's warning capture.
    with pytest.warns(PytestBenchmarkWarning, match=r"archbench: the baseline was measured on another machine or "
                      r"stack \(cpu_model: 'Other CPU' -> "):
        pytester.runpytest(*args).assert_outcomes(passed=1)
    refused = pytester.runpytest(*args, "--archbench-same-machine")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "--archbench-same-machine" in refused.stderr.str()


@pytest.mark.filterwarnings("ignore:Benchmark machine_info is different", "ignore:archbench. the baseline")
def test_compare_with_a_storage_outside_the_working_directory(pytester, tmp_path_factory):
    """pytest-benchmark words its machine_info warning with the storage relative to the cwd, and raised (an
    INTERNALERROR) for this repository's baseline compared from another folder; the plugin words it instead."""
    from pytest_benchmark.logger import PytestBenchmarkWarning
    from pytest_benchmark.utils import get_machine_id

    base = {"machine_info": {"node": "laptop", "archbench": {"fingerprint": "Other CPU|64||2.0|1.0|64"}},
            "commit_info": {}, "benchmarks": [], "datetime": "2026-01-01T00:00:00", "version": "5.3.1"}
    store = tmp_path_factory.mktemp("elsewhere") / "store"
    (store / get_machine_id()).mkdir(parents=True)
    (store / get_machine_id() / "0001_base.json").write_text(json.dumps(base))
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    with pytest.warns(PytestBenchmarkWarning, match=f"machine_info is different from the baseline's in {store}"):
        res = pytester.runpytest(f"--benchmark-storage=file://{store}", "--benchmark-compare=0001", *QUIET)
    res.assert_outcomes(passed=1)
    assert "INTERNALERROR" not in res.stdout.str() + res.stderr.str()


def test_suite_input_shape_for_a_factory_that_states_none(pytester):
    pytester.makepyfile(mynets="import torch\n\ndef tiny():\n    return torch.nn.Linear(7, 3)\n")
    pytester.makepyprojecttoml(QUICK_INI + '[tool.archbench]\nmodels = ["mynets:tiny"]\ninput_shape = [2, 7]\n'
                               '[tool.archbench.budgets.edge]\nparams = "<= 100"\n')
    res = pytester.runpytest("--archbench", "--archbench-out", "cells", *QUIET)
    res.assert_outcomes(passed=1)
    rec = json.loads((pytester.path / "cells" / "records.jsonl").read_text().splitlines()[0])
    assert (rec["status"], rec["input_shape"], rec["params"]) == ("ok", "1x7", 24)  # batch 1 from the suite


def test_compare_fail_exits_1_without_a_traceback(pytester):
    """pytest-benchmark raises PerformanceRegression out of the terminal summary; pytest then printed its internals."""
    import glob

    pytester.makepyfile(test_b="def test_b(benchmark):\n    benchmark(lambda: sum(range(2000)))\n")
    pytester.runpytest("--benchmark-storage=store", "--benchmark-save=base", *QUIET).assert_outcomes(passed=1)
    saved = glob.glob(str(pytester.path / "store" / "*" / "0001_base.json"))[0]
    data = json.loads(open(saved).read())
    for b in data["benchmarks"]:  # a baseline 100x faster than this code: a regression by any threshold
        b["stats"] = {k: v / 100 if isinstance(v, float) else v for k, v in b["stats"].items()}
    open(saved, "w").write(json.dumps(data))
    res = pytester.runpytest("--benchmark-storage=store", "--benchmark-compare=0001",
                             "--benchmark-compare-fail=min:50%", *QUIET)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    out = res.stdout.str() + res.stderr.str()
    assert "Performance has regressed" in out and "archbench: --benchmark-compare-fail: performance has regressed" in out
    assert "Traceback" not in out and "INTERNALERROR" not in out


def test_archbench_without_a_pyproject_says_so(pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    res = pytester.runpytest("--archbench", *QUIET)
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines(["*pyproject.toml: no such file; --archbench reads [[]tool.archbench[]]*"])
