"""`--cluster` (archbench.bench.measure.cluster.dispatcher): the engine's jobs as Ray tasks, one node each, on a multi-node Ray
cluster started on this one machine (ray.cluster_utils: every node shares these CPUs, so no timing here means
anything; what is tested is where and when things ran, and what reached the driver's files).

The nodes: a head labelled pool=solo and two nodes with the custom resource wide, each with one archbench_slot and
no CPU; the lost-node test adds two nodes of its own. Cells are mlp_s / mlp_m, 0.05 s timed loops, 1 thread.
The tests that need Ray skip without it; the no-Ray error is checked in any case (Ray made unimportable).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archbench.bench.record import read_records

HAS_RAY = importlib.util.find_spec("ray") is not None
HAS_CLIENT = HAS_RAY and importlib.util.find_spec("grpc") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray not installed (pip install 'archbench[ray]')")
ARCHBENCH = [sys.executable, "-m", "archbench.bench.cli.main"]
FAST = ["--min-time", "0.05", "--min-iters", "5", "--threads", "1"]
SLOT = "archbench_slot"
MB = 2**20


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*ARCHBENCH, *args], capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """(Cluster, node dir, ray:// address or None): 3 nodes, each with one slot and no CPU for other Ray work."""
    from ray.cluster_utils import Cluster

    node_dir = tmp_path_factory.mktemp("nodes")
    old = os.environ.get("ARCHBENCH_NODE_DIR")
    os.environ["ARCHBENCH_NODE_DIR"] = str(node_dir)  # inherited by the raylets, their workers and ours
    head = {"num_cpus": 0, "resources": {SLOT: 1}, "labels": {"pool": "solo"}, "object_store_memory": 80 * MB}
    client = None
    if HAS_CLIENT:
        port = _free_port()
        head["ray_client_server_port"] = port
        client = f"ray://127.0.0.1:{port}"
    c = Cluster(initialize_head=True, connect=False, head_node_args=head)
    for _ in range(2):
        c.add_node(num_cpus=0, resources={SLOT: 1, "wide": 1}, object_store_memory=80 * MB)
    c.wait_for_nodes()
    try:
        yield c, node_dir, client
    finally:
        c.shutdown()
        for pid in _workers(node_dir):  # a worker orphaned by a removed node (it dies at its next write anyway)
            os.kill(pid, signal.SIGKILL)
        if old is None:
            os.environ.pop("ARCHBENCH_NODE_DIR", None)
        else:
            os.environ["ARCHBENCH_NODE_DIR"] = old


def _workers(node_dir: Path) -> list[int]:
    """Measuring workers started by this module's clusters (their environment names its node dir)."""
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and b"archbench.bench.modes.worker import main" in (p / "cmdline").read_bytes():
                if f"ARCHBENCH_NODE_DIR={node_dir}".encode() in (p / "environ").read_bytes().split(b"\0"):
                    pids.append(int(p.name))
        except OSError:
            continue
    return pids


def _task_windows(recs: list) -> dict[str, list[tuple[float, float]]]:
    """Per node, each task's window: from when it took the node's slot to its last record."""
    tasks: dict[tuple[str, float], float] = {}
    for r in recs:
        key = (r.node_id, r.node_start_unix_s)
        tasks[key] = max(tasks.get(key, 0.0), r.node_end_unix_s)
    out: dict[str, list[tuple[float, float]]] = {}
    for (node, start), end in sorted(tasks.items(), key=lambda kv: kv[0][1]):
        out.setdefault(node, []).append((start, end))
    return out


# ------------------------------------------------------------------------------------------------ errors


def test_without_ray_cluster_is_one_error_line() -> None:
    code = ("import sys; sys.modules['ray'] = None\nfrom archbench.bench.cli.main import main\n"
            "sys.exit(main(['run', 'mlp_s', '--runtime', 'torch', '--cluster', 'local', '--out', sys.argv[1]]))")
    proc = subprocess.run([sys.executable, "-c", code, "/nonexistent/never-written"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["archbench: error: --cluster needs Ray: pip install 'archbench[ray]'"]


@needs_ray
@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "cannot reach 127.0.0.1:1 (Connection refused)"),
    ("ray://127.0.0.1:2", "cannot reach 127.0.0.1:2 (Connection refused)"),
    ("no-such-host.invalid:6379", "cannot reach no-such-host.invalid:6379"),
    ("garbage", "expected local, auto, HOST:PORT or ray://HOST:PORT"),
])
def test_an_unreachable_cluster_is_one_line_in_seconds(address: str, message: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Not after Ray's minute of connection retries: a TCP connect decides first."""
    import time

    from archbench.bench.cli.main import main

    t = time.monotonic()
    assert main(["run", "mlp_s", "--runtime", "torch", "--cluster", address, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert time.monotonic() - t < 30


@needs_ray
def test_targets_no_node_offers_and_target_without_cluster_are_usage_errors(cluster, tmp_path: Path) -> None:
    c, _, _ = cluster
    proc = _cli("run", "mlp_s", "--runtime", "torch", "--cluster", c.address, "--target", "gpu-h100",
                "--out", str(tmp_path / "a"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        f"archbench: error: --cluster {c.address}: no live node offers {SLOT}=1 and gpu-h100; start"), proc.stderr
    proc = _cli("run", "mlp_s", "--target", "gpu-h100", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "--target 'gpu-h100' picks cluster nodes: it needs --cluster" in proc.stderr
    assert not (tmp_path / "a" / "records.jsonl").exists()


# ------------------------------------------------------------------------------------------------ dispatch


@needs_ray
def test_cluster_records_are_a_local_runs_plus_node_provenance_and_nodes_are_exclusive(cluster, tmp_path: Path) -> None:
    """Same cells, same statuses and static facts as a local run; each record names its node; per node, no two
    tasks' windows overlap although the round's jobs ran on several nodes at once."""
    c, _, _ = cluster
    args = ["mlp_s", "mlp_m", "--runtime", "torch,onnxruntime", "--batch", "1,2", "--repetitions", "1", *FAST]
    on_cluster = _cli("run", *args, "--cluster", c.address, "--out", str(tmp_path / "cl"))
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    local = _cli("run", *args, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-3000:]
    cl = {r.key(): r for r in read_records(tmp_path / "cl" / "records.jsonl")}
    lo = {r.key(): r for r in read_records(tmp_path / "local" / "records.jsonl")}
    assert set(cl) == set(lo) and len(cl) == 8
    for key, r in cl.items():
        want = lo[key]
        assert r.ok and want.ok, (key, r.error, want.error)
        for f in ("params", "macs", "input_shape", "input_dtype", "repetitions", "runtime_version", "threads"):
            assert getattr(r, f) == getattr(want, f), (key, f)
        assert r.size_mib == pytest.approx(want.size_mib, rel=0.01), key
        assert (r.cosine is None) == (want.cosine is None) and (r.cosine is None or r.cosine > 0.9999), key
        assert r.hostname == want.hostname and r.cpu_model == want.cpu_model  # the node's (here: this machine)
        assert r.node_id and r.node_ip and not want.node_id and want.node_start_unix_s is None
    reps = read_records(tmp_path / "cl" / "repetitions.jsonl")
    assert len(reps) == 8 and all(r.ok and r.node_id for r in reps)
    windows = _task_windows(reps)
    assert len(windows) >= 2, "a round's jobs should spread over the free nodes"
    for node, spans in windows.items():
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"node {node[:12]}: a task started at {start} while another held it until {end}"
    assert all(s <= e for spans in windows.values() for s, e in spans)
    log = (tmp_path / "cl" / "logs" / "mlp_m_onnxruntime_fp32.log").read_text()
    assert "=== on node " in log and "=== worker: measure mlp_m onnxruntime" in log  # shipped from the nodes


@needs_ray
def test_target_streaming_and_resume_after_sigint(cluster, tmp_path: Path) -> None:
    """--target pool=solo runs everything on the head; the first record is on disk while the run goes on; SIGINT
    stops the node's worker and exits 130 with finished records kept; --resume measures only what is missing."""
    c, node_dir, _ = cluster
    out = tmp_path / "run"
    args = [*ARCHBENCH, "run", "mlp_s", "mlp_m", "resnet_s", "--runtime", "torch", "--repetitions", "1",
            "--min-time", "1", "--threads", "1", "--cluster", c.address, "--target", "pool=solo", "--out", str(out)]
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        reps = out / "repetitions.jsonl"
        deadline = time.monotonic() + 180
        while not (reps.exists() and reps.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()[-3000:]
            time.sleep(0.2)
        assert proc.poll() is None, "the first record should be on disk while the other cells still run"
        time.sleep(1.5)  # into the next cell's job
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    stderr = (tmp_path / "err.txt").read_text()
    assert rc == 130 and "interrupted by SIGINT" in stderr, stderr[-3000:]
    kept = read_records(reps)
    assert 1 <= len(kept) < 3 and all(r.ok for r in kept)
    time.sleep(1)
    assert not _workers(node_dir), "the cancelled task should have killed its worker"
    again = _cli(*args[3:], "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    recs = read_records(out / "records.jsonl")
    reps_all = read_records(reps)
    assert sorted(r.model for r in recs) == ["mlp_m", "mlp_s", "resnet_s"] and all(r.ok for r in recs)
    assert sorted(r.model for r in reps_all) == ["mlp_m", "mlp_s", "resnet_s"], "a finished cell was measured again"
    head = c.head_node.node_id
    assert {r.node_id for r in reps_all} == {head}, "--target pool=solo: only the head node carries that label"


# ------------------------------------------------------------------------------------------------ failures


@needs_ray
def test_a_lost_node_fails_its_cell_and_the_job_retries_on_another_node(cluster, tmp_path: Path) -> None:
    c, node_dir, _ = cluster
    victims = [c.add_node(num_cpus=0, resources={SLOT: 1, "victim": 1}, object_store_memory=80 * MB)
               for _ in range(2)]
    c.wait_for_nodes()
    out = tmp_path / "run"
    args = [*ARCHBENCH, "run", "mlp_s", "--runtime", "torch", "--batch", "1,2", "--repetitions", "1", "--min-time",
            "3", "--threads", "1", "--cluster", c.address, "--target", "victim", "--out", str(out)]
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        lost = None
        deadline = time.monotonic() + 120
        while lost is None and time.monotonic() < deadline:
            for v in victims:
                logs = list((node_dir / v.node_id[:16]).glob("*/logs/mlp_s_torch_fp32.log"))
                if logs and "=== worker: measure" in logs[0].read_text():
                    lost = v
            time.sleep(0.1)
        assert lost is not None, (tmp_path / "err.txt").read_text()[-3000:]
        time.sleep(3)  # the worker is importing torch or timing batch 1
        c.remove_node(lost)
        rc = proc.wait(timeout=180)
    assert rc == 0, (tmp_path / "err.txt").read_text()[-3000:]
    other = next(v for v in victims if v is not lost).node_id
    reps = read_records(out / "repetitions.jsonl")
    failed = [r for r in reps if not r.ok]
    assert len(failed) == 1 and failed[0].batch == 1 and failed[0].node_id == lost.node_id, failed
    assert "lost" in failed[0].error and "retried on another node" in failed[0].error
    assert sorted((r.batch, r.node_id) for r in reps if r.ok) == [(1, other), (2, other)]
    final = {r.batch: r for r in read_records(out / "records.jsonl")}
    assert final[1].ok and final[2].ok and "1 of 2 repetitions failed" in final[1].warning


# ------------------------------------------------------------------------------------------------ other entries


@needs_ray
@pytest.mark.skipif(not HAS_CLIENT, reason="Ray Client needs ray[client] (pip install 'archbench[ray]')")
def test_ray_client_address_runs_the_same_jobs(cluster, tmp_path: Path) -> None:
    """ray:// has no streaming generators: a job's records come back together, with the same provenance."""
    _, _, client = cluster
    proc = _cli("run", "mlp_s", "--runtime", "torch", "--batch", "1,2", "--repetitions", "1", *FAST,
                "--cluster", client, "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = read_records(tmp_path / "run" / "records.jsonl")
    assert [r.batch for r in recs] == [1, 2] and all(r.ok and r.node_id for r in recs)


@needs_ray
def test_pytest_archbench_cells_on_the_cluster(cluster, pytester: pytest.Pytester) -> None:
    c, _, _ = cluster
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\narchbench_min_time = "0.05"\n'
                               '[tool.archbench]\nmodels = ["mlp_s"]\n'
                               '[tool.archbench.budgets.roomy]\np95_ms = "<= 1000"\n')
    res = pytester.runpytest_subprocess("--archbench", "--archbench-out", "cells", "--archbench-cluster", c.address,
                                        "--archbench-target", "wide", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    (rec,) = [json.loads(line) for line in (pytester.path / "cells" / "records.jsonl").read_text().splitlines()]
    wide = {n["NodeID"] for n in _nodes(c) if n["Resources"].get("wide")}
    assert rec["status"] == "ok" and rec["node_id"] in wide


def _nodes(c) -> list[dict]:
    """ray.nodes() of the cluster, asked from a subprocess (this process stays unconnected)."""
    code = "import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); print(json.dumps(ray.nodes()))"
    proc = subprocess.run([sys.executable, "-c", code, c.address], capture_output=True, text=True, timeout=120)
    return [n for n in json.loads(proc.stdout.strip().splitlines()[-1]) if n["Alive"]]


def test_ray_client_connect_retries_only_the_proxys_startup_failure(monkeypatch) -> None:
    """ray:// connects again (up to CLIENT_INIT_TRIES) when the head's proxy could not start the per-client server;
    any other failure, or the same one on a plain address, is reported at once."""
    from archbench.bench.measure.cluster import dispatcher as cluster

    class FakeRay:
        def __init__(self, failures: int, message: str) -> None:
            self.failures, self.message, self.calls, self.shutdowns = failures, message, 0, 0

        def init(self, address: str, **kw) -> None:
            self.calls += 1
            if self.calls <= self.failures:
                raise ConnectionError(self.message)

        def shutdown(self) -> None:
            self.shutdowns += 1

    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    flaky = FakeRay(2, "Initialization failure from server:\n")
    cluster._init_retrying(flaky, "ray://head:10001", {})
    assert flaky.calls == 3 and flaky.shutdowns == 2
    for ray, address in ((FakeRay(3, "Initialization failure from server:\n"), "ray://head:10001"),
                         (FakeRay(1, "Initialization failure from server:\n"), "head:6379"),
                         (FakeRay(1, "ray client connection timeout"), "ray://head:10001")):
        with pytest.raises(ConnectionError):
            cluster._init_retrying(ray, address, {})
        assert ray.calls == (cluster.CLIENT_INIT_TRIES if ray.failures == 3 else 1)
