"""``archbench compare``: Mann-Whitney U and bootstrap CIs on known samples, the gate (threshold AND
significance), environment and schema mismatches, the CLI. Inputs: the SYNTHETIC fixtures of tests/fixtures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import FIX, make_record

from archbench.bench.analyze.compare import Threshold, compare, compare_pair, pair_cells, parse_fail_on
from archbench.bench.analyze.merge import load_records
from archbench.bench.analyze.significance import bootstrap_ratio_cis, mann_whitney_u
from archbench.bench.cli.main import main
from archbench.bench.errors import UsageError
from archbench.bench.report.compare import verdict

BASE, NEW = FIX / "synthetic_base.jsonl", FIX / "synthetic_new.jsonl"
OTHER_ENV, OLD_SCHEMA = FIX / "synthetic_new_other_env.jsonl", FIX / "synthetic_old_schema.jsonl"
GATE = "p95_ms:+10%,throughput_sps:-5%,peak_rss_mib:+20%"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("base, new, u, z, p", [
    # complete separation, n = 3 + 3: U = 9, z = (4.5 - 0.5) / sqrt(5.25); the textbook asymptotic p-value
    ([1, 2, 3], [4, 5, 6], 9.0, 1.7457431, 0.0808556),
    ([4, 5, 6], [1, 2, 3], 0.0, -1.7457431, 0.0808556),
    # ties: ranks 1, 3, 3, 3, 6, 6, 6, 8; tie term (24 + 24) / 56 in the variance
    ([1, 2, 2, 3], [2, 3, 3, 4], 13.0, 1.3656982, 0.1720337),
])
def test_mann_whitney_known_values(base: list[float], new: list[float], u: float, z: float, p: float) -> None:
    r = mann_whitney_u(base, new)
    assert (r.u, r.z, r.p_value) == (pytest.approx(u), pytest.approx(z, rel=1e-6), pytest.approx(p, rel=1e-5))


def test_mann_whitney_constant_samples_are_not_significant() -> None:
    r = mann_whitney_u([2.0] * 30, [2.0] * 30)
    assert r.p_value == 1.0 and r.z == 0.0 and r.prob_new_greater == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_mann_whitney_clearly_shifted_is_significant(seed: int) -> None:
    a = 5.0 * np.exp(_rng(seed).normal(0, 0.05, 200))
    b = 5.5 * np.exp(_rng(seed + 100).normal(0, 0.05, 200))  # +10%, two standard deviations
    r = mann_whitney_u(a, b)
    # P(new > base) = Phi(ln 1.1 / (0.05 sqrt 2)) = 0.91 in theory
    assert r.p_value < 1e-10 and r.z > 0 and r.prob_new_greater > 0.85


@pytest.mark.parametrize("seed", range(5))
def test_mann_whitney_identical_distributions_are_not(seed: int) -> None:
    a = 5.0 * np.exp(_rng(seed).normal(0, 0.05, 200))
    b = 5.0 * np.exp(_rng(seed + 100).normal(0, 0.05, 200))
    assert mann_whitney_u(a, b).p_value > 0.05


def test_mann_whitney_u_statistics_add_up() -> None:
    a, b = _rng(1).normal(0, 1, 37), _rng(2).normal(0.3, 1, 23)
    assert mann_whitney_u(a, b).u + mann_whitney_u(b, a).u == pytest.approx(37 * 23)


def test_bootstrap_ci_covers_the_shift_and_excludes_one() -> None:
    a = 5.0 * np.exp(_rng(3).normal(0, 0.05, 300))
    b = 6.0 * np.exp(_rng(4).normal(0, 0.05, 300))
    cis = bootstrap_ratio_cis(a, b, n_boot=500)
    assert cis["p50"].lo < 1.2 < cis["p50"].hi and cis["p50"].excludes_one
    assert cis["mean"].ratio == pytest.approx(b.mean() / a.mean())
    same = bootstrap_ratio_cis(a, 5.0 * np.exp(_rng(5).normal(0, 0.05, 300)), n_boot=500)
    assert not same["p50"].excludes_one
    # deterministic for a seed
    assert bootstrap_ratio_cis(a, b, n_boot=200, seed=7) == bootstrap_ratio_cis(a, b, n_boot=200, seed=7)


# ----------------------------------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("text, expected", [
    ("p95_ms:+10%", [Threshold("p95_ms", 0.10)]),
    ("p95_ms:+10%,throughput_sps:-5%", [Threshold("p95_ms", 0.10), Threshold("throughput_sps", -0.05)]),
    ("latency_p50_ms:2.5%", [Threshold("p50_ms", 0.025)]),  # Record field name; no sign: the worse direction
    ("sps:5%", [Threshold("throughput_sps", -0.05)]),
    (" memory : +20% ,", [Threshold("peak_rss_mib", 0.20)]),
    # any gateable metric of the registry (archbench.bench.analyze.metrics), by name or alias
    ("size_mib:+5%,top1_agree:1%", [Threshold("size_mib", 0.05), Threshold("top1_agree", -0.01)]),
    ("cuda_max_allocated_mib:+5%", [Threshold("cuda_mem_mib", 0.05)]),
    ("", []),
])
def test_parse_fail_on(text: str, expected: list[Threshold]) -> None:
    assert parse_fail_on(text) == expected


@pytest.mark.parametrize("text, message", [
    ("p95_ms>10%", "bad --fail-on item 'p95_ms>10%'"),
    ("p95_ms:+10", "expected METRIC:\\+N%"),
    ("p42_ms:+10%", "unknown --fail-on metric 'p42_ms'; known: p50_ms, p90_ms"),
    ("min_ms:+10%", "unknown --fail-on metric 'min_ms'"),  # timed, but no test of significance for a minimum
    ("task_metric_drop:+1%", "unknown --fail-on metric 'task_metric_drop'"),  # needs the fp32 sibling
])
def test_parse_fail_on_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_fail_on(text)


# ----------------------------------------------------------------------------------------------------- the gate


@pytest.fixture(scope="module")
def result():
    return compare(load_records([BASE]), load_records([NEW]), parse_fail_on(GATE), n_boot=400)


def _cell(result, model: str, runtime: str = "torch"):
    return next(c for c in result.cells if c.model == model and c.runtime == runtime)


def test_regression_beyond_threshold_and_significant_fails(result) -> None:
    c = _cell(result, "syn_convnet_wide")
    assert c.changes["p95_ms"].change == pytest.approx(0.30, abs=0.03) and c.changes["p95_ms"].significant
    assert c.changes["throughput_sps"].change < -0.2 and c.changes["throughput_sps"].significant
    assert c.failed and any(f.startswith("p95_ms +") for f in c.failures)
    assert result.exit_code == 1


def test_noise_is_not_a_regression(result) -> None:
    c = _cell(result, "syn_mlp")
    assert all(ch.significant is False for m, ch in c.changes.items() if m != "peak_rss_mib")
    assert not c.failed


def test_significant_but_small_change_passes_the_gate(result) -> None:
    c = _cell(result, "syn_convnet_depthwise")
    assert c.changes["p50_ms"].significant and 0.0 < c.changes["p50_ms"].change < 0.10
    assert not c.failed


def test_change_beyond_threshold_but_not_significant_is_not_gated() -> None:
    # the same 19 fast calls, one slow outlier that grew: p95 1.05 -> 1.2 ms (+14%), which Mann-Whitney rightly
    # calls noise (19 of 20 calls unchanged)
    base = make_record(samples_ms=[1.0] * 19 + [2.0], latency_p95_ms=1.05)
    new = replace(base, samples_ms=[1.0] * 19 + [5.0], latency_p95_ms=1.2)
    c = compare_pair(base, new, parse_fail_on("p95_ms:+10%"), n_boot=300)
    assert c.changes["p95_ms"].change == pytest.approx(1.2 / 1.05 - 1)
    assert c.changes["p95_ms"].significant is False and c.mwu.p_value > 0.5
    assert not c.failed


def test_unstable_cells_are_marked() -> None:
    base = make_record(samples_ms=[1.0, 1.1, 0.9, 1.0], latency_cv=0.05)
    assert "[unstable" not in verdict(compare_pair(base, base, n_boot=100))
    assert "[unstable: CV > 10%]" in verdict(compare_pair(base, replace(base, latency_cv=0.4), n_boot=100))


def test_cells_timed_on_a_busy_machine_are_marked() -> None:
    base = make_record(samples_ms=[1.0, 1.1, 0.9, 1.0], other_cpu_pct=2.0)
    assert "[busy" not in verdict(compare_pair(base, base, n_boot=100))
    assert "[busy machine: 48% other CPU]" in verdict(compare_pair(base, replace(base, other_cpu_pct=48.0),
                                                                   n_boot=100))
    assert "[busy machine: 30% other CPU]" in verdict(compare_pair(replace(base, other_cpu_pct=30.0), base,
                                                                   n_boot=100))


def test_single_valued_metric_is_gated_on_threshold_alone(result) -> None:
    c = _cell(result, "syn_tiny_lm")
    rss = c.changes["peak_rss_mib"]
    assert rss.change == pytest.approx(0.25) and rss.significant is None
    assert c.failures == ["peak_rss_mib +25.0% beyond +20% (single value, untested)"]


def test_failed_in_new_and_cells_on_one_side(result) -> None:
    assert _cell(result, "syn_tiny_lm", "onnxruntime").status == "failed in new"
    assert _cell(result, "syn_tiny_lm", "onnxruntime").failed
    assert _cell(result, "syn_convnet_wide", "onnxruntime").status == "only in base"
    assert _cell(result, "syn_mlp", "onnxruntime").status == "only in new"
    assert {c.model for c in result.failures} == {"syn_convnet_wide", "syn_tiny_lm"}


def test_without_thresholds_nothing_fails() -> None:
    r = compare(load_records([BASE]), load_records([NEW]), n_boot=200)
    assert r.exit_code == 0 and not r.failures


def test_different_environment_is_marked_and_not_gated_unless_forced() -> None:
    base, other = load_records([BASE]), load_records([OTHER_ENV])
    r = compare(base, other, parse_fail_on(GATE), n_boot=200)
    c = _cell(r, "syn_convnet_wide")
    assert not c.env_match and c.env_diff == "torch_version 2.13.0+cpu -> 2.14.0+cpu"
    assert c.failures and not c.failed and r.exit_code == 0
    forced = compare(base, other, parse_fail_on(GATE), force=True, n_boot=200)
    assert _cell(forced, "syn_convnet_wide").failed and forced.exit_code == 1


def test_a_new_runtime_version_is_an_environment_difference() -> None:
    base = make_record(runtime="onnxruntime", runtime_version="1.20.0", samples_ms=[1.0, 1.1, 0.9, 1.0])
    c = compare_pair(base, replace(base, runtime_version="1.22.0"), parse_fail_on("p50_ms:+5%"), n_boot=100)
    assert not c.env_match and c.env_diff == "runtime_version 1.20.0 -> 1.22.0" and not c.gated
    # a record that did not say (schema 1) is no evidence of a change
    assert compare_pair(base, replace(base, runtime_version=""), n_boot=100).env_match


def test_single_valued_registry_metric_is_gated() -> None:
    base = make_record(samples_ms=[1.0, 1.1, 0.9, 1.0], size_mib=10.0)
    c = compare_pair(base, replace(base, size_mib=12.0), parse_fail_on("size_mib:+10%"), n_boot=100)
    assert c.changes["size_mib"].change == pytest.approx(0.2) and c.changes["size_mib"].significant is None
    assert c.failures == ["size_mib +20.0% beyond +10% (single value, untested)"] and c.failed


def test_pairing_prefers_the_same_machine_when_a_side_has_several() -> None:
    a1, a2 = make_record(hostname="a", threads=2), make_record(hostname="b", threads=8)
    b1, b2 = make_record(hostname="b", threads=8), make_record(hostname="a", threads=2)
    assert pair_cells([a1, a2], [b1, b2]) == [(a1, b2), (a2, b1)]


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(BASE), str(NEW), "--fail-on", GATE, "--bootstrap", "200"]) == 1
    out, err = capsys.readouterr()
    assert "FAIL: p95_ms +" in out and "no significant change" in out and "only in base" in out
    assert "3 failing the gate" in out
    assert "archbench compare: FAIL syn_convnet_wide torch fp32 b1" in err
    assert main(["compare", str(BASE), str(NEW), "--bootstrap", "200"]) == 0  # report only
    capsys.readouterr()
    assert main(["compare", str(BASE), str(BASE), "--fail-on", "p50_ms:+1%", "--bootstrap", "200"]) == 0


def test_cli_markdown_json_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "cmp.md"
    assert main(["compare", str(BASE), str(NEW), "--format", "json", "--md", str(md), "--bootstrap", "200"]) == 0
    doc = json.loads(capsys.readouterr().out)
    wide = next(c for c in doc["cells"] if c["model"] == "syn_convnet_wide" and c["runtime"] == "torch")
    assert wide["changes"]["p50_ms"]["significant"] is True and wide["mwu"]["p_value"] < 1e-6
    assert md.read_text().startswith("# archbench compare") and "| syn_convnet_wide" in md.read_text()
    assert main(["compare", str(BASE), str(NEW), "--format", "csv", "--bootstrap", "200"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert header[:4] == ["model", "knobs", "mode", "runtime"] and "p95_ms_significant" in header


@pytest.mark.parametrize("args, message", [
    ([str(BASE), str(OLD_SCHEMA)], "schema_version 0 is not a positive integer"),
    ([str(BASE), str(NEW), "--fail-on", "p95:+10%"], "unknown --fail-on metric 'p95'"),
    ([str(BASE), str(NEW), "--alpha", "1.5"], "--alpha must be between 0 and 1"),
    ([str(BASE), "nope/"], "no such file or folder: nope"),
])
def test_cli_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_force_gates_a_different_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(BASE), str(OTHER_ENV), "--fail-on", "p95_ms:+10%", "--bootstrap", "200"]) == 0
    assert "env differs: torch_version 2.13.0+cpu -> 2.14.0+cpu; not gated" in capsys.readouterr().out
    assert main(["compare", str(BASE), str(OTHER_ENV), "--fail-on", "p95_ms:+10%", "--bootstrap", "200",
                 "--force"]) == 1
