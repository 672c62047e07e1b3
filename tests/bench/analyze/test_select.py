"""Selection: pick by objective (direction per metric), Pareto fronts, dominated and slower-than-fp32 flags, sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import make_record

from archbench.bench.analyze import select
from archbench.bench.analyze.budgets import INCONCLUSIVE, PASS, judge, parse_expression
from archbench.bench.record import Record


def rec(model: str = "m", precision: str = "fp32", size: float = 1.0, p50: float = 1.0, runtime: str = "onnxruntime",
        spread: float = 0.05, n: int = 200, **kw) -> Record:
    """A record whose samples are spread evenly around ``p50`` (so percentiles and bounds are predictable)."""
    samples = np.linspace(p50 * (1 - spread), p50 * (1 + spread), n)
    return make_record(model=model, runtime=runtime, precision=precision, threads=2, knobs="{}", size_mib=size,
                       latency_p50_ms=p50, latency_p95_ms=float(np.percentile(samples, 95)),
                       samples_ms=samples.tolist(), **kw)


def test_pick_minimizes_size_by_default_and_maximizes_throughput() -> None:
    rs = [rec(precision="fp32", size=4.0, p50=2.0, throughput_sps=500.0),
          rec(precision="int8-static", size=1.0, p50=1.5, throughput_sps=660.0),
          rec(precision="int8-dynamic", size=0.9, p50=9.0, throughput_sps=110.0)]  # smallest, too slow
    vs = judge(rs, parse_expression("p95_ms<=5"))
    assert [v.verdict for v in vs] == [PASS, PASS, "FAIL"]
    p = select.pick(vs, "size_mib")
    assert p.best.record.precision == "int8-static"
    assert [v.record.precision for v in p.ranked] == ["int8-static", "fp32"]
    assert select.pick(vs, "throughput_sps").best.record.precision == "int8-static"
    assert select.pick(vs, "p95_ms").best.record.precision == "int8-static"
    assert select.pick(vs, "params").best is None  # a metric no record has: nothing to rank by


def test_inconclusive_records_are_not_picked() -> None:
    rs = [rec(size=0.5, n=20), rec(precision="int8-static", size=1.0)]  # 20 samples: p95 cannot pass yet
    vs = judge(rs, parse_expression("p95_ms<=5"))
    assert [v.verdict for v in vs] == [INCONCLUSIVE, PASS]
    p = select.pick(vs)
    assert p.best.record.size_mib == 1.0 and len(p.inconclusive) == 1


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((1, 1), (2, 2), True),
        ((1, 2), (2, 1), False),
        ((1, 1), (1, 1), False),  # equal: neither dominates
        ((1, 1), (1, 2), True),
        ((1, 1, 5), (2, 2, 4), False),
    ],
)
def test_dominates(a, b, expected: bool) -> None:
    assert select.dominates(a, b) is expected


def test_pareto_front_respects_directions_and_groups() -> None:
    rs = [rec(precision="fp32", size=4.0, p50=2.0, sqnr_db=120.0),
          rec(precision="int8-static", size=1.0, p50=1.5, sqnr_db=30.0),
          rec(precision="int8-dynamic", size=1.1, p50=9.0, sqnr_db=29.0),  # worse on all three: off the front
          rec(precision="fp32", runtime="torch", size=4.0, p50=3.0),  # the reference: sqnr = inf, on the front
          rec(model="other", size=0.1, p50=0.1, sqnr_db=10.0)]
    fronts = select.pareto_front(rs, ("p50_ms", "size_mib", "sqnr_db"))
    by_model = {f[0].model: {(r.runtime, r.precision) for r in f} for f in fronts}
    assert by_model == {"m": {("onnxruntime", "fp32"), ("onnxruntime", "int8-static"), ("torch", "fp32")},
                        "other": {("onnxruntime", "fp32")}}
    merged = select.pareto_front(rs, ("p50_ms", "size_mib"), across_models=True)
    assert [[r.model for r in f] for f in merged] == [["other"]]


def test_dominated_flags_bigger_and_slower_within_a_model() -> None:
    rs = [rec(precision="fp32", size=4.0, p50=2.0),
          rec(precision="int8-dynamic", size=1.1, p50=9.0),
          rec(precision="int8-static", size=1.0, p50=1.5),
          rec(model="other", size=0.1, p50=0.1)]
    flags = select.dominated(rs)
    assert {(f.record.precision, f.other.precision) for f in flags} == {
        ("fp32", "int8-static"), ("int8-dynamic", "int8-static")}
    assert all(f.beyond_noise for f in flags)
    assert len(select.dominated(rs, across_models=True)) == 3


@pytest.mark.parametrize(
    "int8_p50, spread, flagged, beyond_noise",
    [
        (4.5, 0.05, True, True),  # ConvInteger-style: much slower, clearly
        (1.02, 0.3, True, False),  # slower on the point estimate, within noise
        (0.7, 0.05, False, False),  # faster: nothing to say
    ],
)
def test_int8_slower_than_fp32_parent(int8_p50: float, spread: float, flagged: bool, beyond_noise: bool) -> None:
    rs = [rec(precision="fp32", p50=1.0, spread=spread), rec(precision="int8-dynamic", p50=int8_p50, spread=spread),
          rec(precision="int8-dynamic", runtime="torch", p50=50.0)]  # no torch fp32 parent: not compared
    flags = select.slower_than_fp32(rs)
    assert bool(flags) is flagged
    if flagged:
        assert flags[0].ratio == pytest.approx(int8_p50) and flags[0].beyond_noise is beyond_noise


def test_fp16_and_bf16_slower_than_fp32_are_flagged_too() -> None:
    rs = [rec(precision="fp32", runtime="torch", p50=3.6), rec(precision="fp16", runtime="torch", p50=25.0),
          rec(precision="bf16", runtime="torch", p50=2.0)]  # faster: nothing to say
    flags = select.slower_than_fp32(rs)
    assert [(f.record.precision, round(f.ratio, 2), f.beyond_noise) for f in flags] == [("fp16", 6.94, True)]
    from archbench.bench.report.verdicts import flag_lines

    assert flag_lines(flags)[0].startswith("fp16 slower than fp32: m torch fp16 b1 p50 25 ms is 6.94x")


def test_variants_is_the_cartesian_product_in_order() -> None:
    assert select.variants({"width": [0.5, 1.0], "depth": [1, 2], "resolution": []}) == [
        {"width": 0.5, "depth": 1}, {"width": 0.5, "depth": 2}, {"width": 1.0, "depth": 1}, {"width": 1.0, "depth": 2}]


def test_pick_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from archbench.bench.cli.main import main

    f = tmp_path / "records.jsonl"
    f.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in [
        rec(precision="fp32", size=4.0, p50=2.0), rec(precision="int8-static", size=1.0, p50=1.5),
        rec(precision="int8-dynamic", size=1.1, p50=9.0)]))
    assert main(["pick", str(f), "--budget", "p95_ms<=5"]) == 0
    out = capsys.readouterr().out
    assert "pick (smallest size_mib that passes): m onnxruntime int8-static b1" in out
    assert "int8 slower than fp32: m onnxruntime int8-dynamic b1" in out and "dominated: m onnxruntime fp32" in out
    assert main(["pick", str(f), "--budget", "p95_ms<=1"]) == 1  # nothing passes
    capsys.readouterr()
    assert main(["pick", str(f), "--objective", "p50_ms", "--format", "json"]) == 0  # no budget: all ok records
    data = json.loads(capsys.readouterr().out)
    assert data["pick"] == "m onnxruntime int8-static b1" and data["direction"] == "lower"
    assert {fl["kind"] for fl in data["flags"]} == {"slower-than-fp32", "dominated"}


def test_sweep_runs_every_variant_and_picks_the_smallest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two knob variants through the real engine (torch eager, a few timed calls each)."""
    from archbench.bench.cli.main import main

    out = tmp_path / "sweep"
    rc = main(["sweep", "mlp_s", "--width", "0.5,1", "--runtime", "torch", "--repetitions", "2", "--min-time", "0.02",
               "--min-iters", "60",
               "--fidelity-samples", "0", "--budget", "size_mib<=1, macs<=1e6", "--out", str(out)])
    text = capsys.readouterr().out
    recs = [json.loads(ln) for ln in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(json.loads(r["knobs"])["width"] for r in recs) == [0.5, 1.0]
    assert all(r["status"] == "ok" for r in recs), recs
    assert rc == 0
    assert "pick (smallest size_mib that passes): mlp_s {width:0.5} torch fp32 b1" in text
    assert "## Budget verdicts" in (out / "report.md").read_text()
