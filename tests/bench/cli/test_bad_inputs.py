"""Bad input, as a hostile user types it: every case is one line on stderr naming the value and what is allowed,
exit 2, no traceback, and nothing measured. In-process (``main``) so a hundred cases stay fast; a few run through
the real console entry point too (tests/test_cli.py has more of those)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from tests_helpers import FIX, TESTS

from archbench.bench.cli.main import main

RUN = FIX / "synthetic_run.jsonl"  # schema 1 records of a synthetic machine (tests/fixtures/README.md)
ONE_LINE = re.compile(r"^archbench( [a-z]+)?: error: ")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of bad files, as cwd: empty and corrupt .onnx, broken budget TOML, unreadable records."""
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "bad.onnx").write_bytes(b"this is not protobuf\x00\xff")
    (tmp_path / "dir.onnx").mkdir()
    (tmp_path / "latin1.toml").write_bytes(b"[profiles.edge]\np95_ms = \"<= 20\" # caf\xe9\n")
    (tmp_path / "bom16.toml").write_bytes("[profiles.e]\np95_ms = \"<= 1\"\n".encode("utf-16"))
    (tmp_path / "broken.toml").write_text("[profiles.edge\np95_ms = '<= 20'\n")
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "toplevel.toml").write_text("p95_ms = \"<= 20\"\n")
    (tmp_path / "notable.toml").write_text("[profiles]\nedge = 5\n")
    (tmp_path / "number.toml").write_text("[profiles.edge]\np95_ms = 20\n")
    (tmp_path / "unknown_metric.toml").write_text("[profiles.edge]\np100_ms = \"<= 20\"\n")
    (tmp_path / "badconf.toml").write_text("[profiles.edge]\nconfidence = 1.5\np95_ms = \"<= 20\"\n")
    (tmp_path / "strconf.toml").write_text("[profiles.edge]\nconfidence = \"high\"\np95_ms = \"<= 20\"\n")
    (tmp_path / "noterms.toml").write_text("[profiles.edge]\ndescription = \"nothing\"\n")
    (tmp_path / "inf.toml").write_text("[profiles.edge]\np95_ms = \"<= inf\"\n")
    (tmp_path / "two.toml").write_text("[profiles.a]\np95_ms = \"<= 1\"\n[profiles.b]\np95_ms = \"<= 2\"\n")
    (tmp_path / "deep.toml").write_text("x = " + "[" * 2000 + "]" * 2000 + "\n")
    runs = tmp_path / "runs"
    for name, text in {
        "empty": "",
        "garbage": "not json\n\x00\x01\n",
        "arrays": "[1, 2]\n\"text\"\n3\nnull\n",
        "notypes": json.dumps({"model": 5, "runtime": "torch", "precision": "fp32", "batch": 1, "device": "cpu",
                               "threads": 1}) + "\n",
        "future": json.dumps({"model": "m", "runtime": "torch", "precision": "fp32", "batch": 1, "device": "cpu",
                              "threads": 1, "schema_version": 99}) + "\n",
        "zero": json.dumps({"model": "m", "runtime": "torch", "precision": "fp32", "batch": 1, "device": "cpu",
                            "threads": 1, "schema_version": 0}) + "\n",
        "strschema": json.dumps({"model": "m", "runtime": "torch", "precision": "fp32", "batch": 1, "device": "cpu",
                                 "threads": 1, "schema_version": "3"}) + "\n",
        "latin1": "caf\xe9\n",
    }.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "records.jsonl").write_text(text, encoding="latin-1")
    (runs / "nofile").mkdir()
    (runs / "ok").mkdir()
    shutil.copy(RUN, runs / "ok" / "records.jsonl")
    (tmp_path / "records.csv").write_text("model\nx\n")
    monkeypatch.chdir(tmp_path)

    def no_measuring(*args: object, **kwargs: object) -> None:
        raise AssertionError("bad input reached the engine: it must be refused before any worker starts")

    from archbench.bench.measure import engine
    from archbench.bench.modes import maxbatch

    monkeypatch.setattr(engine, "run", no_measuring)
    monkeypatch.setattr(maxbatch, "run_search", no_measuring)
    return tmp_path


R = ["run", "mlp_s"]
P = ["profile", "mlp_s"]
CASES: list[tuple[list[str], str]] = [
    # --- knobs: type and range, checked before anything is built (models._registry.check_knobs)
    ([*P, "--knob", "width=-1"], "knob width=-1: expected a number > 0"),
    ([*P, "--knob", "width=0"], "knob width=0: expected a number > 0"),
    ([*P, "--knob", "width=abc"], "knob width='abc': expected a number > 0"),
    ([*P, "--knob", "width=nan"], "knob width=nan: expected a number > 0"),
    ([*P, "--knob", "width=inf"], "knob width=inf: expected a number > 0"),
    ([*P, "--knob", "width=true"], "knob width=True: expected a number > 0"),
    ([*P, "--knob", "depth=1.5"], "knob depth=1.5: expected a whole number >= 1"),
    ([*P, "--knob", "depth=0"], "knob depth=0: expected a whole number >= 1"),
    ([*P, "--knob", "depth=-3"], "knob depth=-3: expected a whole number >= 1"),
    ([*P, "--knob", "depth=two"], "knob depth='two': expected a whole number >= 1"),
    ([*P, "--knob", "fused=maybe"], "knob fused='maybe': expected true or false"),
    ([*P, "--knob", "fused=1"], "knob fused=1: expected true or false"),
    ([*P, "--knob", "num_classes=0"], "knob num_classes=0: expected a whole number >= 1"),
    ([*P, "--knob", "in_features=-64"], "knob in_features=-64: expected a whole number >= 1"),
    ([*P, "--knob", "nosuch=1"], "has no knob nosuch; its knobs are: width"),
    ([*P, "--knob", "width"], "bad --knob 'width': expected NAME=VALUE"),
    ([*P, "--knob", "=3"], "bad --knob '=3': expected NAME=VALUE"),
    (["profile", "resnet_s", "--knob", "resolution=0"], "knob resolution=0: expected a whole number >= 1"),
    (["profile", "vit_s", "--knob", "patch_size=0"], "knob patch_size=0: expected a whole number >= 1"),
    (["profile", "vit_s", "--knob", "patch_size=7"], "cannot be built with patch_size=7: ViT resolution 64 is not"),
    (["profile", "llama_tiny", "--knob", "seq_len=0"], "knob seq_len=0: expected a whole number >= 1"),
    (["profile", "llama_tiny", "--knob", "vocab_size=1.5"], "knob vocab_size=1.5: expected a whole number >= 1"),
    (["profile", "mobilenet_s", "--knob", "depth=None"], "knob depth='None': expected a whole number >= 1"),
    ([*P, "--width", "-1"], "argument --width: '-1': expected a finite number > 0"),
    ([*P, "--width", "0"], "argument --width: '0': expected a finite number > 0"),
    ([*P, "--depth", "1.5"], "argument --depth: '1.5': expected a whole number >= 1"),
    ([*P, "--num-classes", "0"], "argument --num-classes: '0': expected a whole number >= 1"),
    ([*P, "--resolution", "-224"], "argument --resolution: '-224': expected a whole number >= 1"),
    ([*P, "--seq-len", "nan"], "argument --seq-len: 'nan': expected a whole number >= 1"),
    ([*R, "--width", "inf"], "argument --width: 'inf': expected a finite number"),
    ([*R, "--knob", "width=-1"], "knob width=-1: expected a number > 0"),
    ([*R, "--knob", "nosuch=1"], "model 'mlp_s' has no knob nosuch"),
    # --- profile's own numbers
    ([*P, "--batch", "0"], "argument --batch: '0': expected a whole number >= 1"),
    ([*P, "--batch", "-2"], "argument --batch: '-2': expected a whole number >= 1"),
    ([*P, "--batch", "1e99"], "argument --batch"),
    ([*P, "--max-depth", "-1"], "argument --max-depth: '-1': expected a whole number >= 1"),
    ([*P, "--by", "layer"], "argument --by: invalid choice: 'layer'"),
    # --- shapes and dtypes
    ([*P, "--input-shape", "1x99999999999"], "do not fit in this machine's"),
    ([*P, "--input-shape", "1,-3"], "bad --input-shape '1,-3'"),
    ([*P, "--input-shape", ""], "bad --input-shape ''"),
    ([*P, "--input-shape", "1,,3"], "bad --input-shape '1,,3'"),
    ([*P, "--input-shape", "1.5,3"], "bad --input-shape '1.5,3'"),
    ([*P, "--dtype", "float128"], "bad --dtype 'float128'"),
    ([*R, "--input-shape", "0,64"], "bad --input-shape '0,64'"),
    ([*R, "--input-shape", "1x99999999999"], "do not fit in this machine's"),
    ([*R, "--dtype", "int3"], "bad --dtype 'int3'"),
    # --- ONNX files
    (["profile", "empty.onnx"], "empty.onnx is empty (0 bytes), not an ONNX model"),
    (["profile", "bad.onnx"], "cannot read ONNX file bad.onnx"),
    (["profile", "dir.onnx"], "no such ONNX file: dir.onnx"),
    (["profile", "nope.onnx"], "no such ONNX file: nope.onnx"),
    (["run", "empty.onnx"], "empty.onnx is empty (0 bytes)"),
    (["run", "bad.onnx", "--runtime", "onnxruntime"], "cannot read ONNX file bad.onnx"),
    (["run", "mlp_s", "empty.onnx"], "empty.onnx is empty"),
    # --- run --baseline: one of the models, and something to compare with it
    (["run", "mlp_s", "gru_s", "--baseline", "vit_s"], "--baseline vit_s: not one of this run's models (mlp_s, gru_s)"),
    ([*R, "--baseline", "mlp_s"], "--baseline mlp_s: needs at least one other model to compare with it"),
    # --- run: counts, durations, seeds, fractions
    ([*R, "--batch", "-2"], "batch sizes must be positive"),
    ([*R, "--batch", "0"], "batch sizes must be positive"),
    ([*R, "--batch", "1,x"], "bad batch list '1,x'"),
    ([*R, "--batch", ""], "empty batch list"),
    ([*R, "--batch", "1.5"], "bad batch list '1.5'"),
    ([*R, "--threads", "0"], "argument --threads: '0': expected a whole number >= 1"),
    ([*R, "--threads", "-1"], "argument --threads: '-1'"),
    ([*R, "--threads", "two"], "argument --threads: 'two'"),
    ([*R, "--repetitions", "0"], "argument --repetitions: '0': expected a whole number >= 1"),
    ([*R, "--repetitions", "2.5"], "argument --repetitions: '2.5'"),
    ([*R, "--max-repetitions", "0"], "argument --max-repetitions: '0'"),
    ([*R, "--rel-ci", "0"], "--rel-ci 0.0: a fraction between 0 and 1"),
    ([*R, "--rel-ci", "1"], "--rel-ci 1.0: a fraction between 0 and 1"),
    ([*R, "--rel-ci", "-0.1"], "--rel-ci -0.1: a fraction between 0 and 1"),
    ([*R, "--rel-ci", "nan"], "--rel-ci nan: a fraction between 0 and 1"),
    ([*R, "--rel-ci", "0.05", "--max-repetitions", "1", "--repetitions", "3"], "--max-repetitions 1: must be >="),
    ([*R, "--max-repetitions", "5"], "--max-repetitions only applies with --rel-ci"),
    ([*R, "--seed", "-1"], "argument --seed: '-1': expected a whole number >= 0"),
    ([*R, "--seed", "1e20"], "argument --seed: '1e20'"),
    ([*R, "--timeout", "-5"], "argument --timeout: '-5': expected a finite number of seconds > 0"),
    ([*R, "--timeout", "0"], "argument --timeout: '0'"),
    ([*R, "--timeout", "nan"], "argument --timeout: 'nan'"),
    ([*R, "--timeout", "inf"], "argument --timeout: 'inf'"),
    ([*R, "--min-time", "-1"], "argument --min-time: '-1': expected a finite number of seconds >= 0"),
    ([*R, "--min-time", "inf"], "argument --min-time: 'inf'"),
    ([*R, "--min-iters", "0"], "argument --min-iters: '0': expected a whole number >= 2"),
    ([*R, "--min-iters", "1"], "argument --min-iters: '1'"),
    ([*R, "--warmup", "-3"], "argument --warmup: '-3': expected a whole number >= 0"),
    ([*R, "--calib-batches", "0"], "argument --calib-batches: '0'"),
    ([*R, "--calib-batch-size", "-8"], "argument --calib-batch-size: '-8'"),
    ([*R, "--fidelity-samples", "-1"], "argument --fidelity-samples: '-1': expected a whole number >= 0"),
    ([*R, "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
    ([*R, "--runtime", ""], "empty runtime list"),
    ([*R, "--precision", "fp13"], "unknown precision 'fp13'"),
    ([*R, "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ([*R, "--mode", "serve"], "argument --mode: invalid choice: 'serve'"),
    ([*R, "--calibration", "nosuchmod:fn"], "cannot import 'nosuchmod'"),
    ([*R, "--metric-hook", "nocolon"], "expected pkg.module:"),
    ([*R, "--budget", "p50_ms<="], "'' is not a number"),
    ([*R, "--budget", "p50_ms<=nan"], "the limit is nan"),
    ([*R, "--budget", "p50_ms<=inf"], "the limit is inf"),
    ([*R, "--budget", "p50_ms<=20ms"], "'20ms' is not a number"),
    ([*R, "--budget", "p50_ms=>20"], "p50_ms"),
    ([*R, "--budget", "p95_sec<=20"], "unknown budget metric 'p95_sec'"),
    ([*R, "--budget", "p50_ms<=20,,size_mib<=1"], "term 2 is empty"),
    ([*R, "--budget", ","], "empty"),
    ([*R, "--budget", "nope.toml"], "no such budget file: nope.toml"),
    ([*R, "--budget", "latin1.toml"], "budget file latin1.toml is not UTF-8 text"),
    ([*R, "--confidence", "1.5", "--budget", "p50_ms<=1"], "--confidence 1.5"),
    ([*R, "--profile", "edge"], "--profile needs --budget FILE.toml"),
    # --- budget files
    (["check", "runs/ok", "--budget", "latin1.toml"], "is not UTF-8 text"),
    (["check", "runs/ok", "--budget", "bom16.toml"], "is not UTF-8 text"),
    (["check", "runs/ok", "--budget", "broken.toml"], "is not valid TOML"),
    (["check", "runs/ok", "--budget", "empty.toml"], "has no [profiles.NAME] table"),
    (["check", "runs/ok", "--budget", "toplevel.toml"], "unknown top-level key 'p95_ms'"),
    (["check", "runs/ok", "--budget", "notable.toml"], "[profiles.edge]: expected a table"),
    (["check", "runs/ok", "--budget", "number.toml"], "write the comparison as a string"),
    (["check", "runs/ok", "--budget", "unknown_metric.toml"], "unknown budget metric 'p100_ms'"),
    (["check", "runs/ok", "--budget", "badconf.toml"], "confidence = 1.5"),
    (["check", "runs/ok", "--budget", "strconf.toml"], "confidence = 'high'"),
    (["check", "runs/ok", "--budget", "noterms.toml"], "no budget terms"),
    (["check", "runs/ok", "--budget", "inf.toml"], "the limit is inf"),
    (["check", "runs/ok", "--budget", "two.toml"], "has 2 profiles (a, b)"),
    (["check", "runs/ok", "--budget", "two.toml:c"], "has no profile 'c'"),
    (["check", "runs/ok", "--budget", "two.toml:a", "--profile", "b"], "but --profile says 'b'"),
    (["check", "runs/ok", "--budget", "deep.toml"], "deep.toml"),
    (["check", "runs/ok", "--budget", "runs"], "runs"),
    # --- records
    (["check", "runs/empty", "--budget", "p50_ms<=1"], "no records in runs/empty"),
    (["check", "runs/garbage", "--budget", "p50_ms<=1"], "no records in runs/garbage"),
    (["check", "runs/arrays", "--budget", "p50_ms<=1"], "no records in runs/arrays"),
    (["check", "runs/notypes", "--budget", "p50_ms<=1"], "no records in runs/notypes"),
    (["check", "runs/latin1", "--budget", "p50_ms<=1"], "no records in runs/latin1"),
    (["check", "runs/future", "--budget", "p50_ms<=1"], "schema_version 99 is newer than this archbench reads"),
    (["check", "runs/zero", "--budget", "p50_ms<=1"], "schema_version 0 is not a positive integer"),
    (["check", "runs/strschema", "--budget", "p50_ms<=1"], "schema_version '3' is not a positive integer"),
    (["check", "runs/nofile", "--budget", "p50_ms<=1"], "no such records file"),
    (["check", "records.csv", "--budget", "p50_ms<=1"], "the CSV has no raw samples"),
    (["pick", "runs/future", "--budget", "p50_ms<=1"], "schema_version 99 is newer"),
    (["report", "runs/future", "--no-measure"], "schema_version 99 is newer"),
    (["report", "runs/empty", "--no-measure"], "no records"),
    (["report", "runs/nofile", "--no-measure"], "no records.jsonl or *.jsonl"),
    (["report", "records.csv", "--no-measure"], "expected a .jsonl records file"),
    (["compare", "runs/future", "runs/ok"], "schema_version 99 is newer"),
    (["compare", "runs/ok", "runs/zero"], "schema_version 0 is not a positive integer"),
    (["compare", "runs/ok", "runs/empty"], "no records"),
    (["compare", "runs/ok", "nope"], "no such file or folder: nope"),
    # --- compare's numbers and gates
    (["compare", "runs/ok", "runs/ok", "--seed", "-1"], "argument --seed: '-1'"),
    (["compare", "runs/ok", "runs/ok", "--alpha", "2"], "--alpha must be between 0 and 1"),
    (["compare", "runs/ok", "runs/ok", "--alpha", "nan"], "--alpha must be between 0 and 1"),
    (["compare", "runs/ok", "runs/ok", "--bootstrap", "0"], "argument --bootstrap: '0': expected a whole number >= 100"),
    (["compare", "runs/ok", "runs/ok", "--noise", "-5"], "--noise -5.0: a percentage in [0, 100)"),
    (["compare", "runs/ok", "runs/ok", "--noise", "nan"], "--noise nan"),
    (["compare", "runs/ok", "runs/ok", "--fail-on", "p95_ms:+abc%"], "bad --fail-on item 'p95_ms:+abc%'"),
    (["compare", "runs/ok", "runs/ok", "--fail-on", "p95:+10%"], "unknown --fail-on metric 'p95'"),
    (["check", "runs/ok", "--budget", "p50_ms<=1", "--confidence", "nan"], "--confidence nan"),
    (["check", "runs/ok", "--budget", "p50_ms<=1", "--confidence", "0.2"], "--confidence 0.2"),
    # --- doctor and list
    (["doctor", "--processes", "0"], "--processes"),
    (["doctor", "--threads", "0"], "--threads"),
    (["list", "zzz*"], "no model matches 'zzz*'"),
    (["list", "--source", "pypi"], "argument --source: invalid choice: 'pypi'"),
    # --- serving loads
    ([*R, "--scenario", "server", "--qps", "1e12", "--min-duration", "0.2"], "2e+11 requests: more than the"),
    ([*R, "--scenario", "server", "--qps", "0"], "argument --qps: '0'"),
    # --- commands and flags that do not exist
    (["benchmark"], "argument COMMAND: invalid choice: 'benchmark'"),
    (["run", "--nosuch"], "unrecognized arguments: --nosuch"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2(workspace: Path, args: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors (archbench.bench.cli.argtypes.Parser: one line too)
        code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("archbench: warning: ")]
    assert code == 2, err
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert ONE_LINE.match(lines[0]), lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


def test_enough_distinct_bad_inputs() -> None:
    """The issue's bar: at least 100 distinct bad inputs exercised (this file; faults in test_faults.py)."""
    assert len({tuple(a) for a, _ in CASES}) == len(CASES) >= 100


def test_unreadable_lines_are_named_warnings_and_good_records_survive(workspace: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A records file with a corrupt line in the middle, a non-object, a wrong type and a partial last line: every
    bad line is one warning naming file and line; every good record is judged."""
    good = RUN.read_text().splitlines()
    mixed = workspace / "runs" / "mixed"
    mixed.mkdir()
    bad_type = json.loads(good[0]) | {"batch": "one"}
    lines = [good[0], "{not json", good[1], "[1, 2]", json.dumps(bad_type), *good[2:], good[0][:40]]
    (mixed / "records.jsonl").write_text("\n".join(lines))  # no final newline: a partial last line
    assert main(["check", "runs/mixed", "--budget", "size_mib<=1000"]) == 1  # the fixture's failed cell: ERROR
    out, err = capsys.readouterr()
    warnings = [ln for ln in err.splitlines() if ln.startswith("archbench: warning: ")]
    assert [w.split(" line ")[1].split(":")[0] for w in warnings] == ["2", "4", "5", str(len(lines))], err
    assert "field batch is 'one', not int" in err
    assert out.count("PASS") >= len({json.loads(g)["model"] for g in good})


def test_fail_on_that_compares_nothing_is_bad_input(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = workspace / "runs" / "other"
    other.mkdir()
    recs = [json.loads(ln) | {"model": "renamed_" + json.loads(ln)["model"]} for ln in RUN.read_text().splitlines()]
    (other / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["compare", "runs/ok", "runs/other", "--fail-on", "p95_ms:+10%"]) == 2
    assert "--fail-on gates nothing: no cell of runs/other is also in runs/ok" in capsys.readouterr().err
    assert main(["compare", "runs/ok", "runs/other"]) == 0  # without a gate, a report of nothing in common is fine


@pytest.mark.parametrize("factory, message", [
    ("exits", "factory 'userfactories:exits' raised SystemExit: 3"),
    ("interrupts", "factory 'userfactories:interrupts' raised KeyboardInterrupt"),
    ("colours", "raised ValueError: red alert from a factory that prints in colour"),
    ("two_inputs", "its forward takes 2 inputs (x, y)"),
])
def test_user_code_is_reported_not_obeyed(factory: str, message: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A factory calling sys.exit() or raising KeyboardInterrupt does not end archbench; colour codes it prints into
    its message do not reach the terminal or a record; a two-input forward is told what to do."""
    monkeypatch.chdir(TESTS)
    assert main(["profile", f"userfactories:{factory}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "\x1b" not in err and len(err.strip().splitlines()) == 1, err


def test_resuming_a_generate_run_with_other_new_tokens_is_refused(workspace: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import asdict

    from archbench.bench.record import Record

    out = workspace / "gen"
    out.mkdir()
    rec = Record(model="llama_tiny", runtime="torch", precision="fp32", batch=1, device="cpu", threads=1,
                 mode="generate", new_tokens=64)
    (out / "repetitions.jsonl").write_text(json.dumps(asdict(rec)) + "\n")
    (out / "records.jsonl").write_text("")
    assert main(["run", "llama_tiny", "--mode", "generate", "--new-tokens", "8", "--resume", "--out", str(out)]) == 2
    assert "measured --new-tokens 64; --resume it with the same value" in capsys.readouterr().err


@pytest.mark.parametrize("build, message", [
    (lambda: __import__("archbench.bench.cell", fromlist=["Cell"]).Cell("mlp_s", batch=0), "Cell.batch = 0"),
    (lambda: __import__("archbench.bench.cell", fromlist=["Cell"]).Cell("mlp_s", batch=True), "Cell.batch = True"),
    (lambda: __import__("archbench.bench.cell", fromlist=["Cell"]).Cell(" "), "Cell.source = ' '"),
    (lambda: __import__("archbench.bench.cell", fromlist=["Cell"]).Cell("mlp_s", mode="serve!"), "Cell.mode"),
    (lambda: __import__("archbench.bench.cell", fromlist=["Options"]).Options(input_shape=(1, 0)), "input_shape"),
    (lambda: __import__("archbench.bench.cell", fromlist=["Options"]).Options(fidelity_samples=-1),
     "Options.fidelity_samples = -1"),
    (lambda: __import__("archbench.bench.cell", fromlist=["Options"]).TrainOptions(mem_cap_mib=float("nan")),
     "mem_cap_mib nan"),
    (lambda: __import__("archbench.bench.cell", fromlist=["StopRule"]).StopRule(min_iters=0),
     "StopRule.min_iters = 0"),
    (lambda: __import__("archbench.bench.cell", fromlist=["StopRule"]).StopRule(min_time_s=-1.0),
     "StopRule.min_time_s = -1.0"),
    (lambda: __import__("archbench.models", fromlist=["create_model"]).create_model("mlp_s", width=0),
     "knob width=0: expected a number > 0"),
])
def test_the_python_api_checks_what_the_cli_checks(build: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        build()  # type: ignore[operator]
    assert message in str(e.value) and "\n" not in str(e.value)
