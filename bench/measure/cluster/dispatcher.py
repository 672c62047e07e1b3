"""The engine's jobs on a Ray cluster (``--cluster``): each job a Ray task that holds one node alone and runs the
same worker as a local run (measure.cluster.node); records stream back to the driver's files as they finish.

    d = ClusterDispatcher("auto", target=("cpu-avx512",), out=Path("runs/x"), timeout_s=300, device="cpu")
    d.artifacts(jobs)              # each model's artefacts built once, on some node; copied to --out and shipped
    d.run_round(jobs, on_record)   # the round's jobs at once, one node each; on_record(rec) as each cell ends

- **Exclusivity**: every archbench task asks for 1 of the custom resource ``archbench_slot`` and no CPU, and a
  measuring node offers exactly 1 (``ray start ... --resources='{"archbench_slot": 1}'``; checked on connecting):
  Ray never runs two archbench tasks on one node at once, artefact builds included. Other Ray work is kept off the
  node by starting it with ``--num-cpus=0`` (nothing that asks for a CPU is scheduled there).
- **Targets** (``--target``): NAME is a custom resource the node offers (the task asks for 0.001 of it); KEY=VALUE a
  node label (``ray start --labels``; Ray's label_selector). Connecting fails with one line when no live node has
  a slot and every target.
- **Artefacts** (the ONNX export, variants, fp32 references): built once per model by an artifacts task on one
  node (holding its slot like any task), copied into the driver's ``--out/artifacts`` as in a local run, and
  shipped through Ray's object store to every measuring task of that model, which unpacks them once per node
  (measure.cluster.node.unpack). All nodes measure the same files; a lost artifacts task is retried elsewhere.
- **Streaming**: a task is a streaming generator; ``ray.wait`` on all of a round's tasks hands each record to
  ``on_record`` (the engine appends and fsyncs it) the moment its node emits it. Ray Client (``ray://``) has no
  streaming generators: there a job's records arrive together when the job ends.
- **Failures**: a task that is lost with its node (or its Ray worker) gives the cell it was on a ``failed`` record
  naming the node and the reason, then the job's unfinished cells (that one included) run again on another node of
  the same target (label_selector excludes the lost ones), at most ``MAX_RETRIES`` times. A cell that times out is
  killed on its node by dispatch's own timeout, as in a local run. An error of archbench's own task code fails the
  job's remaining cells with it, without a retry.
- **Cancellation**: Ctrl-C or SIGTERM in the driver cancels every running task (``ray.cancel``: the node task kills
  its worker's process group), keeps the records that already arrived, waits ``CANCEL_GRACE_S`` at most and then
  force-cancels what is left (``ray.cancel(force=True)`` kills the Ray worker).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from archbench.bench.cell import Cell, Job
from archbench.bench.errors import UsageError
from archbench.bench.measure.cluster import node as cluster_node
from archbench.bench.measure.dispatch import OnRecord, failed_record, log_path, slug
from archbench.bench.record import Record

SLOT = "archbench_slot"  # the custom resource each measuring node offers exactly 1 of
MAX_RETRIES = 2  # of a job whose node was lost
CANCEL_GRACE_S = 5.0  # after ray.cancel, before force-cancelling
NO_NODE_GRACE_S = 60.0  # pending tasks with no live node able to run them: fail them after this long
TARGET_AMOUNT = 0.001  # of a target resource a task asks for (a presence test: the slot does the excluding)
NEEDS_RAY = "--cluster needs Ray: pip install 'archbench[ray]'"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")


def require_ray() -> Any:
    """The ray module, or the one-line UsageError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise UsageError(NEEDS_RAY) from None
    return ray


def parse_target(text: str | None) -> tuple[str, ...]:
    """``--target`` as its items (comma list, all required): NAME (a custom resource) or KEY=VALUE (a node label)."""
    items = tuple(t.strip() for t in (text or "").split(",") if t.strip())
    for t in items:
        key, sep, value = t.partition("=")
        if not _NAME.match(key) or (sep and not _NAME.match(value)) or key == SLOT:
            raise UsageError(f"--target {t!r}: expected a Ray resource name (e.g. cpu-avx512) or a node label "
                             "KEY=VALUE (e.g. accelerator=h100)")
    return items


REACH_TIMEOUT_S = 5.0  # how long a TCP connect to the cluster's address may take before it is called unreachable


def check_address(address: str) -> None:
    """Fail in seconds, not after Ray's minute of GCS retries, when a HOST:PORT (or ray://HOST:PORT) address
    does not accept a TCP connection. "local" and "auto" are left to Ray."""
    import socket

    if address in ("local", "auto"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--cluster {address!r}: expected local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(f"--cluster {address}: cannot reach {host}:{port} ({e.strerror or type(e).__name__}); "
                         "is the Ray head running there (`ray start --head`)?") from None


def connect(address: str) -> Any:
    """Connect this process to Ray once (a sweep's or the pytest plugin's later runs reuse the connection):
    "local" starts a one-node Ray here with one slot; "auto", "host:6379" or "ray://host:10001" join a cluster.
    Ray's init replaces the SIGTERM handler of the driver: archbench's own (stop, keep records, exit 143) is put
    back."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    check_address(address)
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(address="local", resources={SLOT: 1}, include_dashboard=False, **quiet)
        else:
            _init_retrying(ray, address, quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"--cluster {address}: cannot connect to Ray: {first[:300]}") from None
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGTERM, handler)
    return ray


CLIENT_INIT_TRIES = 3  # Ray Client attempts (ray://): its per-client server can fail to start on a loaded head


def _init_retrying(ray: Any, address: str, quiet: dict[str, Any]) -> None:
    """ray.init(address); for Ray Client, again (2 s apart, CLIENT_INIT_TRIES in all) when the head's proxy says
    "Initialization failure from server": the per-client server it starts for each connection sometimes fails to
    start in time on a busy head (seen once in 3 test-suite runs on the dev VM), and a new connection starts another."""
    for attempt in range(1, CLIENT_INIT_TRIES + 1):
        try:
            ray.init(address=address, **quiet)
            return
        except (ConnectionError, RuntimeError) as e:
            if not address.startswith("ray://") or "Initialization failure" not in str(e) or \
                    attempt == CLIENT_INIT_TRIES:
                raise
            with contextlib.suppress(Exception):
                ray.shutdown()
            time.sleep(2.0)


@dataclass
class _Task:
    job: Job
    remaining: list[Cell]
    attempt: int = 0
    excluded: set[str] = field(default_factory=set)  # node ids lost under this job
    node: dict[str, Any] = field(default_factory=dict)  # where the current attempt runs (its first item)


class ClusterDispatcher:
    """measure.dispatch.Dispatcher on Ray (see the module docstring)."""

    def __init__(self, address: str, target: tuple[str, ...], out: Path, timeout_s: float,
                 device: str = "cpu") -> None:
        self.ray = ray = connect(address)
        self.address, self.target, self.out, self.timeout_s = address, tuple(target), out, timeout_s
        self.resources = {SLOT: 1.0, **{t: TARGET_AMOUNT for t in target if "=" not in t}}
        self.labels = dict(t.split("=", 1) for t in target if "=" in t)
        self.client = address.startswith("ray://") or _client_mode(ray)
        self.gpu = device == "cuda"  # each task then also asks for one GPU (Ray sets CUDA_VISIBLE_DEVICES to it)
        self.run_key = f"{slug(socket.gethostname())}_{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:12]}"
        self._artifacts: dict[str, Any] = {}  # workdir -> ObjectRef of its shipped folder
        self._no_node_since: float | None = None
        opts: dict[str, Any] = {"num_cpus": 0, "num_gpus": 1 if self.gpu else 0,
                                "resources": self.resources, "max_retries": 0}
        if self.client:
            self._remote = ray.remote(**opts)(cluster_node.node_task_all)
        else:
            self._remote = ray.remote(num_returns="streaming", **opts)(cluster_node.node_task)
        self._build = ray.remote(**opts)(cluster_node.build_task)
        try:
            self._remote.options(label_selector={})
            self.has_labels = True
        except (TypeError, ValueError):  # a Ray without label_selector
            self.has_labels = False
        if self.labels and not self.has_labels:
            raise UsageError(f"--target {','.join(self.target)}: node labels need a Ray with label_selector; "
                             f"this is Ray {ray.__version__} (use custom resources: --target NAME)")
        self.check_nodes()

    # ------------------------------------------------------------------------------------------ nodes

    def fits(self, node: dict[str, Any]) -> bool:
        """Is ``node`` (an entry of ray.nodes()) alive with a slot and every target?"""
        res, labels = node.get("Resources") or {}, node.get("Labels") or {}
        return (bool(node.get("Alive")) and res.get(SLOT, 0) >= 1 and all(res.get(r, 0) > 0 for r in self.resources)
                and all(labels.get(k) == v for k, v in self.labels.items()) and (not self.gpu or res.get("GPU", 0) >= 1))

    def live_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if self.fits(n)]

    def check_nodes(self) -> None:
        """UsageError unless some live node can run the tasks, and every such node offers exactly one slot."""
        nodes = self.live_nodes()
        if not nodes:
            need = " and ".join([f"{SLOT}=1", *self.target, *(["a GPU (--device cuda)"] if self.gpu else [])])
            raise UsageError(f"--cluster {self.address}: no live node offers {need}; start measuring nodes with "
                             f"ray start --num-cpus=0 --resources='{{\"{SLOT}\": 1}}' (add a target resource to the "
                             "JSON or --labels KEY=VALUE)")
        many = [n for n in nodes if n["Resources"].get(SLOT) != 1]
        if many:
            n = many[0]
            raise UsageError(f"node {n.get('NodeManagerAddress')} offers {SLOT}={n['Resources'][SLOT]:g}: exclusive "
                             "measuring needs exactly 1 per node")

    # ------------------------------------------------------------------------------------------ Dispatcher

    def artifacts(self, jobs: list[Job]) -> None:
        """Build every job's folder at once (one node each), copy it under --out, keep it in the object store for
        the measuring tasks. A folder that cannot be built is left out: its cells fail while preparing, naming the
        log, as in a local run."""
        pending: dict[Any, _Task] = {}
        with _SignalNotes() as notes:
            try:
                for job in jobs:
                    t = _Task(job, list(job.cells))
                    pending[self._submit_build(t)] = t
                while pending:
                    ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=1.0)
                    if not ready:
                        self._watch(pending, None)
                    for ref in ready:
                        self._built(ref, pending.pop(ref), pending)
            except BaseException as e:
                self._cancel(pending, None)
                raise notes.real(e) from None

    def _built(self, ref: Any, t: _Task, pending: dict[Any, _Task]) -> None:
        try:
            got = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            self._log(t.job, f"artifacts task failed: {_first_line(e)}")
            return
        except self.ray.exceptions.RayError as e:  # its node is gone: build it elsewhere
            t.attempt += 1
            self._log(t.job, f"artifacts task lost with its node: {_first_line(e)}")
            if t.attempt <= MAX_RETRIES and self.live_nodes():
                pending[self._submit_build(t)] = t
            return
        t.node = got["node"]
        self._write_logs(t, got["logs"])
        cluster_node.unpack(got, Path(t.job.workdir).resolve())  # the driver's copy, as a local run leaves it
        self._artifacts[t.job.workdir] = self.ray.put({"folder": got["folder"], "tar": got["tar"]})

    def _submit_build(self, t: _Task) -> Any:
        remote = self._build.options(label_selector=self.labels) if self.labels else self._build
        return remote.remote(t.job.to_json(), self.run_key, self.timeout_s)

    def _log(self, job: Job, text: str) -> None:
        path = log_path(self.out, job.head, "artifacts")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"\narchbench: {text}\n")

    def run_round(self, jobs: list[Job], on_record: OnRecord) -> None:
        pending: dict[Any, _Task] = {}
        with _SignalNotes() as notes:
            try:
                self._run_round(jobs, on_record, pending)
            except BaseException as e:  # Ctrl-C, SIGTERM (cli.run's Terminated), a failure of ours: stop the nodes
                self._cancel(pending, on_record)
                raise notes.real(e) from None

    def _run_round(self, jobs: list[Job], on_record: OnRecord, pending: dict[Any, _Task]) -> None:
        for job in jobs:
            t = _Task(job, list(job.cells))
            pending[self._submit(t)] = t
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=1.0)
            if not ready:
                self._watch(pending, on_record)
                continue
            for ref in ready:
                t = pending.pop(ref)
                again = self._step(ref, t, on_record)
                if again is not None:
                    pending[again] = t

    # ------------------------------------------------------------------------------------------ internals

    def _submit(self, t: _Task) -> Any:
        job = replace(t.job, cells=tuple(t.remaining))
        art = self._artifacts.get(job.workdir)
        remote = self._remote
        if t.excluded and self.has_labels:
            remote = remote.options(label_selector={**self.labels,
                                                    "ray.io/node-id": f"!in({','.join(sorted(t.excluded))})"})
        elif self.labels:
            remote = remote.options(label_selector=self.labels)
        t.node = {}
        return remote.remote(job.to_json(), art, self.run_key, self.timeout_s)  # Ray resolves art to its dict

    def _step(self, ref: Any, t: _Task, on_record: OnRecord) -> Any:
        """Take what task ``ref`` has ready; the ref to keep waiting on (itself, or its retry), or None when done."""
        exc = self.ray.exceptions
        try:
            if self.client:
                items, done = self.ray.get(ref), True
            else:
                try:
                    items, done = [self.ray.get(next(ref))], False
                except StopIteration:
                    items, done = [], True
        except exc.TaskCancelledError:
            self._fail(t, "cancelled", on_record)
            return None
        except exc.RayTaskError as e:  # archbench's own task code raised on the node: the same would happen again
            self._fail(t, f"archbench's task failed on {_where(t.node)}: {_first_line(e)}", on_record)
            return None
        except exc.RayError as e:  # the node (or its Ray worker) is gone
            return self._lost(t, e, on_record)
        for item in items:
            self._take(t, item, on_record)
        if not done:
            return ref
        if t.remaining:
            self._fail(t, f"the task on {_where(t.node)} ended without its record", on_record)
        return None

    def _take(self, t: _Task, item: dict[str, Any], on_record: OnRecord) -> None:
        if "node" in item:
            t.node = item["node"]
        elif "record" in item:
            rec = Record.from_dict(item["record"])
            if t.node.get("out"):  # "(log: <node folder>/logs/x.log)": the driver has that log under --out
                rec.error = rec.error.replace(t.node["out"], str(self.out))
            t.remaining = [c for c in t.remaining if c.batch != rec.batch]
            on_record(rec)
        elif "logs" in item:
            self._write_logs(t, item["logs"])

    def _write_logs(self, t: _Task, texts: dict[str, str]) -> None:
        """Append what a task's workers logged on its node to the same logs under --out."""
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            with open(logs / Path(name).name, "a", encoding="utf-8") as fh:
                fh.write(f"\n=== on {_where(t.node)} ===\n{text}")

    def _lost(self, t: _Task, e: BaseException, on_record: OnRecord) -> Any:
        """The cell the lost task was on gets a failed record; the job's unfinished cells run again elsewhere."""
        reason = f"{_where(t.node)} lost: {_first_line(e)}"
        if t.node.get("id"):
            t.excluded.add(t.node["id"])
        t.attempt += 1
        others = [n for n in self.live_nodes() if n["NodeID"] not in t.excluded]
        if not others and t.node.get("id") in {n["NodeID"] for n in self.live_nodes()}:
            t.excluded.discard(t.node["id"])  # only its Ray worker died and no other node fits: retry there
            others = [t.node]
        why = (f"gave up after {MAX_RETRIES} retries" if t.attempt > MAX_RETRIES
               else "" if others else f"no other live node offers {' and '.join([SLOT, *self.target])}")
        if t.remaining and t.node:  # it had started: the cell it was on (the first without a record) is lost
            on_record(self._stamp(failed_record(t.remaining[0], f"{reason} while running this cell's job"
                                                + (f"; {why}" if why else "; retried on another node"),
                                                t.job.run_id), t))
            t.remaining = t.remaining[1:] if why else t.remaining
        if why:
            self._fail(t, f"{reason}; {why}", on_record)
            return None
        return self._submit(t) if t.remaining else None

    def _fail(self, t: _Task, reason: str, on_record: OnRecord) -> None:
        for c in t.remaining:
            on_record(self._stamp(failed_record(c, reason, t.job.run_id), t))
        t.remaining = []

    def _stamp(self, rec: Record, t: _Task) -> Record:
        rec.node_id, rec.node_ip = t.node.get("id", ""), t.node.get("ip", "")
        if t.node.get("start"):
            rec.node_start_unix_s, rec.node_end_unix_s = round(t.node["start"], 6), round(time.time(), 6)
        return rec

    def _watch(self, pending: dict[Any, _Task], on_record: OnRecord | None) -> None:
        """Tasks wait for a free node; when no live node can ever run them (all lost), fail them after a grace."""
        if self.live_nodes():
            self._no_node_since = None
            return
        now = time.monotonic()
        self._no_node_since = self._no_node_since or now
        if now - self._no_node_since < NO_NODE_GRACE_S:
            return
        reason = f"no live node offered {' and '.join([SLOT, *self.target])} for {NO_NODE_GRACE_S:g} s"
        for ref, t in list(pending.items()):
            self._cancel_ref(ref, force=True)
            if on_record is not None:
                self._fail(t, reason, on_record)
            else:
                self._log(t.job, f"artifacts task not run: {reason}")
            del pending[ref]

    def _cancel(self, pending: dict[Any, _Task], on_record: OnRecord | None) -> None:
        """Cancel every task (their node code kills the workers), keep records that were already on their way
        (measuring tasks: ``on_record`` given), force-cancel what has not stopped within CANCEL_GRACE_S."""
        try:
            for ref in pending:
                self._cancel_ref(ref, force=False)
            deadline = time.monotonic() + CANCEL_GRACE_S
            while pending and time.monotonic() < deadline:
                ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=0.2)
                for ref in ready:
                    t = pending.pop(ref)
                    if on_record is None:  # an artifacts task: nothing to keep
                        continue
                    try:
                        items = self.ray.get(ref) if self.client else [self.ray.get(next(ref))]
                    except (StopIteration, self.ray.exceptions.RayError):
                        continue
                    for item in items:
                        if "record" in item:
                            self._take(t, item, on_record)
                    if not self.client:
                        pending[ref] = t
        finally:
            for ref in pending:
                self._cancel_ref(ref, force=True)

    def _cancel_ref(self, ref: Any, force: bool) -> None:
        try:
            self.ray.cancel(ref, force=force)
        except Exception:  # noqa: BLE001  (already finished, or its node is gone: nothing left to stop)
            pass


class _SignalNotes:
    """Notes which signals arrive while Ray waits. Ray's wait turns any signal into a bare KeyboardInterrupt,
    dropping what the process's own handler raised (cli.run turns SIGTERM into Terminated, exit 143); ``real``
    asks that handler again for the exception it meant."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __enter__(self) -> _SignalNotes:
        self.seen: list[int] = []
        self.old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                old = signal.getsignal(sig)
                if callable(old):
                    self.old[sig] = old
                    signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.seen.append(signum)
        self.old[signum](signum, frame)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)

    def real(self, e: BaseException) -> BaseException:
        if type(e) is KeyboardInterrupt and self.seen:
            try:
                self.old[self.seen[-1]](self.seen[-1], None)
            except BaseException as meant:  # noqa: B036  (that handler's own exception, e.g. Terminated(15))
                return meant
        return e


def _client_mode(ray: Any) -> bool:
    try:
        return bool(ray.util.client.ray.is_connected())
    except AttributeError:
        return False


def _where(node: dict[str, Any]) -> str:
    return f"node {node['ip']} ({node['id'][:12]})" if node.get("id") else "its node"


def _first_line(e: BaseException) -> str:
    """``Type: first sentence`` of a Ray error (their messages run on with advice)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    cut = text.find(". ", 20)
    return f"{type(e).__name__}: {text[:cut + 1] if cut > 0 else text}"[:240]
