"""Files in an artefact folder: written whole or not at all, read without crashing, and what an ONNX file is made of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, obj: Any) -> None:
    """Write next to ``path`` and rename over it: a reader never sees half a file."""
    from archbench.bench.atomic import atomic_write

    atomic_write(path, json.dumps(obj))


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def onnx_files(path: Path) -> list[Path]:
    """The .onnx file and every external-data file its initializers point at (the exporter writes a .data file)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    files = {path}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    files.add(path.parent / kv.value)
    return sorted(files)
