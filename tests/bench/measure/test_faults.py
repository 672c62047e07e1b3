"""Faults a run meets in the wild: a full disk, a read-only target, a partial last line, a signal in every phase.
Each test asserts the same guarantees (README "What you can rely on"): one error line naming the path and the OS
reason with exit 3 (never 1, which means a check failed), no half-written file, no finished record lost, no worker
left running, and --resume finishes the rest.

A real full disk is a 256 KiB tmpfs when the tests run as root and may mount (the dev VM, CI); elsewhere the same
tests patch the writer to raise ENOSPC."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_helpers import FIX, TESTS

from archbench.bench.cli.main import main
from archbench.bench.record import Record, append_jsonl, read_records

RUN = FIX / "synthetic_run.jsonl"


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, readonly: bool = False) -> Iterator[bool]:
    """Mount a small tmpfs at ``path`` (True), or yield False where this process may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    opts = f"size={size}" + (",ro" if readonly else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]) if args else None)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("archbench: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_report_on_a_full_disk_is_exit_3_and_leaves_the_old_report_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "full"
    with _tmpfs(out, "256k") as mounted:
        (out / "report.md").write_text("the previous report\n")
        filler = out / "filler"
        if mounted:  # leave ~8 KiB free: the report's CSV fits, its markdown does not
            with open(filler, "wb") as fh, contextlib.suppress(OSError):
                fh.write(b"x" * (256 * 1024 - 8 * 1024))
        else:
            from archbench.bench import atomic

            monkeypatch.setattr(atomic.Path, "write_bytes", _enospc)
        code = main(["report", str(RUN), "--no-measure", "--no-plots", "--no-layers", "--out", str(out)])
        err = capsys.readouterr().err
        line = _one_error_line(err)
        assert code == 3, err
        assert "No space left on device" in line and str(out) in line, line
        assert (out / "report.md").read_text() == "the previous report\n"  # atomic: the old one, whole
        assert not [p for p in out.iterdir() if ".tmp" in p.name], list(out.iterdir())  # no temp file left


def test_read_only_targets_are_exit_3_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    with _tmpfs(ro, "64k", readonly=True) as mounted:
        if not mounted:
            ro.chmod(0o555)
        for argv in (["report", str(RUN), "--no-measure", "--no-plots", "--no-layers", "--out", str(ro)],
                     ["compare", str(RUN), str(RUN), "--md", str(ro / "cmp.md"), "--noise", "0"],
                     ["report", str(RUN), "--no-measure", "--out", str(ro / "sub")],
                     ["doctor", "--quick", "--json", str(ro / "d.json"), "--no-save"]):
            code = main(argv)
            err = capsys.readouterr().err
            line = _one_error_line(err)
            assert code == 3, (argv, err)
            assert str(ro) in line and ("Read-only file system" in line or "Permission denied" in line), line


def test_out_that_is_a_file_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["report", str(RUN), "--no-measure", "--no-plots", "--no-layers", "--out", str(f)]) == 3
    assert str(f) in _one_error_line(capsys.readouterr().err)


def test_a_partial_last_line_is_ended_named_and_nothing_is_lost(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "records.jsonl"
    recs = [Record(model=f"m{i}", runtime="torch", precision="fp32", batch=1, device="cpu", threads=1)
            for i in range(3)]
    append_jsonl(path, recs[0])
    with open(path, "ab") as fh:
        fh.write(b'{"model": "half a rec')  # what a kill or a full disk mid-write leaves
    append_jsonl(path, recs[1])
    assert "line 2 is a partial record" in capsys.readouterr().err
    append_jsonl(path, recs[2])
    assert [r.model for r in read_records(path)] == ["m0", "m1", "m2"]
    assert "line 2: not a JSON record" in capsys.readouterr().err


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_finished_records_and_resume_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The disk fills while the second cell's record is appended: exit 3 naming records.jsonl, the first cell's
    record is on disk, and --resume (disk freed) measures only what is missing."""
    from archbench.bench.measure import engine

    real, calls = engine.append_jsonl, []

    def flaky(path: Path, rec: Record) -> None:
        calls.append(path.name)
        if path.name == "records.jsonl" and calls.count("records.jsonl") == 2:
            _enospc(path)
        real(path, rec)

    monkeypatch.setattr(engine, "append_jsonl", flaky)
    out = tmp_path / "run"
    argv = ["run", "mlp_s", "--runtime", "torch", "--batch", "1,2", "--repetitions", "1", "--threads", "1",
            "--min-time", "0.05", "--out", str(out)]
    assert main(argv) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert "records.jsonl" in line and "No space left on device" in line
    kept = read_records(out / "records.jsonl")
    assert [r.batch for r in kept] == [1]
    monkeypatch.setattr(engine, "append_jsonl", real)
    assert main([*argv, "--resume"]) == 0
    recs = read_records(out / "records.jsonl")
    assert sorted(r.batch for r in recs) == [1, 2] and all(r.status == "ok" for r in recs)


def _processes_of(tag: str) -> set[int]:
    """PIDs of live processes carrying ``ARCHBENCH_TEST_TAG=tag`` in their environment: the run and every worker
    it started (they inherit it), and nothing another job on this machine runs."""
    needle = f"ARCHBENCH_TEST_TAG={tag}".encode()
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.add(int(d.name))
    return pids


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    pytest.fail(f"no {what} within {timeout} s")


PHASES = {
    # phase: (extra run flags, the moment to send the signal)
    "export": (["resnet_s", "--runtime", "onnxruntime"],
               lambda out, err: (out / "logs" / "resnet_s_artifacts.log").exists()),
    "calibration": (["mlp_s", "--runtime", "onnxruntime", "--precision", "int8-static", "--calib-batches", "400"],
                    lambda out, err: "int8-static variant" in _read(out / "logs" / "mlp_s_artifacts.log")),
    "measuring": (["mlp_s", "--runtime", "torch", "--batch", "1,2"],
                  lambda out, err: _read(out / "repetitions.jsonl").count("\n") >= 1),
    "reporting": (["mlp_s", "--runtime", "torch"], lambda out, err: "writing reports" in err()),
}


def _read(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.parametrize("phase, sig, ignored", [
    ("export", signal.SIGTERM, False), ("calibration", signal.SIGINT, False), ("measuring", signal.SIGHUP, False),
    ("reporting", signal.SIGTERM, False),
    ("measuring", signal.SIGINT, True),  # started as a shell's background job does: SIGINT ignored on entry
])
def test_a_signal_in_any_phase_stops_every_worker_and_loses_nothing(tmp_path: Path, phase: str, sig: int,
                                                                    ignored: bool) -> None:
    tag = f"{os.getpid()}-{phase}-{time.monotonic_ns()}"
    env = {**os.environ, "ARCHBENCH_TEST_TAG": tag}
    flags, moment = PHASES[phase]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "archbench.bench.cli.main", "run", *flags, "--repetitions", "2", "--threads", "1",
           "--min-time", "0.2", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=TESTS, env=env,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored else None)
    chunks: list[bytes] = []
    os.set_blocking(proc.stderr.fileno(), False)  # type: ignore[union-attr]

    def err() -> str:
        with contextlib.suppress(BlockingIOError, TypeError):
            data = proc.stderr.read()  # type: ignore[union-attr]
            if data:
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    _wait_for(lambda: moment(out, err), proc, f"the {phase} phase")
    finished = [r.key() for r in read_records(out / "records.jsonl")] if (out / "records.jsonl").exists() else []
    proc.send_signal(sig)
    proc.wait(timeout=60)
    os.set_blocking(proc.stderr.fileno(), True)  # type: ignore[union-attr]
    text = err() + proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    assert proc.returncode == 128 + sig, text[-3000:]
    assert "Traceback" not in text and "interrupted by" in text, text[-3000:]
    time.sleep(0.5)
    assert not _processes_of(tag), f"a worker outlived its parent ({phase})"
    if (out / "records.jsonl").exists():
        kept = [r.key() for r in read_records(out / "records.jsonl")]
        assert set(finished) <= set(kept)
    if phase == "reporting" or ignored:  # the records are complete (reporting) or the case is SIGINT's (covered)
        return
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600, cwd=TESTS)
    assert done.returncode == 0, done.stderr[-3000:]
    recs = read_records(out / "records.jsonl")
    assert recs and all(r.status == "ok" for r in recs), [r.error for r in recs]
    assert json.loads((out / "records.jsonl").read_text().splitlines()[-1])["status"] == "ok"


def test_nan_outputs_are_said_so_not_called_an_export_disagreement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(TESTS)
    out = tmp_path / "nan"
    main(["run", "userfactories:nan_out", "--runtime", "torch,onnxruntime", "--repetitions", "1", "--threads", "1",
          "--min-time", "0.02", "--out", str(out)])
    capsys.readouterr()
    recs = {r.runtime: r for r in read_records(out / "records.jsonl")}
    assert recs["torch"].ok and "the outputs are not finite (NaN/inf)" in recs["torch"].warning
    assert recs["onnxruntime"].status == "failed"
    assert "the PyTorch model's own outputs are not finite" in recs["onnxruntime"].error
    assert "disagree" not in recs["onnxruntime"].error
