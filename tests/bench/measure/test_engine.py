"""The run engine: harness agreement with torch.utils.benchmark, failure isolation, no lost records, --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests_helpers import TESTS

from archbench.bench.analyze.stats import summarize
from archbench.bench.measure.engine import RunSpec, run
from archbench.bench.measure.harness import StopRule, measure
from archbench.bench.record import read_jsonl

FAST = StopRule(warmup_iters=2, warmup_s=0.0, min_iters=5, min_time_s=0.05, max_time_s=2.0)


def test_harness_median_agrees_with_torch_benchmark_timer() -> None:
    """Same CPU workload, same thread count: our median within 10% of torch.utils.benchmark.Timer's."""
    from torch.utils.benchmark import Timer

    torch.manual_seed(0)
    a, b = torch.randn(384, 384), torch.randn(384, 384)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = []
        for _ in range(3):  # the machine may be shared: take the closest of three paired measurements
            ours = summarize(measure(lambda x: torch.mm(*x), [(a, b)], StopRule(min_iters=50, min_time_s=0.5))
                             .samples_ms).p50_ms
            theirs = Timer("torch.mm(a, b)", globals={"a": a, "b": b, "torch": torch}, num_threads=1) \
                .blocked_autorange(min_run_time=0.5).median * 1e3
            ratios.append(ours / theirs)
            if abs(ratios[-1] - 1) <= 0.10:
                break
    finally:
        torch.set_num_threads(threads)
    assert min(abs(r - 1) for r in ratios) <= 0.10, f"harness/Timer median ratios: {ratios}"


def test_measure_rotates_inputs_and_honours_stop_rule() -> None:
    seen: list[int] = []
    t = measure(seen.append, [0, 1, 2], StopRule(warmup_iters=2, warmup_s=0.0, min_iters=7, min_time_s=0.0))
    assert len(t.samples_ms) == 7 and t.warmup_iters == 2
    assert seen[:3] == [0, 1, 2] and set(seen) == {0, 1, 2}


def test_other_cpu_pct_formula() -> None:
    from archbench.bench.measure.harness import CpuSnapshot, other_cpu_pct

    # 2 s of wall on 4 CPUs = 8 CPU-s of capacity; 5 CPU-s busy in all, 1 of them ours: 4 / 8 = 50% others'.
    assert other_cpu_pct(CpuSnapshot(100.0, 10.0, 0.0), CpuSnapshot(105.0, 11.0, 2.0), ncpu=4) == 50.0
    assert other_cpu_pct(CpuSnapshot(100.0, 10.0, 0.0), CpuSnapshot(100.5, 11.0, 2.0), ncpu=4) == 0.0  # clamped
    assert other_cpu_pct(None, CpuSnapshot(1.0, 1.0, 1.0)) is None
    assert other_cpu_pct(CpuSnapshot(1.0, 1.0, 1.0), CpuSnapshot(1.0, 1.0, 1.0)) is None  # zero interval


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc/stat")
def test_other_cpu_pct_sees_a_busy_neighbour() -> None:
    """Processes spinning beside us while we sleep: their CPU time shows up as others', ours does not."""
    from archbench.bench.measure.harness import cpu_snapshot, other_cpu_pct

    ncpu = os.cpu_count() or 1
    k = min(ncpu, 4)
    spin = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(k)]
    try:
        time.sleep(0.5)  # the spinners are up
        before = cpu_snapshot()
        time.sleep(1.0)
        pct = other_cpu_pct(before, cpu_snapshot())
    finally:
        for p in procs:
            p.wait()
    assert pct is not None and pct > 0.6 * 100 * k / ncpu, pct  # each spinner holds one CPU


def test_failing_cells_leave_failed_records_and_others_complete(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(TESTS)  # user factories import from the current directory, as for a user
    spec = RunSpec(
        models=["userfactories:forward_raises", "userfactories:forward_sleeps", "userfactories:forward_dies",
                "userfactories:good_with_inputs"],
        out=tmp_path / "run", runtimes=["torch"], batches=[1, 2], threads=1, rule=FAST, timeout_s=15, repetitions=2,
    )
    run(spec)
    recs = {(r["model"].split(":")[1], r["batch"]): r for r in read_jsonl(spec.out / "records.jsonl")}
    assert len(recs) == 8
    for name in ("forward_raises", "forward_sleeps", "forward_dies", "good_with_inputs"):
        assert recs[(name, 1)]["status"] == "ok", recs[(name, 1)]["error"]
        assert recs[(name, 1)]["latency_p50_ms"] > 0
    assert recs[("good_with_inputs", 2)]["status"] == "ok"
    assert recs[("forward_raises", 2)]["status"] == "failed"
    assert "ValueError: forward refuses batch > 1" in recs[("forward_raises", 2)]["error"]
    assert recs[("forward_sleeps", 2)]["status"] == "failed"
    assert "timed out after 15 s" in recs[("forward_sleeps", 2)]["error"]
    assert recs[("forward_dies", 2)]["status"] == "failed"
    assert "killed by SIGKILL" in recs[("forward_dies", 2)]["error"]
    for r in recs.values():  # provenance on every record, failed ones too
        assert r["torch_version"] and r["cpu_model"] and r["timestamp"] and r["threads"] == 1


def test_kill_mid_run_keeps_finished_cells_and_resume_skips_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "archbench.bench.cli.main", "run", "mlp_s", "gru_s", "--runtime", "torch", "--batch", "1,2",
           "--threads", "1", "--min-time", "0.05", "--min-iters", "5", "--baseline", "mlp_s", "--repetitions", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jsonl = out / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not jsonl.exists() or len(list(read_jsonl(jsonl))) < 1):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    kept = list(read_jsonl(jsonl))
    assert kept and all(r["status"] == "ok" for r in kept)

    p = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    recs = list(read_jsonl(jsonl))
    cells = [(r["model"], r["batch"]) for r in recs]
    assert sorted(set(cells)) == [("gru_s", 1), ("gru_s", 2), ("mlp_s", 1), ("mlp_s", 2)]
    assert len(cells) == len(set(cells)), "resume re-ran a finished cell"
    assert (out / "records.csv").exists() and (out / "report.md").exists()
    # --baseline: gru_s against mlp_s cell by cell, in the summary and the report (records from both invocations)
    for b in (1, 2):
        assert f"gru_s torch fp32 b{b}: " in p.stdout and "x the p50 of mlp_s (95% CI" in p.stdout, p.stdout
    assert "**Against the baseline mlp_s**" in (out / "report.md").read_text()


def test_existing_output_needs_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "records.jsonl").write_text(json.dumps({"model": "x"}) + "\n")
    from archbench.bench.cli.main import main

    assert main(["run", "mlp_s", "--out", str(out)]) == 2


@pytest.mark.slow
def test_default_style_run_torch_and_onnxruntime(tmp_path: Path) -> None:
    """One model through both default runtimes: the export is verified, the report names the faster runtime."""
    spec = RunSpec(models=["mlp_s"], out=tmp_path / "run", batches=[1], threads=1, rule=FAST, repetitions=2)
    recs = run(spec)
    by_rt = {r.runtime: r for r in recs}
    assert set(by_rt) == {"torch", "onnxruntime"}
    assert all(r.status == "ok" for r in recs), [r.error for r in recs]
    ort = by_rt["onnxruntime"]
    assert ort.max_abs_err is not None and ort.max_abs_err < 1e-4  # exported graph agrees with PyTorch
    assert ort.size_mib > 0 and ort.load_ms > 0 and ort.peak_rss_mib > 0
    assert by_rt["torch"].macs == ort.macs > 0
    assert len(by_rt["torch"].samples_ms) == by_rt["torch"].n_samples >= 5

    from archbench.bench.report.markdown import markdown

    md = markdown(recs)
    assert "## Fastest runtime per model" in md and "faster than" in md


@pytest.mark.slow
def test_onnx_export_happens_outside_the_measuring_workers(tmp_path: Path) -> None:
    """The engine exports first, in an artifacts worker of its own (which also makes the fp16 variant): every ONNX
    Runtime cell loads those files, so no measuring process carries the exporter's or the converter's libraries."""
    out = tmp_path / "run"
    spec = RunSpec(models=["mlp_s"], out=out, runtimes=["onnxruntime"], precisions=["fp32", "fp16"], batches=[1],
                   threads=1, rule=FAST)
    recs = {r.precision: r for r in run(spec)}
    assert all(r.status == "ok" for r in recs.values()), [r.error for r in recs.values()]
    assert (out / "logs" / "mlp_s_artifacts.log").exists()
    art = out / "artifacts" / "mlp_s"
    assert json.loads((art / "source.json").read_text())["exporter"] == "dynamo"
    assert json.loads((art / "variant_onnxruntime_fp16.json").read_text())["path"].endswith("model.fp16.onnx")
    for r in recs.values():
        assert "exported with the dynamo exporter" in r.warning, r.warning
        assert "torch was imported" not in r.warning
    fp32, fp16 = recs["fp32"].peak_rss_mib, recs["fp16"].peak_rss_mib
    assert abs(fp32 - fp16) < 20, (fp32, fp16)  # same libraries resident in both; the model is 0.3 MiB
    # Neither holds torch (~170 MiB resident) nor onnx or the quantizer: the bare runtime is ~70 MiB here.
    assert max(fp32, fp16) < 150, (fp32, fp16)


def _workers() -> set[int]:
    """PIDs of live archbench worker processes (their command line carries worker.BOOT)."""
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"archbench.bench.modes.worker import main" in cmd:
                pids.add(int(d.name))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143)])  # SIGINT, SIGHUP and each phase: tests/test_faults.py
def test_a_signal_stops_every_worker_and_keeps_finished_repetitions(tmp_path: Path, sig: int, code: int) -> None:
    """SIGTERM (CI timeouts, container stops), SIGHUP and Ctrl-C mid-run: no worker survives the parent, every
    repetition that finished is on disk, the exit code is 128 + the signal, and --resume finishes the rest."""
    before = _workers()
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "archbench.bench.cli.main", "run", "mlp_s", "--runtime", "torch",
           "--repetitions", "3", "--threads", "1", "--min-time", "0.3", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reps = out / "repetitions.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (reps.exists() and reps.read_text().count("\n") >= 1):
        time.sleep(0.05)
    assert reps.exists(), proc.stderr.read() if proc.poll() is not None else "no repetition finished in 120 s"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "interrupted by" in err and "--resume" in err
    time.sleep(0.5)
    assert not (_workers() - before), "a worker outlived its parent"
    kept = reps.read_text().count("\n")
    assert kept >= 1
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from archbench.bench.record import read_records

    (rec,) = read_records(out / "records.jsonl")
    assert rec.repetitions == 3 and len(read_records(reps)) == 3  # the kept ones were not measured again


def test_a_rounds_timing_repetitions_share_one_worker_per_runtime_and_survive_its_loss(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    """Repetitions after the first (timing only) run in one long-lived worker per runtime, fed job by job in the
    round's order; a job that kills that worker or runs past its timeout fails only its own cell, and the jobs
    after it still run (in one-job workers, as without the pool). Each job's output lands in its own log."""
    from archbench.bench.cell import Job, canonical_knobs
    from archbench.bench.measure import dispatch

    monkeypatch.chdir(TESTS)  # user factories import from the current directory, as for a user
    out = tmp_path / "run"
    spawned = []
    real_spawn = dispatch._spawn

    def counting_spawn(*a, **k):
        proc = real_spawn(*a, **k)
        spawned.append(bool(k.get("env")))  # True: a pool worker
        return proc

    monkeypatch.setattr(dispatch, "_spawn", counting_spawn)
    spec = RunSpec(models=["x"], out=out, runtimes=["torch"], batches=[1, 2], threads=1, rule=FAST, timeout_s=8)

    def job(model: str) -> Job:
        cells = tuple(spec.cell(f"userfactories:{model}", "torch", "fp32", b, knobs={}) for b in (1, 2))
        return Job(cells=cells, workdir=str(out / "artifacts" / model), rule=FAST, repetition=1)

    jobs = [job("good_with_inputs"), job("forward_dies"), job("forward_sleeps"), job("good_with_inputs")]
    assert all(dispatch.poolable(j) for j in jobs) and canonical_knobs({}) == jobs[0].head.knobs
    assert not dispatch.poolable(Job(cells=jobs[0].cells, workdir="w", repetition=0))  # memory: a fresh process
    got = []
    dispatch.Local(out, 8).run_round(jobs, got.append)
    status = [(r.model.split(":")[1], r.batch, r.status, r.error[:60]) for r in got]
    assert [s[:3] for s in status] == [
        ("good_with_inputs", 1, "ok"), ("good_with_inputs", 2, "ok"),
        ("forward_dies", 1, "ok"), ("forward_dies", 2, "failed"),
        ("forward_sleeps", 1, "ok"), ("forward_sleeps", 2, "failed"),
        ("good_with_inputs", 1, "ok"), ("good_with_inputs", 2, "ok")], status
    assert "killed by SIGKILL" in got[3].error and "timed out after 8 s" in got[5].error
    assert all(r.rep_rounds == [1] for r in got if r.ok)
    # one pool worker; once it is lost, the round's later jobs of its kind get one-job workers (the lost jobs had
    # nothing left to retry: batch 2 was their last cell)
    assert spawned == [True, False, False], spawned
    assert "forward refuses" not in (out / "logs" / "userfactories_forward_dies_torch_fp32.log").read_text()
    assert "SIGKILL" in got[3].error and "userfactories_forward_dies_torch_fp32.log" in got[3].error
