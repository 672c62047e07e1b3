"""What Ray tasks run on a cluster node for measure.cluster.dispatcher: the engine's jobs, through the same dispatch and the
same worker process as a local run, in an out folder of the node's own.

    build_task(job_json, run_key, timeout_s) -> {"node", "folder", "tar", "logs"}       the artifacts job
    for item in node_task(job_json, shipped, run_key, timeout_s):   # a streaming generator task: a measuring job
        {"node": {"id", "ip", "start", "out"}}   first: where the task runs and since when it holds the node
        {"record": {...}}                        each record the moment the worker emits it, with node provenance
        {"logs": {"name.log": "text"}}           last: what the workers wrote to their logs during this task

Every task holds its node's one ``archbench_slot`` from start to end, so it is the only archbench work on that
node. That makes the node-local folder safe without locks: ``<ARCHBENCH_NODE_DIR or $TMPDIR/archbench-ray>/<node
id>/<run key>/`` with ``artifacts/`` and ``logs/`` as in a local run's ``--out``.

Artefacts are built once and shipped: ``build_task`` runs a model's artifacts worker (``dispatch.build_artifacts``)
on one node and returns its folder as a tar; the driver keeps a copy under its own --out and hands the same bytes
to every measuring task of that model (Ray's object store moves them), which unpacks them once per node and run
(``unpack``: the absolute paths the folder's JSON files hold are moved to where it now lies). Every node then
measures the same export, the same variants and the same fp32 references, and the export's CPU time is spent once.

Records carry the node's own provenance: the worker computes hostname, CPU, GPU and versions in its own process on
the node (bench.env), and the task adds ``node_id``, ``node_ip`` and the window it held the node
(``node_start_unix_s`` .. ``node_end_unix_s``).

Cancellation (``ray.cancel``) reaches the generator as GeneratorExit or KeyboardInterrupt; the dispatch loop runs
in a thread of the task, so the interrupt is passed on to that thread, whose ``finally`` kills the worker's process
group exactly as Ctrl-C does in a local run.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import queue
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from archbench.bench.cell import Job
from archbench.bench.measure import dispatch
from archbench.bench.record import Record

LOG_TAIL_BYTES = 256 * 1024  # of each worker log shipped back to the driver per task
_DONE = object()


def node_root() -> Path:
    """Where tasks keep their folders on this node: $ARCHBENCH_NODE_DIR (set it in the environment of `ray
    start`), else the temp dir's archbench-ray."""
    return Path(os.environ.get("ARCHBENCH_NODE_DIR") or Path(tempfile.gettempdir()) / "archbench-ray")


def node_info() -> dict[str, Any]:
    """This task's node and the moment it started holding it; ``out``: its folder for this run (made later)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return {"id": node_id, "ip": ray.util.get_node_ip_address(), "start": time.time(),
            "out": str(node_root().resolve() / node_id[:16])}


def build_task(job_json: str, run_key: str, timeout_s: float) -> dict[str, Any]:
    """Run an artifacts job on this node; its folder as an uncompressed tar (ONNX weights barely compress)."""
    node = node_info()
    out = Path(node["out"]) / run_key
    node["out"] = str(out)
    job = _on_node(Job.from_json(job_json), out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sizes = {p.name: p.stat().st_size for p in logs.glob("*.log")}
    with _node_environment():
        dispatch.build_artifacts(job, out, timeout_s)
    folder = Path(job.workdir)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if not f.name.startswith("."):
                    tar.add(f, arcname=f.name)
    _mark(folder, job.run_id)  # this node already has the folder where its measuring tasks look for it
    return {"node": node, "folder": str(folder), "tar": buf.getvalue(), "logs": _new_log_text(logs, sizes)}


def unpack(shipped: dict[str, Any], folder: Path) -> None:
    """Unpack a ``build_task`` folder into ``folder`` and move the absolute paths its JSON files hold (the ONNX
    file, each variant's files) from where it was built to here."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(shipped["tar"]), mode="r") as tar:
        for m in tar.getmembers():
            if not m.isfile() or "/" in m.name or m.name.startswith("."):
                raise ValueError(f"unexpected member {m.name!r} in a shipped artefact folder")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)  # members checked above: plain files, no paths
    old, new = json.dumps(shipped["folder"])[1:-1], json.dumps(str(folder))[1:-1]
    if old != new:
        for f in folder.glob("*.json"):
            text = f.read_text(encoding="utf-8")
            if old in text:
                f.write_text(text.replace(old, new), encoding="utf-8")


def node_task(job_json: str, shipped: dict[str, Any] | None, run_key: str,
              timeout_s: float) -> Iterator[dict[str, Any]]:
    """Run one measuring job on this node (unpacking its model's shipped artefacts first, once per node and run),
    yielding the items listed in the module docstring."""
    node = node_info()
    out = Path(node["out"]) / run_key
    node["out"] = str(out)
    yield {"node": node}
    job = _on_node(Job.from_json(job_json), out)
    if shipped is not None and not (Path(job.workdir) / f".built-{job.run_id}").exists():
        unpack(shipped, Path(job.workdir))
        _mark(Path(job.workdir), job.run_id)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sizes = {p.name: p.stat().st_size for p in logs.glob("*.log")}
    q: queue.Queue[Any] = queue.Queue()
    th = threading.Thread(target=_work, args=(job, out, timeout_s, q), daemon=True)
    with _node_environment():
        th.start()
        try:
            while True:
                try:
                    item = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                rec: Record = item
                rec.node_id, rec.node_ip = node["id"], node["ip"]
                rec.node_start_unix_s, rec.node_end_unix_s = round(node["start"], 6), round(time.time(), 6)
                yield {"record": asdict(rec)}
        except BaseException:  # cancelled (GeneratorExit, KeyboardInterrupt) or failed: stop the worker first
            _interrupt(th)
            raise
    yield {"logs": _new_log_text(logs, sizes)}


def node_task_all(job_json: str, shipped: dict[str, Any] | None, run_key: str,
                  timeout_s: float) -> list[dict[str, Any]]:
    """``node_task``'s items as one list: for Ray Client (ray://), which has no streaming generators."""
    return list(node_task(job_json, shipped, run_key, timeout_s))


def _mark(folder: Path, run_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f".built-{run_id}").touch()


def _on_node(job: Job, out: Path) -> Job:
    """The job with its artefact folder moved under this node's out folder (same relative place as the driver's)."""
    parts = Path(job.workdir).parts
    rel = Path(*parts[parts.index("artifacts"):]) if "artifacts" in parts else Path("artifacts") / Path(job.workdir).name
    return replace(job, workdir=str(out / rel))


def _work(job: Job, out: Path, timeout_s: float, q: queue.Queue[Any]) -> None:
    try:
        dispatch.run_job(job, out, timeout_s, q.put)
    except BaseException as e:  # noqa: B036  (KeyboardInterrupt from _interrupt ends here after dispatch's cleanup)
        q.put(e)
    finally:
        q.put(_DONE)


def _interrupt(th: threading.Thread) -> None:
    """Raise KeyboardInterrupt in the dispatch thread (it polls at least once a second, in dispatch.run_job's
    select loop or build_artifacts' wait) and give it a few seconds to kill its worker's process group."""
    if th.ident is not None and th.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(th.ident), ctypes.py_object(KeyboardInterrupt))
        th.join(timeout=10.0)


@contextmanager
def _node_environment() -> Iterator[None]:
    """The worker gets the node's environment, as a local run there would, not what Ray sets for its own task:
    Ray sets OMP_NUM_THREADS=1 in a task that asked for no CPU when the node's environment did not set it."""
    injected = "OMP_NUM_THREADS" in os.environ and "OMP_NUM_THREADS" not in _initial_environment()
    saved = os.environ.pop("OMP_NUM_THREADS") if injected else None
    try:
        yield
    finally:
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved


def _initial_environment() -> set[str]:
    """Names in this process's environment as it was started (Linux); unknown elsewhere: assume everything."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return set(os.environ)
    return {kv.split(b"=", 1)[0].decode("utf-8", "replace") for kv in raw.split(b"\0") if kv}


def _new_log_text(logs: Path, sizes: dict[str, int]) -> dict[str, str]:
    """What each worker log gained during this task (its last LOG_TAIL_BYTES)."""
    out = {}
    for p in sorted(logs.glob("*.log")):
        size = p.stat().st_size
        old = sizes.get(p.name, 0)
        if size > old:
            with open(p, "rb") as fh:
                fh.seek(max(old, size - LOG_TAIL_BYTES))
                out[p.name] = fh.read().decode("utf-8", "replace")
    return out
