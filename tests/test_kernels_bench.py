"""bench/kernelbench.py: the sweep plumbing (on CPU, with a wall-clock timer) and the no-GPU CLI path."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from archbench.bench.measure import kernelbench as kb

TINY_SHAPES = {
    "rms_norm": [(8, 24)],
    "conv_bn_act": [(1, 3, 8, 8, 4, 3, 1, 1)],
    "attention": [(1, 2, 16, 8, True)],
}


def test_summarize():
    stats = kb.summarize([1.0, 2.0, 3.0, 10.0])
    assert stats.median == 2.5 and stats.min == 1.0 and stats.n == 4
    assert stats.mean == 4.0 and stats.cv == pytest.approx(stats.std / 4.0)
    with pytest.raises(ValueError):
        kb.summarize([])


def test_work_rate_formulas():
    assert kb.Work("GB/s", 2e9, "").rate(1000.0) == pytest.approx(2.0)  # 2 GB in 1 s
    assert kb.Work("TFLOP/s", 3e12, "").rate(500.0) == pytest.approx(6.0)  # 3 TFLOP in 0.5 s


def test_sweep_rows_on_cpu(monkeypatch, tmp_path):
    """Every impl becomes a row; unavailable SDPA backends are skipped rows with a reason, not crashes."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # CPU tensors -> the kernels' reference fallback
    peaks = kb.measure_peaks("cpu", kb.wall_timer, copy_mib=4, matmul_n=64, repeats=2)
    rows = kb.run_sweep(list(kb.KERNELS), quick=True, dtype="fp32", device="cpu", timer=kb.wall_timer, warmup=1,
                        repeats=3, backward=True, compile_baselines=False, peaks=peaks, shapes=TINY_SHAPES)
    by_impl = {(r.kernel, r.impl): r for r in rows}
    for kernel in kb.KERNELS:
        row = by_impl[(kernel, "triton")]
        assert row.status == "ok", row.error
        assert row.median_ms > 0 and row.metric > 0 and row.pct_of_peak is not None and row.formula
        assert row.max_abs_err < 1e-4
    assert by_impl[("attention", "sdpa-math")].status == "ok"
    efficient = by_impl[("attention", "sdpa-efficient")]  # a CUDA-only backend on a CPU tensor
    assert efficient.status == "skipped" and efficient.error
    assert by_impl[("conv_bn_act", "eager-unfused")].direction == "fwd"  # inference kernel: never fwd+bwd

    table = kb.format_rows(rows)
    assert "4*B*H*N^2*d / 2 (causal) * 3.5 (fwd+bwd)" in table and "% peak" in table

    kb.write_outputs(tmp_path, rows, kb.environment(), kb.Row)
    with open(tmp_path / "kernels.csv") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == len(rows) and "triton_version" in records[0] and "median_ms" in records[0]
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["environment"]["torch_version"] == torch.__version__ and len(data["rows"]) == len(rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_cli_without_gpu_runs_interpreter_checks(capsys, tmp_path):
    code = kb.main(["--quick", "--kernels", "rms_norm", "attention", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mean nothing" in out and "interpreter checks passed" in out
    assert "rms_norm" in out and "attention" in out and "conv_bn_act" not in out
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["environment"]["mode"].startswith("interpreter") and all(r["status"] == "ok" for r in data["rows"])


def test_cli_errors_are_one_line(capsys):
    assert kb.main(["--repeats", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archbench kernels: error:") and "\n" not in err
    with pytest.raises(SystemExit):
        kb.main(["--kernels", "nope"])  # argparse's own usage error (exit 2)
