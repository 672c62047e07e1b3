"""Budgets: expressions and TOML profiles (valid and malformed), order-statistic bounds, verdicts, exit codes."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import ROOT, make_record

from archbench.bench.analyze import orderstats
from archbench.bench.analyze.budgets import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    exit_code,
    judge,
    judge_record,
    load_file,
    parse_budget,
    parse_expression,
)
from archbench.bench.errors import UsageError
from archbench.bench.record import Record


def archbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archbench.bench.cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------------ expressions


@pytest.mark.parametrize(
    "text, expected",  # expected: (metric, op, limit, quantile) per term
    [
        ("p95_ms<=20", [("p95_ms", "<=", 20.0, 0.95)]),
        ("p95_ms <= 20, size_mib<30", [("p95_ms", "<=", 20.0, 0.95), ("size_mib", "<", 30.0, None)]),
        ("latency_p95_ms<=20", [("p95_ms", "<=", 20.0, 0.95)]),  # the Record field works as an alias
        ("P99_MS <= 5", [("p99_ms", "<=", 5.0, 0.99)]),  # case does not matter
        ("p99.9_ms<=5", [("p99.9_ms", "<=", 5.0, 0.999)]),  # any percentile, from the samples
        ("p75_ms < 3.5", [("p75_ms", "<", 3.5, 0.75)]),
        ("peak_mem_mib<=100", [("peak_rss_mib", "<=", 100.0, None)]),
        ("top1_agree>=0.99; sqnr_db > 30", [("top1_agree", ">=", 0.99, None), ("sqnr_db", ">", 30.0, None)]),
        ("throughput_sps>=1e3\nparams<=5e6", [("throughput_sps", ">=", 1000.0, None), ("params", "<=", 5e6, None)]),
        ("p50_ms>=0.01, p50_ms<=10", [("p50_ms", ">=", 0.01, 0.5), ("p50_ms", "<=", 10.0, 0.5)]),
        ("accuracy_drop<=1", [("task_metric_drop", "<=", 1.0, None)]),
        ("max_abs_err <= -0", [("max_abs_err", "<=", 0.0, None)]),
    ],
)
def test_valid_expressions(text: str, expected: list[tuple]) -> None:
    b = parse_expression(text)
    got = [(t.metric.name, t.op, t.limit, t.metric.quantile) for t in b.terms]
    assert got == expected


@pytest.mark.parametrize(
    "text, message",  # every message names the offending term (or says the budget is empty)
    [
        ("p95_ms=<20", "bad budget term 'p95_ms=<20'"),
        ("p95_ms<<20", "bad budget term 'p95_ms<<20'"),
        ("p95_ms<=20ms", "'20ms' is not a number"),
        ("size_mib 30", "bad budget term 'size_mib 30'"),
        ("size_mib == 3", "operator '=='"),
        ("size_mib = 3", "operator '='"),
        ("p95<=20", "unknown budget metric 'p95'"),
        ("p95ms<=20", "did you mean p95_ms"),
        ("p100_ms<=3", "unknown budget metric 'p100_ms'"),
        ("latency<=3", "unknown budget metric 'latency'"),
        ("p95_ms<=20,,size_mib<=3", "term 2 is empty"),
        ("p95_ms<=20,", "term 2 is empty"),
        ("p95_ms<=nan", "the limit is nan; expected a finite number"),
        ("p95_ms<=inf", "the limit is inf; expected a finite number"),
        ("<=20", "bad budget term '<=20'"),
        ("", "empty budget"),
        ("  ,  ", "empty budget"),
    ],
)
def test_malformed_expressions_name_the_term(text: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_expression(text)
    assert message in str(e.value)


# ------------------------------------------------------------------------------------------------ TOML files

ONE = """
[profiles.edge]
description = "edge box"
p95_ms = "<= 20"
size_mib = "<=30"
"""
MANY = """
[profiles.phone]
p95_ms = "<= 20"
top1_agree = ">= 0.99"

[profiles.ci]
confidence = 0.99
p50_ms = [">= 0.1", "<= 10"]
"""


@pytest.mark.parametrize(
    "content, arg, profile, expected",
    [
        (ONE, "{f}", None, ("edge", ["p95_ms <= 20", "size_mib <= 30"], 0.95)),  # one profile: no name needed
        (ONE, "{f}:edge", None, ("edge", ["p95_ms <= 20", "size_mib <= 30"], 0.95)),
        (MANY, "{f}:phone", None, ("phone", ["p95_ms <= 20", "top1_agree >= 0.99"], 0.95)),
        (MANY, "{f}", "ci", ("ci", ["p50_ms >= 0.1", "p50_ms <= 10"], 0.99)),  # --profile; a list is a range
    ],
)
def test_valid_budget_files(tmp_path: Path, content: str, arg: str, profile: str | None, expected: tuple) -> None:
    f = tmp_path / "b.toml"
    f.write_text(content)
    b = parse_budget(arg.format(f=f), profile)
    assert (b.name, [str(t) for t in b.terms], b.confidence) == expected


@pytest.mark.parametrize(
    "content, arg, profile, message",
    [
        (MANY, "{f}", None, "has 2 profiles (phone, ci); name one"),
        (MANY, "{f}:tablet", None, "has no profile 'tablet'; it has: phone, ci"),
        (MANY, "{f}:phone", "ci", "--budget names profile 'phone' but --profile says 'ci'"),
        ("[profiles.x]\np95_ms = 20\n", "{f}", None, "p95_ms = 20; write the comparison as a string"),
        ("[profiles.x]\np95_ms = \"=< 20\"\n", "{f}", None, "bad budget term 'p95_ms =< 20' in"),
        ("[profiles.x]\np95_ms = \"=< 20\"\n", "{f}", None, "key 'p95_ms'"),
        ("[profiles.x]\nlatncy = \"<= 20\"\n", "{f}", None, "unknown budget metric 'latncy'"),
        ("[profiles.x]\np95_ms2 = 3\n", "{f}", None, "[profiles.x]: unknown budget metric 'p95_ms2'"),  # not "quote it"
        ("[profiles.x]\nconfidence = 1.5\np95_ms = \"<= 2\"\n", "{f}", None, "confidence = 1.5"),
        ("[profiles.x]\ndescription = \"nothing\"\n", "{f}", None, "[profiles.x]: no budget terms"),
        ("p95_ms = \"<= 20\"\n", "{f}", None, "unknown top-level key 'p95_ms'"),
        ("[other]\n", "{f}", None, "unknown top-level key 'other'"),
        ("", "{f}", None, "has no [profiles.NAME] table"),
        ("[profiles.x\n", "{f}", None, "is not valid TOML"),
        (None, "{f}", None, "no such budget file"),
        (ONE, "p95_ms<=2", "edge", "--profile names a profile of a budget file"),
    ],
)
def test_malformed_budget_files(tmp_path: Path, content: str | None, arg: str, profile: str | None,
                                message: str) -> None:
    f = tmp_path / "b.toml"
    if content is not None:
        f.write_text(content)
    with pytest.raises(UsageError) as e:
        parse_budget(arg.format(f=f), profile)
    assert message in str(e.value)


@pytest.mark.parametrize("path", sorted((ROOT / "budgets").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_budget_files_parse(path: Path) -> None:
    import tomllib

    for name in tomllib.loads(path.read_text())["profiles"]:
        assert load_file(path, name).terms


def test_confidence_override_and_range() -> None:
    assert parse_budget("p95_ms<=2", confidence=0.99).confidence == 0.99
    with pytest.raises(UsageError, match="--confidence 1.2"):
        parse_budget("p95_ms<=2", confidence=1.2)


# ------------------------------------------------------------------------------------------ order statistics


@pytest.mark.parametrize("n", [1, 7, 20, 58, 59, 150, 299, 400])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.95, 0.99])
def test_binomial_cdf_and_ranks_match_exact_sums(n: int, p: float) -> None:
    exact = list(itertools.accumulate(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)))

    def cdf(k: int) -> float:
        return exact[k]

    for k in range(n + 1):
        assert orderstats.binom_cdf(k, n, p) == pytest.approx(cdf(k), abs=1e-12), k
    up = next((k for k in range(1, n + 1) if cdf(k - 1) >= 0.95 + 1e-12), None)
    lo = max((k for k in range(1, n + 1) if 1 - cdf(k - 1) >= 0.95 + 1e-12), default=None)
    assert orderstats.upper_rank(n, p, 0.95) == up
    assert orderstats.lower_rank(n, p, 0.95) == lo


@pytest.mark.parametrize("p, n_min", [(0.95, 59), (0.99, 299), (0.5, 5)])
def test_fewest_samples_for_an_upper_bound(p: float, n_min: int) -> None:
    """1 - p^n >= 0.95 first at n = 59 for p95 and 299 for p99: below that no upper bound exists."""
    assert orderstats.upper_rank(n_min - 1, p, 0.95) is None
    assert orderstats.upper_rank(n_min, p, 0.95) == n_min


def test_bounds_cover_the_true_quantile() -> None:
    """Monte Carlo: the 95% one-sided bounds on p95 of an exponential hold at least ~95% of the time."""
    rng = np.random.default_rng(0)
    n, p, reps = 200, 0.95, 4000
    true_q = -math.log(1 - p)  # exponential(1)
    x = np.sort(rng.exponential(size=(reps, n)), axis=1)
    ku, kl = orderstats.upper_rank(n, p, 0.95), orderstats.lower_rank(n, p, 0.95)
    assert ku is not None and kl is not None
    assert (x[:, ku - 1] >= true_q).mean() >= 0.94
    assert (x[:, kl - 1] <= true_q).mean() >= 0.94


def _rec(samples: list[float] | np.ndarray, **kw) -> Record:
    r = {"runtime": "onnxruntime", "threads": 2, "knobs": "{}", "samples_ms": [float(s) for s in samples]}
    return make_record(**(r | kw))


LINEAR = np.linspace(1.0, 2.0, 200)  # p95 ~ 1.95


@pytest.mark.parametrize(
    "samples, budget, verdict",
    [
        (LINEAR, "p95_ms<=5", PASS),  # clearly under
        (LINEAR + 10, "p95_ms<=5", FAIL),  # clearly over
        (LINEAR, "p95_ms<=1.95", INCONCLUSIVE),  # straddling: the budget sits on the estimate
        (LINEAR, "p50_ms>=1", PASS),  # the mirrored direction
        (LINEAR, "p50_ms>1.6", FAIL),
        (LINEAR[:30], "p95_ms<=100", INCONCLUSIVE),  # 30 samples: no 95% upper bound on p95 exists
        (LINEAR[:30] + 10, "p95_ms<=5", FAIL),  # ... but a lower bound does
    ],
)
def test_percentile_verdicts_on_synthetic_samples(samples, budget: str, verdict: str) -> None:
    v = judge_record(_rec(samples), parse_expression(budget))
    assert v.verdict == verdict, v.terms[0].reason


def test_inconclusive_says_how_many_samples_would_decide() -> None:
    # 30 tiny samples: p95 <= 100 cannot pass until an upper bound exists, at n = 59.
    tv = judge_record(_rec(LINEAR[:30]), parse_expression("p95_ms<=100")).terms[0]
    assert tv.verdict == INCONCLUSIVE and tv.samples_needed == 59
    assert "too few" in tv.reason and "~29 more samples (n~59) would likely decide PASS" in tv.reason
    # 97% of samples under the limit, p95 asked: more samples separate the bound from the budget.
    x = np.r_[np.full(194, 1.0), np.full(6, 10.0)]
    tv = judge_record(_rec(x), parse_expression("p95_ms<=5")).terms[0]
    assert tv.verdict == INCONCLUSIVE and tv.samples_needed is not None and tv.samples_needed > 200
    assert orderstats.decides(tv.samples_needed, 0.95, 0.95, 194 / 200, True) == PASS


def test_inconclusive_when_no_sample_count_can_decide() -> None:
    x = np.r_[np.full(95, 1.0), np.full(5, 10.0)]  # exactly 95% under 5 ms: the budget is the quantile
    tv = judge_record(_rec(x), parse_expression("p95_ms<=5")).terms[0]
    assert tv.verdict == INCONCLUSIVE and tv.samples_needed is None
    assert "no sample count would decide" in tv.reason


# ---------------------------------------------------------------------------------------------- scalar terms


@pytest.mark.parametrize(
    "rec, budget, verdict, reason",
    [
        ({"size_mib": 4.0}, "size_mib<=5", PASS, ""),
        ({"size_mib": 6.0}, "size_mib<=5", FAIL, ""),
        ({"size_mib": 5.0}, "size_mib<5", FAIL, ""),
        ({"throughput_sps": 900.0}, "throughput_sps>=1000", FAIL, "point estimate"),
        ({}, "sqnr_db>=30", INCONCLUSIVE, "the record has no sqnr_db"),
        ({"cosine": 0.9}, "top1_agree>=0.9", INCONCLUSIVE, "not (B, C) or (B, N, V) logits"),
        ({"cosine": float("nan")}, "cosine>=0.9", FAIL, "NaN"),
        ({"runtime": "torch"}, "top1_agree>=0.99, sqnr_db>=30", PASS, "fidelity reference"),  # fp32 torch
        ({"samples_ms": []}, "p95_ms<=1", INCONCLUSIVE, "no raw samples_ms"),
        ({"task_metric": 80.0}, "task_metric>=75", PASS, ""),
        ({}, "task_metric_drop<=1", INCONCLUSIVE, "--metric-hook"),
    ],
)
def test_scalar_verdicts(rec: dict, budget: str, verdict: str, reason: str) -> None:
    v = judge_record(_rec(LINEAR, **rec), parse_expression(budget))
    assert v.verdict == verdict
    assert reason in " ".join(t.reason for t in v.terms)


def test_task_metric_drop_is_relative_to_the_fp32_cell() -> None:
    fp32 = _rec(LINEAR, runtime="torch", task_metric=91.0)
    near = _rec(LINEAR, precision="int8-static", task_metric=90.5)
    far = _rec(LINEAR, precision="int8-dynamic", task_metric=88.0)
    other = _rec(LINEAR, model="other", precision="int8-static", task_metric=50.0)  # no fp32 sibling
    vs = judge([fp32, near, far, other], parse_expression("task_metric_drop<=1"))
    assert [v.verdict for v in vs] == [PASS, PASS, FAIL, INCONCLUSIVE]
    assert vs[2].terms[0].value == pytest.approx(3.0)


def test_failed_and_skipped_records_and_exit_codes() -> None:
    b = parse_expression("size_mib<=5")
    failed = judge_record(_rec([], status="failed", error="boom"), b)
    skipped = judge_record(_rec([], status="skipped", error="no CUDA"), b)
    assert (failed.verdict, skipped.verdict) == (ERROR, SKIPPED)
    assert "boom" in failed.reason
    ok, bad = judge_record(_rec(LINEAR, size_mib=1.0), b), judge_record(_rec(LINEAR, size_mib=9.0), b)
    unsure = judge_record(_rec(LINEAR[:10]), parse_expression("p95_ms<=9"))
    assert unsure.verdict == INCONCLUSIVE
    assert exit_code([ok, skipped]) == 0
    assert exit_code([ok, unsure]) == 0 and exit_code([ok, unsure], strict=True) == 1
    assert exit_code([ok, bad]) == 1 and exit_code([ok, failed]) == 1


# ------------------------------------------------------------------------------------------------------ CLI


def _write_records(path: Path, recs: list[Record]) -> Path:
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in recs))
    return path


def test_check_cli_verdicts_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from archbench.bench.cli.main import main

    f = _write_records(tmp_path / "records.jsonl", [
        _rec(LINEAR, model="small", size_mib=1.0, latency_p95_ms=1.95),
        _rec(LINEAR + 10, model="slow", size_mib=1.0),
        _rec(LINEAR[:20], model="short", size_mib=1.0),
    ])
    assert main(["check", str(f), "--budget", "p95_ms<=5, size_mib<=2"]) == 1
    out = capsys.readouterr().out
    assert "summary: 1 PASS, 1 FAIL, 1 INCONCLUSIVE" in out
    assert "slow onnxruntime fp32 b1: p95_ms FAIL" in out
    assert main(["check", str(tmp_path), "--budget", "size_mib<=2"]) == 0  # a run folder works too
    assert main(["check", str(f), "--budget", "p95_ms<=100, size_mib<=2", "--strict"]) == 1  # "short" is ?


def test_check_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from archbench.bench.cli.main import main

    f = _write_records(tmp_path / "records.jsonl", [_rec(LINEAR, size_mib=3.0)])
    assert main(["check", str(f), "--budget", "p95_ms<=5, size_mib<=2", "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data[0]["verdict"] == FAIL
    assert [t["verdict"] for t in data[0]["terms"]] == [PASS, FAIL]
    assert data[0]["terms"][0]["upper"] <= 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["check", "{f}", "--budget", "p95_ms=<20"], "bad budget term 'p95_ms=<20'"),
        (["check", "{f}", "--budget", "p95ms<=20, size_mib<=2"], "unknown budget metric 'p95ms'"),
        (["check", "{f}", "--budget", "budgets/nope.toml"], "no such budget file"),
        (["check", "{f}"], "check needs --budget"),
        (["check", "{d}/missing.jsonl", "--budget", "size_mib<=1"], "no such records file"),
        (["pick", "{f}", "--objective", "speed"], "unknown budget metric 'speed'"),
        (["run", "mlp_s", "--budget", "size_mib<<1"], "bad budget term 'size_mib<<1'"),
        (["run", "mlp_s", "--precision", "fp32,int4"], "unknown precision 'int4'"),
        (["run", "mlp_s", "--metric-hook", "nosuchmodule:fn"], "cannot import 'nosuchmodule'"),
        (["sweep", "mlp_s", "--width", "0.5,x", "--budget", "size_mib<=1"], "bad --width '0.5,x'"),
        (["sweep", "mlp_s", "--resolution", "64", "--budget", "size_mib<=1"], "has no knob resolution"),
    ],
)
def test_cli_bad_budget_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                       message: str) -> None:
    """In-process (fast); the subprocess test below checks the real entry point once."""
    from archbench.bench.cli.main import main

    f = _write_records(tmp_path / "records.jsonl", [_rec(LINEAR, size_mib=1.0)])
    assert main([a.format(f=f, d=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("archbench: error: ") and message in err[0], err


def test_malformed_budget_exits_2_from_the_console_entry_point(tmp_path: Path) -> None:
    p = archbench("run", "mlp_s", "--precision", "fp32,int8-static", "--budget", "p95_ms<=20, size_mib=<30",
                  "--out", str(tmp_path / "never"))
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines == ["archbench: error: bad budget term 'size_mib=<30' in budget 'p95_ms<=20, size_mib=<30': "
                     "operator '=<'; use one of <=, >=, <, >"]
    assert not (tmp_path / "never").exists()  # nothing ran


def test_training_budgets() -> None:
    """The issue's training budget: step time from the samples, memory and time-to-train as recorded."""
    rng = np.random.default_rng(3)
    train = _rec(rng.normal(200.0, 5.0, 200), mode="train", train_peak_mem_mib=3000.0, time_to_train_s=7200.0,
                 max_batch=64)
    b = parse_expression("step_ms<=250, train_peak_mem_mib<=4096, time_to_train_h<=6, max_batch>=32")
    v = judge_record(train, b)
    assert v.verdict == PASS, [(t.term, t.verdict, t.reason) for t in v.terms]
    v = judge_record(train, parse_expression("time_to_train_h<=1.5"))
    assert v.verdict == FAIL and v.terms[0].value == pytest.approx(2.0)
    v = judge_record(train, parse_expression("step_ms<=150"))
    assert v.verdict == FAIL


def test_max_batch_trials_are_not_judged() -> None:
    trial = _rec([1.0], status="failed", error="out of memory: RSS ...", mode="maxbatch-trial")
    kept = _rec([1.0] * 50, mode="train")
    verdicts = judge([trial, kept], parse_expression("p50_ms<=2"))
    assert [v.record.mode for v in verdicts] == ["train"] and verdicts[0].verdict == PASS
