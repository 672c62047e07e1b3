"""archbench kernels (bench/measure/kernelbench*.py) and the shared peaks (bench/measure/peaks.py): the sweep
plumbing on CPU with a wall-clock timer, the measured peaks, and the no-GPU CLI path."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from archbench.bench.env import environment
from archbench.bench.measure import kernelbench as kb
from archbench.bench.measure.kernelbench_cases import KERNELS, Work
from archbench.bench.measure.kernelbench_output import format_rows, kernel_environment, write_outputs
from archbench.bench.measure.kernelbench_sweep import Row, run_sweep
from archbench.bench.measure.peaks import Peaks, measure_peaks, wall_timer

TINY_SHAPES = {
    "rms_norm": [(8, 24)],
    "conv_bn_act": [(1, 3, 8, 8, 4, 3, 1, 1)],
    "attention": [(1, 2, 16, 8, True)],
}


@pytest.mark.parametrize("unit, amount, ms, per_s, rate", [
    ("GB/s", 2e9, 1000.0, 2e9, 2.0),  # 2 GB in 1 s
    ("TFLOP/s", 3e12, 500.0, 6e12, 6.0),  # 3 TFLOP in 0.5 s
])
def test_work_rate_formulas(unit: str, amount: float, ms: float, per_s: float, rate: float) -> None:
    work = Work(unit, amount, "")
    assert work.per_second(ms) == pytest.approx(per_s), unit
    assert work.rate(ms) == pytest.approx(rate), unit


def test_measure_peaks_on_cpu_with_a_given_timer() -> None:
    """The kernelbench use: any Timer, a matmul dtype; the formulas are 2 n^3 / t and 2 B / t of the best call."""
    calls: list[int] = []

    def timer(fn, warmup, repeats):  # noqa: ANN001, ANN202 - a Timer reporting fixed times
        calls.append(repeats)
        fn()
        return [4.0, 2.0, 3.0][:repeats] if len(calls) == 1 else [1.0, 8.0][:repeats]

    before = torch.get_num_threads()
    pk = measure_peaks("cpu", threads=1, matmul_n=64, copy_mib=1, reps=3, dtype="bf16", timer=timer)
    assert torch.get_num_threads() == before
    assert pk.dtype == "bf16" and pk.threads == 1 and pk.device == "cpu" and calls == [3, 3]
    assert pk.flops_per_s == pytest.approx(2 * 64**3 / 2e-3)  # best matmul call: 2 ms
    assert pk.bytes_per_s == pytest.approx(2 * 2**20 / 1e-3)  # best copy call: 1 ms for 1 MiB read + written
    assert pk.hostname == environment()["hostname"] and pk.measured_at


def test_measure_peaks_defaults_and_errors() -> None:
    pk = measure_peaks("cpu", threads=1, matmul_n=96, copy_mib=4, reps=2)
    assert pk.dtype == "fp32" and pk.flops_per_s > 1e7 and pk.bytes_per_s > 1e7
    assert math.isfinite(pk.ridge) and pk.roof(0.0) == 0.0 and pk.roof(math.inf) == pk.flops_per_s
    with pytest.raises(ValueError, match="dtype"):
        measure_peaks("cpu", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            measure_peaks("cuda")


def test_peaks_from_old_peaks_json_are_fp32() -> None:
    """peaks.json files written before the dtype field still load (roofline.load_peaks builds Peaks(**d))."""
    old = {"device": "cpu", "threads": 4, "flops_per_s": 2e11, "bytes_per_s": 2e10, "matmul_n": 1536,
           "copy_mib": 256.0, "hostname": "h", "cpu_model": "c", "gpu_name": "", "measured_at": ""}
    pk = Peaks(**old)
    assert pk.dtype == "fp32" and pk.ridge == pytest.approx(10.0)


def test_roofline_reexports_the_shared_peaks() -> None:
    from archbench.bench.measure import peaks
    from archbench.bench.report import roofline

    assert roofline.Peaks is peaks.Peaks and roofline.measure_peaks is peaks.measure_peaks


def test_sweep_rows_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every impl becomes a row; unavailable SDPA backends are skipped rows with a reason, not crashes."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # CPU tensors -> the kernels' reference fallback
    peaks = measure_peaks("cpu", timer=wall_timer, copy_mib=4, matmul_n=64, reps=2)
    rows = run_sweep(list(KERNELS), quick=True, dtype="fp32", device="cpu", timer=wall_timer, warmup=1,
                     repeats=3, backward=True, compile_baselines=False, peaks=peaks, shapes=TINY_SHAPES)
    by_impl = {(r.kernel, r.impl): r for r in rows}
    for kernel in KERNELS:
        row = by_impl[(kernel, "triton")]
        assert row.status == "ok", f"{kernel}: {row.error}"
        assert row.median_ms > 0 and row.metric > 0 and row.pct_of_peak is not None and row.formula, kernel
        assert row.min_ms <= row.median_ms and row.repeats == 3, kernel
        assert row.max_abs_err < 1e-4, kernel
        peak = peaks.bytes_per_s if row.metric_unit == "GB/s" else peaks.flops_per_s
        assert row.pct_of_peak == pytest.approx(100 * row.work / (row.median_ms * 1e-3) / peak), kernel
    assert by_impl[("attention", "sdpa-math")].status == "ok"
    efficient = by_impl[("attention", "sdpa-efficient")]  # a CUDA-only backend on a CPU tensor
    assert efficient.status == "skipped" and efficient.error
    assert by_impl[("conv_bn_act", "eager-unfused")].direction == "fwd"  # inference kernel: never fwd+bwd

    table = format_rows(rows)
    assert "4*B*H*N^2*d / 2 (causal) * 3.5 (fwd+bwd)" in table and "% peak" in table

    env = kernel_environment()
    paths = write_outputs(tmp_path, rows, env, Row)
    assert [p.name for p in paths] == ["kernels.csv", "kernels.json"]
    with open(tmp_path / "kernels.csv") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == len(rows) and "triton_version" in records[0] and "median_ms" in records[0]
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["environment"]["torch_version"] == torch.__version__ and len(data["rows"]) == len(rows)


def test_kernel_environment_extends_the_shared_one_without_mutating_it() -> None:
    shared = dict(environment())
    env = kernel_environment(mode="x")
    assert env["mode"] == "x" and env["timestamp"] and "gpu_capability" in env and "cuda_version" in env
    assert {k: env[k] for k in shared} == shared
    assert environment() == shared  # the cached dict is untouched


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_cli_without_gpu_runs_interpreter_checks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = kb.main(["--quick", "--kernels", "rms_norm", "attention", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mean nothing" in out and "interpreter checks passed" in out
    assert "rms_norm" in out and "attention" in out and "conv_bn_act" not in out
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["environment"]["mode"].startswith("interpreter") and all(r["status"] == "ok" for r in data["rows"])


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert kb.main(["--repeats", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archbench kernels: error:") and "\n" not in err
    with pytest.raises(SystemExit):
        kb.main(["--kernels", "nope"])  # argparse's own usage error (exit 2)
