"""The CLI as a user runs it: exit codes, one-line errors, real output."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests_helpers import ROOT, TESTS

from archbench.bench.cli.main import main


def archbench(*args: str, cwd: Path = TESTS, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (what a user types)."""
    return subprocess.run([sys.executable, "-m", "archbench.bench.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["profile", "resnt_s"], "unknown model 'resnt_s'; did you mean resnet_s"),
        (["profile", "userfactories:good", "--input-shape", "1,3,x"], "bad --input-shape '1,3,x'"),
        (["profile", "userfactories:good", "--input-shape", "1,0,4"], "bad --input-shape '1,0,4'"),
        (["profile", "userfactories:good"], "states no example input; pass --input-shape"),
        (["profile", "userfactories:raises"], "factory 'userfactories:raises' raised RuntimeError: factory exploded"),
        (["profile", "userfactories:not_a_module"], "returned int, expected an nn.Module"),
        (["profile", "nosuchmodule:build"], "cannot import 'nosuchmodule'"),
        (["profile", "userfactories:nothing"], "has no attribute 'nothing'"),
        (["profile", "missing.onnx"], "no such ONNX file: missing.onnx"),
        (["profile", "resnet_s", "--knob", "nonsense=1"], "has no knob nonsense"),
        (["profile", "resnet_s", "--dtype", "int3"], "bad --dtype 'int3'"),
        (["list", "zzz*"], "no model matches 'zzz*'"),
        (["run", "resnt_s"], "unknown model 'resnt_s'"),
        (["run", "resnet_s", "--runtime", "tensorrt"], "unknown runtime 'tensorrt'; known: torch"),
        (["run", "resnet_s", "--batch", "1,a"], "bad batch list '1,a'"),
        (["run", "resnet_s", "--batch", "0"], "batch sizes must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    p = archbench(*args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{p.stderr}"
    assert lines[0].startswith("archbench: error: ")
    assert message in lines[0]
    assert "Traceback" not in p.stderr


def test_debug_shows_traceback() -> None:
    p = archbench("--debug", "profile", "userfactories:raises")
    assert p.returncode != 0
    assert "Traceback" in p.stderr


def test_list_shows_zoo_and_wildcards(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "vit*", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == ["vit_s", "vit_tiny"]
    tiny = rows[1]
    assert tiny["family"] == "vit" and tiny["params"] == "5717416"
    assert tiny["input"] == "1x3x224x224 float32"
    assert "width=" in tiny["knobs"] or "depth=" in tiny["knobs"]


def test_profile_summary_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "llama_tiny", "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "FLOPs" in out and "= 2 x MACs" in out
    # FlopCounterMode counts no attention on CPU: the profile says so instead of hiding the gap.
    assert "FlopCounterMode does not count scaled_dot_product_attention" in out
    uncounted = out.split("uncounted ops", 1)[1]
    assert "embedding" in uncounted  # a lookup, no MACs, but it is listed with its time share


def test_profile_operator_csv(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "vit_s", "--by", "operator", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    ops = {r["op"]: r for r in rows}
    assert "scaled_dot_product_attention" in ops and int(ops["scaled_dot_product_attention"]["macs"]) > 0
    assert ops["layer_norm"]["macs"] == ""  # uncounted: listed, no MACs
    total = sum(int(r["macs"]) for r in rows if r["macs"])
    assert abs(sum(float(r["mac_share"]) for r in rows if r["mac_share"]) - 1.0) < 1e-6
    assert total > 0


def test_profile_by_module_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "resnet_s", "--by", "module", "--format", "json", "--max-depth", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    root = rows[0]
    assert root["module"] == "(model)"
    children = [r for r in rows[1:] if "." not in r["module"]]
    assert sum(r["macs"] for r in children) == root["macs"]


def test_profile_user_factory_with_input_shape(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(TESTS)
    assert main(["profile", "userfactories:good", "--input-shape", "1,3,16,16", "--format", "json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    # conv 3->8 3x3 on 16x16: 16*16*8*3*9 MACs; fc 8->10: 80 MACs
    assert prof["macs"] == 16 * 16 * 8 * 3 * 9 + 80
    assert prof["params"] == 8 * 3 * 9 + 8 + 8 * 10 + 10


def test_profile_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from tests_helpers import export_small_onnx

    path = export_small_onnx(tmp_path)
    assert main(["profile", str(path), "--format", "json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["params"] == 8 * 3 * 9 + 8 + 8 * 10 + 10
    assert prof["macs"] == 20 * 20 * 8 * 3 * 9 + 80
    assert prof["file_bytes"] >= prof["params"] * 4  # weights counted, .data file included
    del torch


@pytest.mark.parametrize("cmd", [["run", "mlp_s", "--out", "{f}/x"], ["report", "{root}/results/default-cpu",
                                                                       "--out", "{f}/r"]])
def test_an_unwritable_out_is_one_line_and_exit_3(tmp_path, cmd) -> None:
    """--out under a file (the OS refuses): one `archbench: error:` line naming the path, exit 3, no traceback."""
    f = tmp_path / "a_file"
    f.write_text("")
    root = ROOT
    proc = archbench(*[c.format(f=f, root=root) for c in cmd])
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("archbench: error:")]
    assert proc.returncode == 3 and len(err) == 1 and str(f) in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
