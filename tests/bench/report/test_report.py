"""Reports from records: markdown contents (rows, verdict marks, findings), CSV/JSON, plots, roofline, merging
records of several machines. Inputs are the SYNTHETIC fixtures of tests/fixtures (see its README)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests_helpers import FIX, make_record

from archbench.bench.analyze.budgets import CellVerdict
from archbench.bench.analyze.findings import macs_mispredictions, precision_slowdowns, runtime_winners
from archbench.bench.analyze.merge import (
    cross_machine_rows,
    load_records,
    machine_cell_key,
    machines,
    resolve_paths,
)
from archbench.bench.analyze.roofline import Peaks, classify_layers, load_peaks, place
from archbench.bench.cli.main import main
from archbench.bench.errors import UsageError
from archbench.bench.record import CSV_FIELDS, SCHEMA_VERSION, Record, read_jsonl
from archbench.bench.report.markdown import markdown, report_json, write_reports
from archbench.bench.report.tables import TABLE_COLS, family_tables, table_rows

RUN = FIX / "synthetic_run.jsonl"
SERVER = FIX / "synthetic_server.jsonl"
PEAKS = FIX / "synthetic_peaks.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run() -> list[Record]:
    return load_records([RUN])


def fixture_verdicts(*paths: Path) -> dict[tuple, CellVerdict]:
    """The budget verdicts the synthetic fixtures carry beside each record (their "verdict" and "verdict_reason"
    keys, which Record does not read), keyed like `archbench report`'s verdicts (machine_cell_key)."""
    return {machine_cell_key(Record.from_dict(d)): CellVerdict(d["verdict"], d.get("verdict_reason") or "")
            for path in paths for d in read_jsonl(path) if d.get("verdict")}


@pytest.fixture(scope="module")
def verdicts() -> dict[tuple, CellVerdict]:
    return fixture_verdicts(RUN)


@pytest.fixture(scope="module")
def peaks() -> list[Peaks]:
    return load_peaks(PEAKS)


def _row(md: str, *cells: str) -> str:
    """The markdown table line holding every one of ``cells`` (fails listing the candidates otherwise)."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|") and all(f" {c} " in ln for c in cells)]
    assert len(lines) == 1, f"expected one row with {cells}, got {lines}"
    return lines[0]


# ----------------------------------------------------------------------------------------------------- markdown


def test_markdown_has_environment_family_tables_and_rows(run: list[Record]) -> None:
    md = markdown(run, "archbench report synthetic")
    assert "Command: `archbench report synthetic`" in md
    assert "synthetic-laptop: Synthetic CPU (fixture, not a measurement) (8 logical CPUs)" in md
    for fam in ("### convnet", "### mlp", "### transformer"):
        assert fam in md
    row = _row(md, "syn_convnet_wide", "onnxruntime", "int8-dynamic")
    assert "400 M" in row and "2 M" in row  # MACs, params
    assert "97.0%" in row and "0.99910" in row and "24.3" in row  # top-1 agree, cosine, SQNR
    assert "5.2" in row  # p50 ms
    # an unstable cell carries the "!" mark in its CV column
    assert "55% !" in _row(md, "syn_mlp", "torch", "fp32")


def test_verdict_marks_and_reasons(run: list[Record], verdicts: dict[tuple, CellVerdict]) -> None:
    md = markdown(run, verdicts=verdicts)
    assert "✓ pass" in _row(md, "syn_convnet_wide", "torch", "fp32")
    assert "✗ **FAIL**: top1_agree FAIL: 0.97 vs top1_agree>=0.99" in _row(md, "syn_convnet_wide", "int8-dynamic")
    assert "? inconclusive" in _row(md, "syn_mlp", "torch", "fp32")


def test_findings_are_computed_from_the_data(run: list[Record], verdicts: dict[tuple, CellVerdict]) -> None:
    md = markdown(run, verdicts=verdicts)
    findings_md = md.split("## Findings", 1)[1].split("## Fastest runtime per model", 1)[0]
    # MACs fail to predict latency: 0.1x the MACs, 1.5x slower on torch
    assert ("**syn_convnet_depthwise** has 0.1x the MACs of **syn_convnet_wide** but is 1.5x **slower** "
            "(torch fp32 b1") in findings_md
    assert "**syn_convnet_wide** int8-dynamic (onnxruntime b1): 1.30x slower" in findings_md
    assert "**Fastest runtime** (lowest p50) per model: onnxruntime in 4 of 4 comparison(s)." in findings_md
    winners = md.split("## Fastest runtime per model", 1)[1].split("## Results by family", 1)[0]
    assert "- **syn_convnet_depthwise** (fp32 b1 cpu): **onnxruntime**, 3.62x faster than torch" in winners
    assert "**Unstable cells**: 1 of 10 have CV > 10%" in findings_md
    assert "syn_mlp torch fp32 b1: CV 55%" in findings_md
    assert "**Budget**: 7 of 10 judged cell(s) pass, 1 inconclusive (more samples would decide); 2 fail:" in findings_md
    assert "**1 cell(s) did not run**" in findings_md
    assert "## Cells that did not run" in md and "synthetic failure for the fixture" in md
    # the failed cell is listed there, not in the family tables
    assert "int8-dynamic |       1 |" not in md.split("### transformer", 1)[1].split("##", 1)[0]


def test_cells_timed_on_a_busy_machine_are_a_finding(run: list[Record]) -> None:
    assert "busy machine" not in markdown(run)  # the fixtures carry no other_cpu_pct
    busy = [replace(r, other_cpu_pct=47.0) if r.model == "syn_mlp" and r.runtime == "torch" else
            replace(r, other_cpu_pct=3.0) for r in run]
    findings_md = markdown(busy).split("## Findings", 1)[1].split("## Fastest runtime per model", 1)[0]
    assert "**Timed on a busy machine**: 1 of 10 cells shared the CPUs" in findings_md
    assert "syn_mlp torch fp32 b1: 47% other CPU" in findings_md


def test_fp16_slower_than_fp32_is_a_finding(run: list[Record]) -> None:
    fp32 = next(r for r in run if r.model == "syn_mlp" and r.runtime == "torch" and r.precision == "fp32")
    fp16 = replace(fp32, precision="fp16", latency_p50_ms=7 * fp32.latency_p50_ms,
                   samples_ms=[7 * x for x in fp32.samples_ms])
    slow = precision_slowdowns([*run, fp16])
    assert [(d.variant.model, d.variant.precision, round(d.slowdown, 1)) for d in slow] == [
        ("syn_mlp", "fp16", 7.0), ("syn_convnet_wide", "int8-dynamic", 1.3)]
    md = markdown([*run, fp16])
    assert "**Reduced precision slower than fp32** in 2 cell(s)" in md
    assert "**syn_mlp** fp16 (torch b1): 7.00x slower" in md


def test_finding_functions_on_their_own(run: list[Record]) -> None:
    mis = macs_mispredictions(run)
    pairs = {(d.a.model, d.b.model, d.a.runtime) for d in mis}
    assert pairs == {("syn_convnet_depthwise", "syn_convnet_wide", "torch")}  # onnxruntime: 0.62x latency, fine
    slow = precision_slowdowns(run)
    assert [(d.variant.model, round(d.slowdown, 1)) for d in slow] == [("syn_convnet_wide", 1.3)]
    assert slow[0].p_value < 1e-6  # well beyond noise
    wins = {w.model: w for w in runtime_winners(run)}
    assert set(wins) == {"syn_convnet_wide", "syn_convnet_depthwise", "syn_mlp", "syn_tiny_lm"}
    assert all(w.fastest == "onnxruntime" and w.p_value < 0.05 for w in wins.values())


def test_optional_columns_only_when_some_record_has_them(run: list[Record],
                                                         verdicts: dict[tuple, CellVerdict]) -> None:
    bare = [replace(r, top1_agree=None, cosine=None, sqnr_db=None) for r in run]
    headers = family_tables(bare)["convnet"][0]  # and no verdicts
    assert "top-1 agree" not in headers and "budget" not in headers and "SQNR dB" not in headers
    assert "max abs err" in headers
    headers = family_tables(run, verdicts)["convnet"][0]
    assert {"top-1 agree", "cosine", "SQNR dB", "budget"} <= set(headers)


def test_tolerates_missing_keys() -> None:
    minimal = [make_record(latency_p50_ms=1.0), make_record(runtime="onnxruntime", status="failed")]
    md = markdown(minimal)
    assert "### other" in md and "| m " in md
    assert "## Cells that did not run" in md
    table_rows(minimal)
    json.dumps(report_json(minimal))


def test_end_of_run_table_formats_numbers(run: list[Record]) -> None:
    rows = {(r[0], r[1], r[2]): r for r in table_rows(run)}
    cols = {c: i for i, c in enumerate(TABLE_COLS)}
    assert rows[("syn_mlp", "onnxruntime", "fp32")][cols["samples/s"]] == "33,332"  # samples/s: no 3.33e+04
    assert rows[("syn_tiny_lm", "onnxruntime", "int8-dynamic")][4].startswith("failed: prepare: RuntimeError")


# ----------------------------------------------------------------------------------------------------- files


def test_write_reports_csv_columns_and_json(tmp_path: Path, run: list[Record], peaks: list[Peaks],
                                            verdicts: dict[tuple, CellVerdict]) -> None:
    paths = write_reports(tmp_path, run, "cmd", peaks=peaks, placements=place(run, peaks),
                          csv_name="report.csv", json_name="report.json", verdicts=verdicts)
    assert [p.name for p in paths] == ["report.csv", "report.md", "report.json"]
    with open(tmp_path / "report.csv", newline="") as fh:
        rd = csv.reader(fh)
        assert next(rd) == CSV_FIELDS  # stable, documented columns: the Record's field order
        assert sum(1 for _ in rd) == len(run)
    doc = json.loads((tmp_path / "report.json").read_text())  # strict JSON: SQNR inf became "inf"
    assert doc["records"][0]["sqnr_db"] == "inf"
    assert all("samples_ms" not in r and "_source" not in r for r in doc["records"])
    failing = next(r for r in doc["records"] if r["model"] == "syn_convnet_wide" and r["precision"] == "int8-dynamic")
    assert (failing["verdict"], failing["verdict_reason"]) == ("FAIL", "top1_agree FAIL: 0.97 vs top1_agree>=0.99")
    kinds = {f["kind"] for f in doc["findings"]}
    assert {"macs_mispredict", "slower_than_fp32", "runtime_winner", "unstable", "budget", "failed"} <= kinds
    assert doc["peaks"][0]["ridge_flop_per_byte"] == pytest.approx(10.0)


def test_write_reports_keeps_the_run_defaults(tmp_path: Path, run: list[Record]) -> None:
    # what `archbench run` calls at the end of a run
    paths = write_reports(tmp_path, run, command="archbench run")
    assert [p.name for p in paths] == ["records.csv", "report.md"]


# ----------------------------------------------------------------------------------------------------- plots


def _assert_png(path: Path, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path}: only {len(data)} bytes"


@pytest.mark.parametrize("xs, ys, front", [
    ([1, 2, 3], [1, 2, 3], [0, 1, 2]),  # more capacity costs more latency all along: all on the front
    ([1, 2, 3], [3, 2, 1], [2]),  # the biggest is also the fastest: it dominates
    ([10, 5, 8, 1], [4, 1, 5, 0.5], [3, 1, 0]),  # (8, 5) is beaten by (10, 4)
    ([2, 2], [1, 1], [0]),  # exact ties: one representative
])
def test_pareto_front_of_the_latency_plots(xs: list[float], ys: list[float], front: list[int]) -> None:
    """The plots' front (more MACs or bytes at less latency: x maximized, y minimized), ordered by x, is
    archbench.bench.analyze.select.pareto_indices on (-x, y)."""
    from archbench.bench.analyze.select import pareto_indices

    got = pareto_indices([(-x, y) for x, y in zip(xs, ys, strict=True)])
    assert sorted(got, key=lambda i: xs[i]) == front


# ----------------------------------------------------------------------------------------------------- roofline


def test_roofline_placement_against_synthetic_peaks(run: list[Record], peaks: list[Peaks]) -> None:
    pk = peaks[0]
    assert pk.ridge == pytest.approx(10.0)
    assert pk.roof(1.0) == pytest.approx(20e9) and pk.roof(100.0) == pytest.approx(200e9)
    pts = {(p.model, p.runtime, p.precision): p for p in place(run, peaks)}
    mlp = pts[("syn_mlp", "onnxruntime", "fp32")]
    # bytes = weights 0.38 MiB + input 64 x 4 B (+ outputs unknown for a non-zoo model)
    assert mlp.bytes == int(0.38 * 2**20) + 64 * 4 and mlp.output_bytes is None
    assert mlp.intensity == pytest.approx(2e5 / mlp.bytes)
    assert mlp.bound == "memory"
    wide = pts[("syn_convnet_wide", "torch", "fp32")]
    assert wide.bound == "compute"
    assert wide.achieved_flops_per_s == pytest.approx(8e8 / (wide_p50(run) * 1e-3))
    assert wide.of_roof == pytest.approx(wide.achieved_flops_per_s / 200e9)


def wide_p50(run: list[Record]) -> float:
    return next(r.latency_p50_ms for r in run if r.model == "syn_convnet_wide" and r.runtime == "torch")


def test_zoo_output_bytes_from_a_meta_forward() -> None:
    from archbench.bench.measure.profile import output_bytes

    r = make_record(model="mlp_s", knobs="{}", batch=4, precision="fp32")
    assert output_bytes(r) == 4 * 10 * 4  # (4, 10) logits, fp32
    assert output_bytes(replace(r, precision="fp16")) == 4 * 10 * 2
    assert output_bytes(make_record(model="not_in_the_zoo")) is None


def test_classify_layers_against_the_ridge() -> None:
    # a parent whose MACs are its children's, one linear heavy on weights, one conv heavy on MACs
    profile = SimpleNamespace(by_module=[
        SimpleNamespace(module="", type="Net", params=0, macs=1_100_000),
        SimpleNamespace(module="fc", type="Linear", params=100_000, macs=100_000),
        SimpleNamespace(module="conv", type="Conv2d", params=1_000, macs=1_000_000),
    ])
    bytes_by_module = {"": (0, 1000), "fc": (400_000, 800), "conv": (4_000, 40_000)}
    rows = classify_layers(profile, bytes_by_module, ridge=10.0)
    assert [(r.module, r.bound) for r in rows] == [("conv", "compute"), ("fc", "memory")]  # largest MACs first
    assert rows[1].intensity == pytest.approx(2 * 100_000 / 400_800)
    assert "(model)" not in {r.module for r in rows}  # no MACs of its own


def test_module_bytes_hooks_are_removed() -> None:
    import torch

    from archbench.bench.measure.profile import module_bytes

    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    got = module_bytes(net, (torch.randn(2, 8),))
    assert got["0"] == ((8 * 16 + 16) * 4, (2 * 8 + 2 * 16) * 4)  # own weights; input + output activations
    assert got["1"] == (0, (2 * 16 + 2 * 16) * 4)
    assert all(not m._forward_hooks for m in net.modules())


def test_measure_peaks_small_and_restores_threads() -> None:
    import torch

    from archbench.bench.machine.peaks import measure_peaks

    before = torch.get_num_threads()
    pk = measure_peaks("cpu", threads=1, matmul_n=128, copy_mib=8, reps=2)
    assert torch.get_num_threads() == before
    assert pk.flops_per_s > 1e8 and pk.bytes_per_s > 1e8 and pk.threads == 1
    assert math.isfinite(pk.ridge) and pk.ridge > 0


# ----------------------------------------------------------------------------------------------------- merge


def test_merge_two_machines_into_one_comparison() -> None:
    records = load_records([RUN, SERVER])
    ms = machines(records)
    assert [m.label for m in ms] == ["synthetic-laptop", "synthetic-server"]
    assert len(records) == 22  # the same cells twice: de-duplicated per machine, not across machines
    headers, rows = cross_machine_rows(records)
    assert headers == ["synthetic-laptop / cpu", "synthetic-server / cpu"]
    row = next(r for r in rows if r[:3] == ["syn_convnet_wide", "torch", "fp32"])
    assert row[-1] == pytest.approx(2.0, rel=0.02)  # the server is twice as fast
    md = markdown(records, verdicts=fixture_verdicts(RUN, SERVER))
    assert "## Across machines" in md and "| machine " in md
    assert "**synthetic-server / cpu** is 1.99x faster than **synthetic-laptop / cpu**" in md
    assert "syn_convnet_wide" in _row(md, "syn_convnet_wide", "torch", "synthetic-server")


def test_same_hostname_different_fingerprint_gets_distinct_labels() -> None:
    records = load_records([RUN, FIX / "synthetic_new_other_env.jsonl"])
    labels = sorted(m.label for m in machines(records))
    assert labels == ["synthetic-laptop (torch 2.13.0+cpu)", "synthetic-laptop (torch 2.14.0+cpu)"]


def test_merge_refuses_mixed_schema_versions(tmp_path: Path) -> None:
    from dataclasses import asdict

    from archbench.bench.record import Record

    new = tmp_path / "new.jsonl"  # a current-schema record next to the schema-1 fixtures
    new.write_text(json.dumps(asdict(Record(model="m", runtime="torch", precision="fp32", batch=1, device="cpu",
                                            threads=1))) + "\n")
    with pytest.raises(UsageError, match=rf"refusing to mix record schema versions \(v1: .*synthetic_run.*; "
                                         rf"v{SCHEMA_VERSION}: .*new.jsonl"):
        load_records([RUN, new])
    with pytest.raises(UsageError, match=r"synthetic_old_schema.jsonl line 1: schema_version 0 is not a positive"):
        load_records([RUN, FIX / "synthetic_old_schema.jsonl"])


def test_merge_refuses_newer_schema(tmp_path: Path) -> None:
    f = tmp_path / "future.jsonl"
    f.write_text(json.dumps({"model": "m", "schema_version": 10**6}) + "\n")
    with pytest.raises(UsageError, match="newer than this archbench"):
        load_records([f])


def test_resolve_paths(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    assert [p.name for p in resolve_paths([tmp_path])] == ["a.jsonl", "b.jsonl"]
    (tmp_path / "records.jsonl").write_text("")
    assert [p.name for p in resolve_paths([tmp_path, tmp_path / "records.jsonl"])] == ["records.jsonl"]
    with pytest.raises(UsageError, match="no such file or folder"):
        resolve_paths([tmp_path / "nope"])
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(UsageError, match="expected a .jsonl"):
        resolve_paths([tmp_path / "x.csv"])


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli_report_writes_everything_with_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "review"
    rc = main(["report", str(RUN), str(SERVER), "--out", str(out), "--no-measure", "--no-layers",
               "--peaks", str(PEAKS)])
    assert rc == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["plots/latency_distributions.png", "plots/latency_vs_macs.png", "plots/latency_vs_size.png",
                     "plots/roofline_synthetic-laptop_cpu.png", "plots/roofline_synthetic-server_cpu.png",
                     "report.csv", "report.json", "report.md"]  # --no-measure: no peaks.json written
    for name in names:
        if name.endswith(".png"):  # readable PNGs with something drawn in them
            _assert_png(out / name)
    md = (out / "report.md").read_text()
    assert "![latency vs macs](plots/latency_vs_macs.png)" in md
    assert "## Roofline" in md and "**Bytes per forward is an estimate**" in md
    assert "report.md" in capsys.readouterr().err


def test_cli_report_stdout_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(RUN), "--no-measure", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["records"]) == 11 and doc["schema_version"] == SCHEMA_VERSION  # schema 1 records, migrated
    assert main(["report", str(RUN), "--no-measure", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == ",".join(CSV_FIELDS)
    assert main(["report", str(RUN), "--no-measure"]) == 0
    assert capsys.readouterr().out.startswith("# archbench report")


def test_cli_report_budget_option(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("archbench.bench.analyze.budgets")
    bare = FIX / "synthetic_run.jsonl"
    assert main(["report", str(bare), "--no-measure", "--budget", "p50_ms<=5"]) == 0
    md = capsys.readouterr().out
    assert "Budget verdicts judged against `p50_ms<=5`" in md
    assert "✗ **FAIL**: p50_ms FAIL" in _row(md, "syn_convnet_depthwise", "torch", "fp32", "900 K")


@pytest.mark.parametrize("args, message", [
    (["report", str(RUN), str(FIX / "synthetic_old_schema.jsonl"), "--no-measure"], "schema_version 0 is not a positive"),
    (["report", "no/such/run", "--no-measure"], "no such file or folder: no/such/run"),
])
def test_cli_report_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
