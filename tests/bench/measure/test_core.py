"""The core: one archbench namespace safe from a user's cwd, the typed cell and job, records read back as Records
(old schemas migrated), the runtime registry, and deployment-true (torch-free) workers whose memory matches a bare
process of the runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest
from tests_helpers import TESTS

from archbench.bench.cell import QUICK, Cell, Job, Options, StopRule, TrainOptions, canonical_knobs
from archbench.bench.record import SCHEMA_VERSION, Record, SchemaError, append_jsonl, read_records

ARCHBENCH = [sys.executable, "-m", "archbench.bench.cli.main"]
FAST = ["--min-time", "0.05", "--min-iters", "5", "--threads", "1", "--repetitions", "2"]


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


# ------------------------------------------------------------------------------------------------ cell and record


@pytest.mark.parametrize("cell", [
    Cell("resnet_s"),
    Cell("pkg.mod:make", runtime="onnxruntime", precision="int8-static", batch=7, threads=3,
         knobs=canonical_knobs({"width": 0.5, "depth": 2}),
         options=Options(input_shape=(1, 3, 20, 20), dtype="float16", calibration="a.b:c", fidelity_samples=5)),
    Cell("mlp_s", mode="train", options=Options(train=TrainOptions(optimizer="sgd", mem_cap_mib=512.0, find_max_batch=True))),
])
def test_job_roundtrips_through_json(cell: Cell) -> None:
    job = Job(cells=(cell, cell.with_batch(9)), workdir="/tmp/x", run_id="r1", rule=StopRule(min_iters=3))
    assert Job.from_json(job.to_json()) == job


def test_cell_key_matches_its_record_key() -> None:
    from archbench.bench.measure.protocol import new_record

    cell = Cell("vit_s", runtime="openvino", precision="fp16", batch=4, threads=2, knobs=canonical_knobs({"depth": 3}))
    assert new_record(cell).key() == cell.key()
    assert canonical_knobs({"b": 1, "a": 2}) == canonical_knobs({"a": 2, "b": 1}) == '{"a": 2, "b": 1}'


def test_records_read_back_as_records_and_old_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_jsonl(path, Record("mlp_s", "torch", "fp32", 1, "cpu", 2, latency_p50_ms=1.5))
    v1 = {"model": "mlp_s", "runtime": "onnxruntime", "precision": "fp32", "batch": 1, "device": "cpu",
          "threads": 2, "peak_rss_mib": 288.0, "schema_version": 1, "a_field_from_elsewhere": 3}
    with open(path, "a") as fh:
        fh.write(json.dumps(v1) + "\n")
        fh.write('{"model": "truncated"\n')  # a kill mid-write
    recs = read_records(path)
    assert [type(r) for r in recs] == [Record, Record]
    assert recs[0].latency_p50_ms == 1.5 and recs[1].schema_version == SCHEMA_VERSION
    assert "includes torch" in recs[1].warning  # v1 ONNX Runtime memory held torch: said on the record


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    d = asdict(Record("mlp_s", "torch", "fp32", 1, "cpu", 2))
    d["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(SchemaError, match="newer"):
        read_records(path)


# ------------------------------------------------------------------------------------------------ runtime registry


def test_every_registered_runtime_declares_the_protocol() -> None:
    from archbench.bench.measure.runtimes import RUNTIMES, get_runtime

    for name in RUNTIMES:
        cls = get_runtime(name)
        assert cls.name == name
        assert cls.artifact in ("none", "onnx"), name
        assert cls.precisions and cls.devices and cls.package, name
        for attr in ("check", "version", "prepare", "convert", "run", "outputs"):
            assert callable(getattr(cls, attr)), (name, attr)
        assert cls.needs_torch or hasattr(cls, "build"), f"{name}: a torch-free runtime builds its file in advance"
    with pytest.raises(ValueError, match="unknown runtime 'nope'; known: torch"):
        get_runtime("nope")


def test_no_runtime_name_is_special_cased_outside_its_own_file() -> None:
    """DESIGN.md: no `if runtime == "onnxruntime"` anywhere else (comments and docs aside)."""
    import re

    bad = []
    for p in (TESTS.parent / "bench").rglob("*.py"):
        if "runtimes" in p.parts:
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"""(runtime|\.name)\s*(==|!=|in)\s*\(?["'](onnxruntime|openvino|torch-compile)["']""", code):
                bad.append(f"{p.relative_to(TESTS.parent)}:{i}: {line.strip()}")
    assert not bad, "runtime special cases outside measure/runtimes/:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------ namespace, cwd


HOSTILE = {
    "models/__init__.py": "raise ImportError('the user models package was imported')\n",
    "bench/__init__.py": "raise ImportError('the user bench package was imported')\n",
    "kernels/__init__.py": "raise ImportError('the user kernels package was imported')\n",
    "numpy.py": "raise ImportError('the user numpy.py was imported')\n",
    "onnxruntime.py": "raise ImportError('the user onnxruntime.py was imported')\n",
}


def test_run_from_a_repository_with_its_own_models_numpy_and_onnxruntime(tmp_path: Path) -> None:
    """The CLI and its workers import archbench's and the installed packages, never the user's same-named ones; the
    user's own factory module in that directory is still found."""
    for rel, text in HOSTILE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "mynets.py").write_text(textwrap.dedent("""
        import torch
        def tiny():
            return torch.nn.Sequential(torch.nn.Linear(8, 4)), torch.randn(1, 8)
    """))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The console script, as a user runs it (`python -m` would put the cwd first on the path by Python's own rule).
    script = Path(sys.executable).with_name("archbench")
    if not script.exists():
        pytest.skip(f"no archbench console script beside {sys.executable}")
    proc = subprocess.run([str(script), "run", "mlp_s", "mynets:tiny", "--runtime", "torch,onnxruntime", *FAST,
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    recs = read_records(out / "records.jsonl")
    assert {(r.model, r.runtime) for r in recs if r.ok} == {
        ("mlp_s", "torch"), ("mlp_s", "onnxruntime"), ("mynets:tiny", "torch"), ("mynets:tiny", "onnxruntime")}
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert "the user" not in logs


# ------------------------------------------------------------------------------------------------ torch-free workers


def _run(tmp_path: Path, runtimes: str, precisions: str = "fp32", models: tuple[str, ...] = ("resnet_s",)) -> list:
    out = tmp_path / "run"
    proc = subprocess.run([*ARCHBENCH, "run", *models, "--runtime", runtimes, "--precision", precisions, *FAST,
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return read_records(out / "records.jsonl")


BARE = r"""
import sys, json
def hwm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
runtime, path, threads, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
import numpy as np
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
if runtime == "onnxruntime":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    run = lambda: s.run(None, {s.get_inputs()[0].name: x})
else:
    import openvino as ov
    c = ov.Core()
    cm = c.compile_model(c.read_model(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                         "INFERENCE_NUM_THREADS": str(threads), "INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    run = lambda: req.infer({0: x}, share_inputs=True)
for _ in range(50):
    run()
assert "torch" not in sys.modules
print(hwm("VmHWM:"))
"""


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not _has("openvino"), reason="openvino not installed (pip install 'archbench[openvino]')"))])
def test_torch_free_worker_memory_matches_a_bare_process_of_the_runtime(tmp_path: Path, runtime: str) -> None:
    """Deployment-true memory: the worker imports no torch, and its peak RSS is within 15% of a process that imports
    only the runtime and numpy and runs the same file with the same threads."""
    (rec,) = _run(tmp_path, runtime)
    assert rec.ok, rec.error
    assert "torch was imported" not in rec.warning
    assert rec.rss_imports_mib and rec.rss_model_mib is not None
    assert rec.peak_rss_mib == pytest.approx(rec.rss_imports_mib + rec.rss_model_mib, abs=0.02)
    variant = json.loads((tmp_path / "run" / "artifacts" / "resnet_s" / f"variant_{runtime}_fp32.json").read_text())
    shape = [int(d) for d in rec.input_shape.split("x")]
    bare = float(subprocess.run([sys.executable, "-c", BARE, runtime, variant["path"], str(rec.threads),
                                 json.dumps(shape)], capture_output=True, text=True, check=True).stdout)
    assert abs(rec.peak_rss_mib - bare) <= 0.15 * bare, f"{runtime}: worker {rec.peak_rss_mib:.1f} MiB, bare {bare:.1f}"


def test_torch_free_worker_runs_with_torch_unimportable(tmp_path: Path) -> None:
    """The ONNX Runtime worker's whole path (variant loading, timing, memory, fidelity) with torch made
    unimportable in that process: any torch import would fail the cell."""
    _run(tmp_path, "onnxruntime", "fp32,int8-dynamic")  # builds the artefacts and the variant (torch allowed)
    out = tmp_path / "run"
    cells = tuple(Cell("resnet_s", runtime="onnxruntime", precision=p, threads=1, knobs="{}")
                  for p in ("fp32", "int8-dynamic"))
    job = Job(cells=cells[:1], workdir=str(out / "artifacts" / "resnet_s"), rule=QUICK)
    code = ("import sys; sys.modules['torch'] = None; sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
            "from archbench.bench.modes.worker import main; main()")
    for c in cells:
        stdin = Job(cells=(c,), workdir=job.workdir, rule=StopRule(min_iters=3, min_time_s=0.0)).to_json()
        proc = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=300)
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        rec = Record.from_dict([e for e in events if e["event"] == "record"][-1]["record"])
        assert rec.ok, f"{c.precision}: {rec.error}\n{proc.stderr[-2000:]}"
        assert rec.cosine is not None and rec.cosine > 0.99


@pytest.mark.skipif(not _has("openvino"), reason="openvino not installed (pip install 'archbench[openvino]')")
def test_openvino_cells_fidelity_threads_and_reasons(tmp_path: Path) -> None:
    recs = {r.precision: r for r in _run(tmp_path, "openvino", "fp32,fp16,int8-dynamic", ("mlp_s",))}
    fp32 = recs["fp32"]
    assert fp32.ok and fp32.cosine > 0.9999 and fp32.top1_agree == 1.0
    assert fp32.runtime_threads == 1 and "INFERENCE_NUM_THREADS=1" in fp32.runtime_config
    assert "PERFORMANCE_HINT=LATENCY" in fp32.runtime_config and "INFERENCE_PRECISION_HINT=f32" in fp32.runtime_config
    assert fp32.runtime_version and fp32.size_mib and fp32.load_ms and fp32.first_inference_ms
    assert recs["fp16"].ok and recs["fp16"].size_mib < 0.6 * fp32.size_mib  # fp16 weights in the IR
    assert recs["int8-dynamic"].status == "skipped" and "int8-static" in recs["int8-dynamic"].error


@pytest.mark.skipif(not (_has("openvino") and _has("nncf")), reason="openvino/nncf not installed "
                    "(pip install 'archbench[openvino]')")
def test_openvino_int8_static_through_nncf(tmp_path: Path) -> None:
    recs = {r.precision: r for r in _run(tmp_path, "openvino", "fp32,int8-static", ("resnet_s",))}
    q = recs["int8-static"]
    assert q.ok, q.error
    assert "nncf.quantize" in q.quant_method and q.size_mib < 0.4 * recs["fp32"].size_mib
    assert q.cosine > 0.99 and "torch was imported" not in q.warning


# ------------------------------------------------------------------------------------------------ package shape


def _module_graph() -> dict[str, set[str]]:
    """archbench.bench's modules -> the archbench.bench modules they import (top-level and function-level alike)."""
    import ast

    root = TESTS.parent / "bench"
    mods: dict[str, set[str]] = {}
    for p in root.rglob("*.py"):
        name = "archbench.bench." + ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("archbench.bench"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("archbench.bench")}
        mods[name] = deps
    return {m: {d for d in deps if d in mods and d != m and not m.startswith(d + ".")} for m, deps in mods.items()}


def test_no_import_cycles_and_no_file_over_500_lines() -> None:
    graph = _module_graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join([*stack[stack.index(v):], v]))
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
    long = [f"{p.relative_to(TESTS.parent)}: {n}" for p in (TESTS.parent / "bench").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500]
    assert not long, f"files over 500 lines: {long}"


def test_torch_free_modules_do_not_import_torch() -> None:
    """What an ONNX Runtime / OpenVINO worker loads, imported in a process where torch cannot be imported."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import archbench.bench.measure.prepare, archbench.bench.measure.model, archbench.bench.measure.variants\n"
            "import archbench.bench.measure.runtimes.onnx_runtime, archbench.bench.measure.runtimes.openvino_runtime\n"
            "import archbench.bench.measure.fidelity, archbench.bench.measure.harness, archbench.bench.env\n"
            "archbench.bench.env.environment()\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]
