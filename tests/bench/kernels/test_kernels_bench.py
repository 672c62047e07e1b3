"""archbench kernels (bench/kernels/) and the shared peaks (bench/machine/peaks.py): the sweep
plumbing on CPU with a wall-clock timer, the measured peaks, and the no-GPU CLI path."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest
import torch

from archbench.bench.cli import kernels as kb
from archbench.bench.env import environment
from archbench.bench.kernels import review as kernel_review
from archbench.bench.kernels.cases import (
    KERNELS,
    Bench,
    Impl,
    ShapeError,
    Work,
    format_shape,
    parse_shape,
    parse_shapes,
    plan,
)
from archbench.bench.kernels.output import format_rows, kernel_environment, write_outputs
from archbench.bench.kernels.sweep import Row, TimeBudget, measure_bench, run_sweep
from archbench.bench.machine.peaks import Peaks, measure_peaks, wall_timer

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


def test_one_peaks_type_for_roofline_and_kernels() -> None:
    from archbench.bench.analyze import roofline
    from archbench.bench.machine import peaks

    assert roofline.Peaks is peaks.Peaks


def test_sweep_rows_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every impl becomes a row, forward and forward+backward from one plan; unavailable SDPA backends are skipped
    rows with a reason, not crashes; baselines carry triton's speed-up with an interval."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # CPU tensors -> the kernels' reference fallback
    peaks = measure_peaks("cpu", timer=wall_timer, copy_mib=4, matmul_n=64, reps=2)
    specs = plan(list(KERNELS), TINY_SHAPES, quick=True, directions=("fwd", "fwd+bwd"))
    assert [(s.kernel, s.direction) for s in specs] == [
        ("rms_norm", "fwd"), ("rms_norm", "fwd+bwd"), ("conv_bn_act", "fwd"), ("attention", "fwd"),
        ("attention", "fwd+bwd")]  # conv is inference-only: forward once
    rows = run_sweep(specs, dtype="fp32", device="cpu", timer=wall_timer, warmup=1, repeats=6,
                     compile_baselines=False, peaks=peaks)
    by_impl = {(r.kernel, r.direction, r.impl): r for r in rows}
    for kernel, direction in {(s.kernel, s.direction) for s in specs}:
        row = by_impl[(kernel, direction, "triton")]
        where = f"{kernel} {direction}"
        assert row.status == "ok", f"{where}: {row.error}"
        assert row.median_ms > 0 and row.metric > 0 and row.pct_of_peak is not None and row.formula, where
        assert row.min_ms <= row.median_ms and row.repeats == 6 and row.rounds == 6, where
        assert row.median_lo_ms <= row.median_hi_ms, where  # 6 rounds: the interval exists
        assert row.max_abs_err < 1e-4 and row.speedup is None, where
        peak = peaks.bytes_per_s if row.metric_unit == "GB/s" else peaks.flops_per_s
        assert row.pct_of_peak == pytest.approx(100 * row.work / (row.median_ms * 1e-3) / peak), where
    assert by_impl[("rms_norm", "fwd", "triton")].shape == "8x24"
    eager = by_impl[("rms_norm", "fwd", "eager")]
    assert eager.speedup > 0 and eager.speedup_lo <= eager.speedup <= eager.speedup_hi
    assert by_impl[("attention", "fwd", "sdpa-math")].status == "ok"
    efficient = by_impl[("attention", "fwd", "sdpa-efficient")]  # a CUDA-only backend on a CPU tensor
    assert efficient.status == "skipped" and efficient.error
    cudnn = by_impl[("conv_bn_act", "fwd", "cudnn-conv")]  # the conv alone, checked against its own reference
    assert cudnn.status == "ok" and cudnn.max_abs_err < 1e-4 and cudnn.speedup is not None

    table = format_rows(rows)
    assert "4*B*H*N^2*d / 2 (causal) * 3.5 (fwd+bwd)" in table and "% peak" in table
    assert "triton speed-up" in table and "(ours)" in table

    env = kernel_environment(budget_s=None, rounds=6)
    paths = write_outputs(tmp_path, rows, env, Row)
    assert [p.name for p in paths] == ["kernels.csv", "kernels.json", "kernels.md"]
    with open(tmp_path / "kernels.csv") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == len(rows) and "triton_version" in records[0] and "speedup_lo" in records[0]
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["environment"]["torch_version"] == torch.__version__ and len(data["rows"]) == len(rows)
    md = (tmp_path / "kernels.md").read_text()
    assert "## attention" in md and "| torch_version |" in md and "triton speed-up" in md


def test_attention_tile_candidates_are_rows_beside_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """On sm_90 (faked here) candidate tiles are timed as "triton[...]" rows under tile_config, and checked."""
    from archbench.bench.kernels import cases

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(cases, "_candidates_apply", lambda device, dtype: True)
    bench = cases.build_bench(cases.BenchSpec("attention", (1, 1, 16, 128, False), "fwd+bwd"), "fp32", "cpu", False)
    names = [n for n in bench.impls if n.startswith("triton[")]
    assert names == ["triton[fwd BLOCK_N=128]", "triton[bwd 128-tall, 8 warps]"]
    rows = {r.impl: r for r in measure_bench(bench, "fp32", wall_timer, 0, 6, None, 1e-3)}
    assert all(rows[n].status == "ok" and rows[n].max_abs_err < 1e-5 for n in names), rows
    causal = cases.build_bench(cases.BenchSpec("attention", (1, 1, 16, 128, True), "fwd"), "fp32", "cpu", False)
    assert not [n for n in causal.impls if n.startswith("triton[")]  # BLOCK_N = 128 spills causal; no bwd in fwd


def _fixed_bench(times_ms: dict[str, float], compiles: tuple[str, ...] = ()) -> Bench:
    """A bench whose impls return zeros and take ``times_ms[name]`` according to ``_FixedTimer``."""
    out = torch.zeros(3)
    bench = Bench("rms_norm", "fixed", "fwd", Work("GB/s", 1e6, "1 MB"), lambda: out)
    for name in times_ms:
        def fn() -> torch.Tensor:
            return out

        fn.ms = times_ms[name]  # type: ignore[attr-defined]
        bench.impls[name] = Impl(fn, ours=name == "triton", compiles=name in compiles)
    return bench


class _FixedTimer:
    """A Timer reporting each fn's fixed ``ms`` (no waiting), or sleeping ``sleep_s`` per call when set."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s
        self.blocks: list[int] = []

    def __call__(self, fn, warmup: int, repeats: int) -> list[float]:  # noqa: ANN001
        for _ in range(warmup + repeats):
            fn()
            if self.sleep_s:
                time.sleep(self.sleep_s)
        self.blocks.append(repeats)
        return [fn.ms] * repeats


def test_speedup_is_paired_per_round_with_an_interval() -> None:
    """speed-up = baseline time / triton time per round; 6 rounds give the [min, max] interval; order shuffled."""
    bench = _fixed_bench({"triton": 2.0, "eager": 5.0, "slow": 1.0})
    rows = {r.impl: r for r in measure_bench(bench, "fp32", _FixedTimer(), warmup=0, repeats=12, peaks=None,
                                             tolerance=1e-3, rounds=6)}
    assert rows["triton"].speedup is None and rows["triton"].median_ms == 2.0
    assert rows["eager"].speedup == pytest.approx(2.5) and rows["eager"].speedup_lo == pytest.approx(2.5)
    assert rows["slow"].speedup == pytest.approx(0.5) and rows["slow"].speedup_hi == pytest.approx(0.5)
    assert all(r.repeats == 12 and r.rounds == 6 and r.median_lo_ms == r.median_hi_ms == r.median_ms
               for r in rows.values())
    few = {r.impl: r for r in measure_bench(_fixed_bench({"triton": 1.0, "eager": 3.0}), "fp32", _FixedTimer(),
                                            warmup=0, repeats=5, peaks=None, tolerance=1e-3, rounds=5)}
    assert few["eager"].speedup == pytest.approx(3.0) and few["eager"].speedup_lo is None  # 5 rounds: no 95% bound


def test_block_median_interval_covers_the_median_at_least_95_percent() -> None:
    """The interval construction itself: [min, max] of 6 block medians covers the true median 1 - 2/64 = 96.9%."""
    import numpy as np

    from archbench.bench.kernels.sweep import _interval

    rng = np.random.default_rng(0)
    trials = 2000
    covered = 0
    for _ in range(trials):
        lo, hi = _interval(list(rng.lognormal(0.0, 0.5, size=6)))  # true median exp(0) = 1
        covered += lo <= 1.0 <= hi
    assert 0.95 <= covered / trials <= 0.985, covered / trials


def test_time_budget_shrinks_blocks_then_skips() -> None:
    """A bench gets its share: blocks shrink (noted on the row); a compile that cannot fit and a spent budget skip."""
    timer = _FixedTimer(sleep_s=0.01)
    budget = TimeBudget(0.6)
    rows = measure_bench(_fixed_bench({"triton": 1.0, "eager": 2.0}), "fp32", timer, warmup=0, repeats=60,
                         peaks=None, tolerance=1e-3, rounds=6, budget=budget)
    assert all(r.status == "ok" for r in rows)
    assert max(timer.blocks) < 10 and all("time budget" in r.note for r in rows), timer.blocks  # 60/6 = 10 unbudgeted
    assert budget.elapsed() < 1.5

    budget = TimeBudget(100.0)
    budget.longest_compile_s = 1000.0  # a torch.compile seen earlier took longer than what is left
    rows = {r.impl: r for r in measure_bench(_fixed_bench({"triton": 1.0, "compile": 1.0}, compiles=("compile",)),
                                             "fp32", _FixedTimer(), 0, 6, None, 1e-3, budget=budget)}
    assert rows["triton"].status == "ok"
    assert rows["compile"].status == "skipped" and "torch.compile took 1000 s" in rows["compile"].error

    specs = plan(["rms_norm"], {"rms_norm": [(4, 8), (4, 16)]}, quick=True, directions=("fwd",))
    rows = run_sweep(specs, "fp32", "cpu", _FixedTimer(), 0, 6, False, None, budget_s=0.5)
    assert rows and all(r.status == "skipped" and "time budget of 0.5 s spent" in r.error for r in rows)
    with pytest.raises(ValueError):
        TimeBudget(0)


@pytest.mark.parametrize("spec, expected", [
    ("rms_norm=16384x4096,2048x16384", {"rms_norm": [(16384, 4096), (2048, 16384)]}),
    ("conv_bn_act=32x64x56x56x64x3", {"conv_bn_act": [(32, 64, 56, 56, 64, 3, 1, 1)]}),
    ("conv_bn_act=32x256x56x56x64x1x2x0", {"conv_bn_act": [(32, 256, 56, 56, 64, 1, 2, 0)]}),
    ("attention=4x32x8192x128:causal,1x2x64x32", {"attention": [(4, 32, 8192, 128, True), (1, 2, 64, 32, False)]}),
])
def test_parse_shapes(spec: str, expected: dict) -> None:
    assert parse_shapes([spec]) == expected
    for kernel, shapes in expected.items():
        for shape in shapes:
            assert parse_shape(kernel, format_shape(kernel, shape)) == shape, "format_shape inverts parse_shape"


@pytest.mark.parametrize("spec", ["rms_norm", "rms_norm=", "rms_norm=4096", "rms_norm=4x0", "attention=1x2x3x4:x",
                                  "conv_bn_act=1x2x3", "rms_norm=4096x4096:causal", "nope=1x2", "rms_norm=axb"])
def test_parse_shapes_errors_name_the_syntax(spec: str) -> None:
    with pytest.raises(ShapeError, match="expected|unknown kernel"):
        parse_shapes([spec])


def test_cli_plan_shapes_and_review(capsys: pytest.CaptureFixture[str]) -> None:
    """--plan lists the benches; --shapes picks the kernels it names; --review brings its shapes and budget."""
    assert kb.main(["--plan", "--shapes", "rms_norm=8x24", "attention=1x2x16x8:causal"]) == 0
    out = capsys.readouterr().out
    assert "4 benches, no time budget" in out and "conv_bn_act" not in out
    assert "rms_norm     8x24" in out and "attention    1x2x16x8:causal" in out and "fwd+bwd" in out
    assert kb.main(["--plan", "--review", "--direction", "fwd"]) == 0
    out = capsys.readouterr().out
    assert f"budget {kb.REVIEW_BUDGET_S:g} s" in out and "4x32x8192x128:causal" in out and "fwd+bwd" not in out
    assert kb.main(["--plan", "--kernels", "attention", "--shapes", "rms_norm=8x24"]) == 2
    assert "not in --kernels" in capsys.readouterr().err
    assert kb.main(["--plan", "--shapes", "rms_norm=8"]) == 2
    assert "expected MxN" in capsys.readouterr().err


def test_check_targets() -> None:
    """Issue 20's targets from rows: RMSNorm fwd % of copy bandwidth, attention d128 bf16 vs flash, conv at batch >= 8."""
    def row(kernel, shape, impl, direction="fwd", **kw):  # noqa: ANN001, ANN202
        base = dict(kernel=kernel, case=shape, shape=shape, direction=direction, impl=impl, dtype="bf16",
                    status="ok", error="", pct_of_peak=None, speedup=None, speedup_lo=None, speedup_hi=None)
        return {**base, **kw}

    rows = [row("rms_norm", "16384x4096", "triton", pct_of_peak=87.0),
            row("rms_norm", "4096x4096", "triton", pct_of_peak=80.0),
            row("rms_norm", "4096x4096", "triton", direction="fwd+bwd", pct_of_peak=50.0),  # no target
            row("attention", "4x32x8192x128:causal", "triton"),
            row("attention", "4x32x8192x128:causal", "sdpa-flash", speedup=0.85, speedup_lo=0.8, speedup_hi=0.9),
            row("attention", "8x16x2048x64", "triton"),  # d = 64: no target
            row("conv_bn_act", "32x64x56x56x64x3x1x1", "triton"),
            row("conv_bn_act", "32x64x56x56x64x3x1x1", "eager-unfused", speedup=1.4),
            row("conv_bn_act", "32x64x56x56x64x3x1x1", "cudnn-conv", status="skipped", error="time budget"),
            row("conv_bn_act", "1x64x56x56x64x3x1x1", "triton")]  # batch 1: no target
    checks = kernel_review.check_targets(rows)
    got = [(c.target.split()[0], c.case, c.met) for c in checks]
    assert got == [("RMSNorm", "16384x4096", True), ("RMSNorm", "4096x4096", False),
                   ("attention", "4x32x8192x128:causal", False), ("conv+BN+ReLU", "32x64x56x56x64x3x1x1", True),
                   ("conv+BN+ReLU", "32x64x56x56x64x3x1x1", None)]
    assert "time budget" in checks[-1].note
    table = kernel_review.format_targets(checks)
    assert "0.85x [0.80, 0.90]" in table and "**no**" in table and "not measured" in table


def test_review_on_cpu_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU person's one command, its plumbing on the CPU: kernels.md/csv/json, targets, environment, README."""
    code = kernel_review.main(["--device", "cpu", "--skip-tests", "--no-compile", "--budget-s", "30", "--out",
                               str(tmp_path), "--dtype", "fp32", "--shapes", "rms_norm=8x32",
                               "attention=1x1x16x128", "conv_bn_act=8x4x6x6x8x3"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("README.md", "kernels.md", "kernels.csv", "kernels.json", "targets.md", "environment.json"):
        assert (tmp_path / name).exists(), name
        assert str(tmp_path / name) in out, f"{name} is not named in the output"
    targets = (tmp_path / "targets.md").read_text()
    assert "RMSNorm fwd" in targets and "cuDNN conv alone" in targets
    assert "SDPA flash" not in targets  # the attention target is stated for bf16; this plumbing run is fp32
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["review_steps"][0]["name"] == "archbench kernels --review" and "torch_version" in env
    assert "--device cpu" in (tmp_path / "README.md").read_text()


def test_review_without_a_gpu_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("there is a GPU")
    assert kernel_review.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_kernel_environment_extends_the_shared_one_without_mutating_it() -> None:
    shared = dict(environment())
    env = kernel_environment(mode="x")
    assert env["mode"] == "x" and env["timestamp"] and "gpu_capability" in env and "cuda_version" in env
    assert {k: env[k] for k in shared} == shared
    assert environment() == shared  # the cached dict is untouched


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_cli_without_gpu_runs_interpreter_checks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # --shapes pick the kernels and reach the interpreter checks (N = 300: the chunked RMSNorm path there)
    code = kb.main(["--shapes", "rms_norm=2x300", "attention=1x2x37x16:causal", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mean nothing" in out and "interpreter checks passed" in out
    assert "M=2 N=300" in out and "Nq=37 Nk=37 d=16 causal" in out and "conv_bn_act" not in out
    assert kb.main(["--shapes", "attention=4x32x8192x128"]) == 2  # GPU-sized: refused, not hours of numpy
    assert "too large for the Triton interpreter" in capsys.readouterr().err
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["environment"]["mode"].startswith("interpreter") and all(r["status"] == "ok" for r in data["rows"])


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert kb.main(["--repeats", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archbench kernels: error:") and "\n" not in err
    with pytest.raises(SystemExit):
        kb.main(["--kernels", "nope"])  # argparse's own usage error (exit 2)
