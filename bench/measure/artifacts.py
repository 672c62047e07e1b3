"""What a model leaves in its artefact folder, built once per model by a worker of its own, read by every runtime.

    runs/x/artifacts/<model>[_<knobs>]/
        source.json          family, kind (zoo | import | onnx), the ONNX file to load, how it was exported
        specs.json           the input specs (measure.inputs.ArraySpec), one per model input
        counts.json          params and batch-1 MACs (measure.profile / measure.onnx_profile)
        model.onnx (+ .data) the fp32 export, checked against PyTorch (measure.export)   [artifact "onnx"]
        refs_b<B>.npz        fp32 PyTorch outputs on input sets 0..n-1 at batch B, keys s<seed>_o<k>  [same]
    --mode generate (measure.decode) instead: step.onnx, the decode-step graph; specs.json its inputs;
        generate_n<N>.json   shape facts, params, MACs of the prefill and the mean decode step
        generate_tokens_b<B>_n<N>.npy   fp32 PyTorch greedy tokens from the fixed prompt

``build`` (the artifacts worker) imports torch; everything else here does not: a torch-free measuring worker
(ONNX Runtime, OpenVINO) reads the folder through ``Exported`` (measure.model) and holds no PyTorch. The export is
built before any measuring worker starts, so no measuring process carries the exporter's libraries (dynamo,
onnxscript: ~200 MiB resident), and every runtime and precision of a model measures the same graph.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from archbench.bench.cell import Job
from archbench.bench.measure.files import onnx_files, read_json, write_json  # noqa: F401  (onnx_files: re-exported)
from archbench.bench.measure.inputs import ArraySpec, fidelity_seeds, make_inputs, specs_to_json

SOURCE, SPECS, COUNTS, ONNX = "source.json", "specs.json", "counts.json", "model.onnx"


def refs_path(workdir: Path, batch: int) -> Path:
    return workdir / f"refs_b{batch}.npz"


def generate_info_path(workdir: Path, new_tokens: int) -> Path:
    """--mode generate: shape facts, params and MACs of the prefill and mean decode step (measure.decode)."""
    return workdir / f"generate_n{new_tokens}.json"


def generate_refs_path(workdir: Path, batch: int, new_tokens: int) -> Path:
    """--mode generate: the fp32 PyTorch greedy tokens (batch, new_tokens) from the fixed prompt."""
    return workdir / f"generate_tokens_b{batch}_n{new_tokens}.npy"


def build(job: Job, emit: Any) -> None:
    """The artifacts worker: everything the job's measuring workers will read, skipping what is already there."""
    t0 = time.perf_counter()
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        meta = _build(job, workdir)
    except Exception as e:
        from archbench.bench.measure.protocol import one_line

        write_json(workdir / SOURCE, {"error": one_line(e)})  # the measuring workers report it
        raise
    emit("artifacts", seconds=round(time.perf_counter() - t0, 3), exporter=meta["exporter"])


def _build(job: Job, workdir: Path) -> dict[str, Any]:
    import torch

    from archbench.bench.measure.export import export_onnx, verify_onnx
    from archbench.bench.measure.sources import build_source

    cell = job.head
    torch.set_num_threads(cell.threads)
    src, specs = build_source(cell)  # seeded: every worker of the run builds the same weights
    meta: dict[str, Any] = {"family": src.family, "kind": src.kind, "onnx": None, "exporter": ""}
    if not (workdir / COUNTS).exists():
        write_json(workdir / COUNTS, static_counts(src, specs))
    write_json(workdir / SPECS, [s.to_json() for s in specs])
    if src.onnx_path is not None:
        meta["onnx"] = str(Path(src.onnx_path).resolve())
    elif job.artifact == "onnx":
        path = workdir / ONNX
        old = read_json(workdir / SOURCE)
        if path.exists() and old.get("exporter"):
            meta["exporter"] = old["exporter"]
        else:
            meta["exporter"] = export_onnx(src.module, specs, path)
            verify_onnx(src.module, specs, path)
        meta["onnx"] = str(path.resolve())
        write_refs(src.module, specs, workdir, _by_batch(job.cells))
    write_json(workdir / SOURCE, meta)
    return meta


def _by_batch(cells: Any) -> list[Any]:
    seen: dict[int, Any] = {}
    for c in cells:
        seen.setdefault(c.batch, c)
    return list(seen.values())


def write_refs(module: Any, specs: tuple[ArraySpec, ...], workdir: Path, cells: Any) -> None:
    """fp32 reference outputs for fidelity, per batch size, on the input sets the runtimes will use (torch).

    A file already there (written by another worker of the run) is kept when this module reproduces its first set;
    else it is rewritten from this module: a factory that seeding torch does not make deterministic then still
    gets references from the weights that are being measured."""
    from archbench.bench.measure.export import check_close, run_module, torch_inputs

    for c in cells:
        out = refs_path(workdir, c.batch)
        seeds = fidelity_seeds(c.batch, c.options.input_sets, c.options.fidelity_samples)
        if out.exists():
            old = read_refs(workdir, c.batch)
            try:
                if set(seeds) <= set(old):
                    check_close(old[0], run_module(module, torch_inputs(specs, c.batch, 0)))
                    continue
            except RuntimeError:
                pass
        arrays = {}
        for s in seeds:
            for k, y in enumerate(run_module(module, torch_inputs(specs, c.batch, s))):
                arrays[f"s{s}_o{k}"] = y
        tmp = out.with_name(out.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(out)


def static_counts(src: Any, specs: tuple[ArraySpec, ...]) -> dict[str, Any]:
    """Params and batch-1 MACs of a source (a model fvcore cannot trace still gets timed: MACs left out)."""
    import sys

    from archbench.bench.measure.protocol import one_line

    if src.module is None:
        from archbench.bench.measure.onnx_profile import profile_onnx

        p = profile_onnx(src.onnx_path, specs[0].with_batch(1).shape if len(specs) == 1 else None)
        return {"params": p.params, "macs": p.macs}
    import torch

    from archbench.bench.measure.profile import count_macs, count_params

    counts: dict[str, Any] = {"params": count_params(src.module)[0]}
    try:
        x = tuple(torch.from_numpy(a) for a in make_inputs(specs, 1, 0))
        counts["macs"] = count_macs(src.module, x)
    except Exception as e:
        print(f"MAC count failed: {one_line(e)}", file=sys.stderr)
    return counts


def read_meta(workdir: Path) -> dict[str, Any]:
    return read_json(workdir / SOURCE)


def read_counts(workdir: Path) -> dict[str, Any]:
    return read_json(workdir / COUNTS)


def read_specs(workdir: Path) -> tuple[ArraySpec, ...]:
    return tuple(ArraySpec.from_json(d) for d in json.loads((workdir / SPECS).read_text()))


def read_refs(workdir: Path, batch: int) -> dict[int, list[np.ndarray]]:
    """{seed: outputs} of the fp32 references at ``batch`` (empty when there are none, e.g. an .onnx source)."""
    path = refs_path(workdir, batch)
    if not path.exists():
        return {}
    out: dict[int, list[np.ndarray]] = {}
    with np.load(path) as z:
        for key in sorted(z.files, key=lambda k: tuple(int(x) for x in k[1:].split("_o"))):
            seed = int(key[1:].split("_o")[0])
            out.setdefault(seed, []).append(z[key])
    return out


__all__ = ["build", "onnx_files", "read_counts", "read_meta", "read_refs", "read_specs", "specs_to_json"]
