"""int8 variants on a tiny zoo model (mlp_s, ~85 K params): files shrink, outputs stay close; fidelity metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from archbench.bench.cell import Cell, Job, Options
from archbench.bench.measure.fidelity import argmax_matches, compare, cosine_similarity, is_logits
from archbench.bench.measure.quantize import default_reduce_range
from archbench.bench.measure.runtimes import UnsupportedCell
from archbench.bench.measure.sources import resolve

# ------------------------------------------------------------------------------------------------- fidelity

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(6, 10)).astype(np.float32)


@pytest.mark.parametrize(
    "ref, got, top1, cos, sqnr",
    [
        ([LOGITS], [LOGITS.copy()], 1.0, 1.0, math.inf),  # identical
        ([np.ones((4, 5))], [np.ones((4, 5)) * 1.1], 1.0, 1.0, 20.0),  # 10% error everywhere: 20 dB exactly
        ([np.eye(3)], [np.eye(3)[[1, 0, 2]]], 1 / 3, 1 / 3, -10 * math.log10(4 / 3)),  # two rows' argmax swapped
        ([np.ones(7)], [np.ones(7) * 2], None, 1.0, 0.0),  # (B,) is not logits: no top-1
        ([np.ones((2, 1))], [np.ones((2, 1))], None, 1.0, math.inf),  # one class is not logits either
    ],
)
def test_fidelity_table(ref, got, top1, cos, sqnr) -> None:
    f = compare([ref], [got])
    assert f.top1_agree == (pytest.approx(top1) if top1 is not None else None)
    assert f.cosine == pytest.approx(cos)
    assert f.sqnr_db == (pytest.approx(sqnr) if math.isfinite(sqnr) else sqnr)
    assert f.max_abs_err == pytest.approx(float(np.max(np.abs(np.asarray(ref[0]) - np.asarray(got[0])))))


def test_fidelity_pools_sets_and_takes_the_worst_cosine() -> None:
    lm = rng.normal(size=(2, 5, 11))  # (B, N, V): one row per token
    noisy = lm + rng.normal(scale=0.5, size=lm.shape)
    f = compare([[lm], [lm]], [[lm], [noisy]])
    assert f.sets == 2 and f.top1_rows == 2 * 2 * 5
    assert f.cosine == pytest.approx(cosine_similarity(lm, noisy))  # the worse of the two sets
    m, n = argmax_matches(lm, noisy)
    assert f.top1_agree == pytest.approx((10 + m) / (10 + n))
    sig, noise = 2 * float((lm**2).sum()), float(((lm - noisy) ** 2).sum())
    assert f.sqnr_db == pytest.approx(10 * math.log10(sig / noise))


def test_fidelity_non_finite_and_mismatches() -> None:
    bad = LOGITS.copy()
    bad[0, 0] = np.nan
    f = compare([[LOGITS]], [[bad]])
    assert math.isnan(f.cosine) and f.sqnr_db == -math.inf and f.max_abs_err == math.inf
    with pytest.raises(ValueError, match=r"output shape \(6, 9\) differs"):
        compare([[LOGITS]], [[LOGITS[:, :9]]])
    with pytest.raises(ValueError, match="2 output sets to compare against 1"):
        compare([[LOGITS]], [[LOGITS], [LOGITS]])
    assert is_logits((8, 10)) and is_logits((8, 64, 1000)) and not is_logits((8,)) and not is_logits((8, 3, 4, 4))


def test_reduce_range_follows_vnni() -> None:
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 rule")
    assert default_reduce_range({"avx2"}) is True
    assert default_reduce_range({"avx2", "avx512_vnni"}) is False


# ------------------------------------------------------------------------------------------- quantized cells

SETS = 8  # input sets compared (seeds 0..7), batch 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quant")


def _source():
    torch.manual_seed(0)  # as every worker builds it
    return resolve("mlp_s")


def prepared(runtime: str, precision: str, workdir: Path, model: str = "mlp_s", **options):
    """(runtime, model handle) as a measuring worker prepares them (archbench.bench.measure.prepare.prepare), in this
    process; for a torch-free runtime the artifacts worker's steps (export, references, variant) run here first."""
    from archbench.bench.measure.artifacts import build
    from archbench.bench.measure.prepare import prepare
    from archbench.bench.measure.runtimes import get_runtime
    from archbench.bench.measure.variants import build_variants

    torch.set_num_threads(1)
    cells = tuple(Cell(model, runtime=runtime, precision=precision, batch=b, threads=1,
                       options=Options(input_sets=4, fidelity_samples=SETS * 4, **options)) for b in (4,))
    job = Job(cells=cells, workdir=str(workdir))
    cls = get_runtime(runtime)
    if not cls.needs_torch:
        build(Job(cells=cells, workdir=str(workdir), kind="artifacts", artifact=cls.artifact), lambda *a, **k: None)
        build_variants(job, workdir)
    p = prepare(job)
    rt, handle = p.runtime, p.model
    return rt, handle


def _fidelity(src, rt, handle):
    """The variant's outputs against the fp32 PyTorch module's on SETS input sets of batch 4 (the worker's inputs)."""
    refs, gots = [], []
    for s in range(SETS):
        x = handle.inputs(4, s)
        with torch.inference_mode():
            refs.append([src.module(*(torch.from_numpy(a) for a in x)).float().numpy()])
        gots.append(rt.outputs(rt.run(rt.convert(x))))
    return compare(refs, gots)


@pytest.fixture(scope="module")
def ort_cells(workdir: Path) -> dict[str, tuple[object, object]]:
    """mlp_s through the dynamo exporter, then each precision's ONNX Runtime session (export shared)."""
    cells = {}
    for precision in ("fp32", "fp16", "int8-dynamic", "int8-static"):
        rt, handle = prepared("onnxruntime", precision, workdir, calib_batches=4, calib_batch_size=8)
        cells[precision] = (rt, _fidelity(_source(), rt, handle))
    return cells


def test_int8_onnx_files_are_smaller_and_counted_from_disk(ort_cells, workdir: Path) -> None:
    from archbench.bench.measure.files import onnx_files

    fp32_files = onnx_files(workdir / "model.onnx")
    assert any(p.suffix == ".data" for p in fp32_files), "the dynamo exporter writes weights to a .data file"
    assert ort_cells["fp32"][0].size_bytes == sum(p.stat().st_size for p in fp32_files)
    assert (workdir / "model.pre.onnx").exists()  # quant_pre_process ran
    for precision in ("int8-dynamic", "int8-static"):
        size = ort_cells[precision][0].size_bytes
        assert size == (workdir / f"model.{precision}.onnx").stat().st_size
        # int8 weights: about a quarter of fp32 plus scales/zero points; well under half.
        assert size < 0.5 * ort_cells["fp32"][0].size_bytes, (precision, size)
    # fp16: the exporter's layout is kept (weights in a .data file), and every byte of both files is counted.
    fp16_files = onnx_files(workdir / "model.fp16.onnx")
    assert [p.name for p in fp16_files] == ["model.fp16.onnx", "model.fp16.onnx.data"]
    fp16_size = ort_cells["fp16"][0].size_bytes
    assert fp16_size == sum(p.stat().st_size for p in fp16_files)
    assert 0.45 < fp16_size / ort_cells["fp32"][0].size_bytes < 0.55  # 2 bytes a weight instead of 4


@pytest.mark.parametrize(
    "precision, min_top1, min_cos, min_sqnr, ops",
    [
        ("fp32", 1.0, 0.99999, 80.0, ""),
        ("fp16", 1.0, 0.9999, 40.0, "fp32 inputs/outputs"),  # fp16 rounding: ~3 decimal digits, SQNR ~60 dB
        ("int8-dynamic", 0.9, 0.98, 15.0, "MatMulInteger"),
        ("int8-static", 0.9, 0.98, 15.0, "QDQ"),
    ],
)
def test_onnx_fidelity_is_sane(ort_cells, precision: str, min_top1: float, min_cos: float, min_sqnr: float,
                               ops: str) -> None:
    rt, f = ort_cells[precision]
    assert f.sets == SETS and f.top1_rows == SETS * 4
    assert f.top1_agree >= min_top1 and f.cosine >= min_cos and f.sqnr_db >= min_sqnr, f
    assert f.sqnr_db < 200 and f.max_abs_err > 0  # fp32 ORT is close to torch, not bit-identical
    assert ops in rt.quant_method


def test_static_calibration_from_a_user_hook(workdir: Path) -> None:
    import test_quantize as me  # the module the hook reference imports

    calls = me._calls
    calls.clear()
    hooked = workdir.parent / "hooked"
    rt, handle = prepared("onnxruntime", "int8-static", hooked, calibration="test_quantize:calib_hook")
    assert calls and calls[0].input_names and calls[0].precision == "int8-static"
    assert "calibration from test_quantize:calib_hook" in rt.quant_method
    assert _fidelity(_source(), rt, handle).cosine > 0.95


_calls: list = []


def calib_hook(ctx):
    """A user's calibration hook (archbench.bench.measure.hooks): yields {input name: array} batches."""
    _calls.append(ctx)
    for i in range(3):
        yield {ctx.input_names[0]: ctx.input_spec.make(seed=99 + i)}


def test_torch_dynamic_int8(workdir: Path) -> None:
    fp32, _ = prepared("torch", "fp32", workdir)
    rt, handle = prepared("torch", "int8-dynamic", workdir)
    assert rt.size_bytes < 0.5 * fp32.size_bytes
    assert "quantize_dynamic qint8 on 3 Linear" in rt.quant_method
    f = _fidelity(_source(), rt, handle)
    assert f.top1_agree >= 0.9 and f.cosine >= 0.98 and f.sqnr_db >= 15.0, f


@pytest.mark.parametrize(
    "runtime, precision, model, message",
    [
        ("torch", "int8-static", "mlp_s", "use --runtime onnxruntime"),
        ("onnxruntime", "bf16", "mlp_s", "onnxruntime here runs fp32, fp16, int8-dynamic, int8-static; not bf16"),
        ("torch", "int8-dynamic", "test_quantize:convs", "no nn.Linear / LSTM / GRU"),
        ("torch", "int4", "mlp_s", "not int4"),
    ],
)
def test_unsupported_combinations_are_skipped(tmp_path: Path, runtime: str, precision: str, model: str,
                                              message: str) -> None:
    with pytest.raises(UnsupportedCell, match=message):
        prepared(runtime, precision, tmp_path, model)


def convs():
    """A model with no Linear / LSTM / GRU layer: nothing for dynamic quantization."""
    return nn.Sequential(nn.Conv1d(1, 2, 3)), torch.randn(1, 1, 8)


# ------------------------------------------------------------------------------------------------ end to end


def accuracy_hook(predict, ctx) -> float:
    """A user's task metric (archbench.bench.measure.hooks): % of a fixed "validation set" whose argmax matches its label."""
    x = ctx.input_spec.with_batch(32).make(seed=7)
    labels = (x.sum(axis=1) > 0).astype(np.int64)  # a made-up task; what matters is fp32 vs int8 on the same data
    return 100.0 * float((predict((x,))[0].argmax(-1) == labels).mean())


def test_run_with_precisions_and_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real engine: workers export, quantize, time, compare, call the metric hook; the budget judges."""
    import json

    from archbench.bench.cli.main import main

    monkeypatch.chdir(Path(__file__).parent)  # workers import the hook module (this file) from the working directory
    out = tmp_path / "run"
    rc = main(["run", "mlp_s", "--runtime", "onnxruntime", "--precision", "fp32,int8-static", "--min-time", "0.05",
               "--min-iters", "60", "--calib-batches", "2", "--fidelity-samples", "16",
               "--metric-hook", "test_quantize:accuracy_hook",
               "--budget", "size_mib<=0.2, top1_agree>=0.8, p95_ms<=1000, task_metric_drop<=100",
               "--out", str(out)])
    text = capsys.readouterr().out
    recs = {r["precision"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    assert recs["fp32"]["status"] == recs["int8-static"]["status"] == "ok", recs
    assert recs["int8-static"]["size_mib"] < 0.5 * recs["fp32"]["size_mib"]
    assert recs["int8-static"]["fidelity_sets"] == 16 and recs["int8-static"]["top1_rows"] == 16
    assert "quantize_static QDQ" in recs["int8-static"]["quant_method"]
    assert rc == 1  # fp32 (0.33 MiB) fails size_mib <= 0.2
    assert "pick (smallest size_mib that passes): mlp_s onnxruntime int8-static b1" in text
    report = (out / "report.md").read_text()
    assert "## Budget verdicts" in report and "## Pick" in report
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert [v["verdict"] for v in verdicts] == ["FAIL", "PASS"]
    assert all(isinstance(r["task_metric"], float) for r in recs.values())
    drop = [t for t in verdicts[1]["terms"] if t["term"].startswith("task_metric_drop")][0]
    assert drop["value"] == pytest.approx(recs["fp32"]["task_metric"] - recs["int8-static"]["task_metric"])


def test_references_follow_the_weights_being_measured(tmp_path: Path) -> None:
    """References written by another worker of the run (the artifacts worker) are kept only when this module
    reproduces them: a factory that seeding does not make deterministic gets references from its own weights."""
    from archbench.bench.measure.artifacts import read_refs, write_refs
    from archbench.bench.measure.inputs import ArraySpec

    spec = (ArraySpec((1, 64)),)
    cell = Cell("mlp_s", batch=2, options=Options(input_sets=2, fidelity_samples=4))
    torch.manual_seed(0)
    a = resolve("mlp_s").module
    write_refs(a, spec, tmp_path, [cell])
    first = read_refs(tmp_path, 2)
    write_refs(a, spec, tmp_path, [cell])  # same weights: kept as they are
    assert all(np.array_equal(first[s][0], read_refs(tmp_path, 2)[s][0]) for s in first)
    torch.manual_seed(1)
    b = resolve("mlp_s").module  # other weights, same folder
    write_refs(b, spec, tmp_path, [cell])
    with torch.inference_mode():
        expect = b(torch.from_numpy(spec[0].make(2, 0 * 1009))).numpy()
    assert np.allclose(read_refs(tmp_path, 2)[0][0], expect)
