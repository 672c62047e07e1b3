"""Property-based tests (hypothesis) of the parsers where user text enters: the budget-expression parser, the TOML
budget loader, the records reader, the CLI's numeric arguments and the zoo's knob check. The property is always
the same contract: a value is either accepted *and means what it says*, or refused with one line of the tool's own
error type — never another exception, never a lost record."""

from __future__ import annotations

import argparse
import json
import math
import string
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from archbench.bench.analyze.budgets import OPS, Budget, load_file, metric, parse_expression
from archbench.bench.analyze.metrics import METRICS
from archbench.bench.cli.argtypes import Parser, check_count, check_seconds, count, seconds, seconds_or_zero
from archbench.bench.errors import UsageError
from archbench.bench.record import Record, SchemaError, append_jsonl, read_records
from archbench.models._registry import check_knobs, list_models

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMES = sorted(METRICS)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


def _one_line(e: BaseException) -> None:
    text = str(e)
    assert text and "\n" not in text.strip() and "Traceback" not in text, text


# ----------------------------------------------------------------------------------------- budget expressions

@SETTINGS
@given(st.text(max_size=80))
def test_any_text_is_a_budget_or_one_usage_error(text: str) -> None:
    try:
        budget = parse_expression(text)
    except UsageError as e:
        _one_line(e)
        return
    assert isinstance(budget, Budget) and budget.terms


@SETTINGS
@given(st.text(alphabet=string.ascii_letters + string.digits + "_<>=!,;. -+e%", max_size=60))
def test_budget_like_text_is_a_budget_or_one_usage_error(text: str) -> None:
    test_any_text_is_a_budget_or_one_usage_error.hypothesis.inner_test(text)  # type: ignore[attr-defined]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(sorted(OPS)), finite,
                          st.sampled_from(["", " ", "  "]), st.sampled_from([",", ";", "\n", ", "])),
                min_size=1, max_size=5))
def test_well_formed_budgets_mean_what_they_say(terms: list[tuple[str, str, float, str, str]]) -> None:
    """Every term written comes back with its metric, operator and limit (whatever spacing and separators)."""
    text = terms[0][4].join(f"{m}{sp}{op}{sp}{limit!r}" for m, op, limit, sp, _ in terms) if len(terms) == 1 else \
        "".join(f"{m}{sp}{op}{sp}{limit!r}" + (sep if i < len(terms) - 1 else "")
                for i, (m, op, limit, sp, sep) in enumerate(terms))
    budget = parse_expression(text)
    assert [(t.metric.name, t.limit) for t in budget.terms] == [(metric(m).name, lim) for m, _, lim, _, _ in terms]
    for t, (_, op, limit, _, _) in zip(budget.terms, terms, strict=True):
        assert t.holds(limit) == (op in ("<=", ">=", "=<", "=>"))  # the limit itself passes only inclusive ops


@SETTINGS
@given(st.sampled_from(NAMES), st.sampled_from(["nan", "inf", "-inf", "1e999", "", "abc", "1,5", "0x10"]))
def test_non_finite_or_non_numeric_limits_are_refused(name: str, limit: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_expression(f"{name} <= {limit}")
    _one_line(e.value)


# ----------------------------------------------------------------------------------------- TOML budget files

@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_as_a_budget_file_load_or_fail_with_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "b.toml"
    path.write_bytes(data)
    try:
        load_file(path)
    except UsageError as e:
        _one_line(e)


toml_values = st.one_of(
    st.text(alphabet=string.printable.replace("\\", "").replace('"', "").replace("\n", "").replace("\r", ""),
            max_size=20).map(lambda s: f'"{s}"'),
    finite.map(repr), st.booleans().map(lambda b: str(b).lower()),
    st.lists(st.sampled_from(['"<= 1"', '">= 0.5"', "3"]), max_size=3).map(lambda x: "[" + ", ".join(x) + "]"),
)


@SETTINGS
@given(st.dictionaries(st.sampled_from([*NAMES[:12], "description", "confidence", "bogus_metric"]), toml_values,
                       max_size=6))
def test_profile_tables_load_or_fail_with_one_line(tmp_path: Path, table: dict[str, str]) -> None:
    path = tmp_path / "b.toml"
    path.write_text("[profiles.p]\n" + "".join(f"{k} = {v}\n" for k, v in table.items()))
    try:
        budget = load_file(path)
    except UsageError as e:
        _one_line(e)
        return
    assert budget.name == "p" and budget.terms and 0.5 <= budget.confidence < 1


# ----------------------------------------------------------------------------------------- records reader

def _record(i: int) -> Record:
    return Record(model=f"m{i}", runtime="torch", precision="fp32", batch=1 + i, device="cpu", threads=1,
                  latency_p50_ms=0.5 + i, samples_ms=[0.5 + i, 0.6 + i])


json_junk = st.recursive(st.none() | st.booleans() | finite | st.text(max_size=10),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                         max_leaves=8)


@SETTINGS
@given(lines=st.lists(st.one_of(st.integers(0, 5).map(lambda i: ("good", i)),
                          st.text(max_size=30).map(lambda t: ("text", t)),
                          json_junk.map(lambda j: ("json", j)),
                          st.tuples(st.sampled_from(["model", "batch", "threads", "samples_ms", "latency_p50_ms",
                                                     "status", "rep_p50_ms"]), json_junk).map(lambda kv: ("typo", kv))),
                max_size=12))
def test_records_reader_keeps_every_good_record_and_never_crashes(tmp_path: Path, lines: list[tuple[str, object]],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Good records interleaved with junk: non-JSON text, JSON of any shape, records with a field of a wrong type.
    The reader returns every good record, in order, and warns once per line it skips."""
    path = tmp_path / "records.jsonl"
    expected, written = [], []
    for kind, value in lines:
        if kind == "good":
            rec = _record(int(value))  # type: ignore[arg-type]
            written.append(json.dumps(asdict(rec)))
            expected.append(rec)
        elif kind == "text":
            written.append(str(value).replace("\n", " ").replace("\r", " "))
        elif kind == "json":
            written.append(json.dumps(value))
        else:
            key, bad = value  # type: ignore[misc]
            d = asdict(_record(0)) | {key: bad}
            written.append(json.dumps(d))
            try:
                expected.append(Record.from_dict(d))  # a value that happens to be of the right type stays good
            except (TypeError, ValueError):
                pass
    path.write_text("\n".join(written) + ("\n" if written else ""))
    got = read_records(path)
    assert [asdict(r) for r in got] == [asdict(r) for r in expected]
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("archbench: warning: ") == sum(1 for w in written if w.strip()) - len(expected)


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=4), st.integers(1, 4))
def test_append_after_any_fragment_loses_nothing(tmp_path: Path, fragments: list[bytes], n: int) -> None:
    """Whatever a crash or a full disk left at the end of the file (no final newline), records appended afterwards
    are all read back, and the records before the fragment too."""
    path = tmp_path / "records.jsonl"
    path.unlink(missing_ok=True)
    before = [_record(i) for i in range(2)]
    for r in before:
        append_jsonl(path, r)
    with open(path, "ab") as fh:
        fh.write(b"\n".join(fragments).replace(b"\n", b" "))
    after = [_record(10 + i) for i in range(n)]
    for r in after:
        append_jsonl(path, r)
    keys = [r.key() for r in read_records(path)]
    for r in before + after:
        assert r.key() in keys


@SETTINGS
@given(st.integers(min_value=4, max_value=10**6))
def test_a_newer_schema_is_refused_by_name(tmp_path: Path, version: int) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(asdict(_record(0)) | {"schema_version": version}) + "\n")
    with pytest.raises(SchemaError, match=f"schema_version {version} is newer"):
        read_records(path)


# ----------------------------------------------------------------------------------------- CLI numbers

def _parser() -> Parser:
    p = Parser(prog="archbench run")
    p.add_argument("--timeout", type=seconds)
    p.add_argument("--min-time", type=seconds_or_zero)
    p.add_argument("--repetitions", type=count(1))
    p.add_argument("--min-iters", type=count(2))
    return p


numberish = st.one_of(st.text(max_size=12), finite.map(repr), st.integers(-10**30, 10**30).map(str),
                      st.sampled_from(["nan", "inf", "-inf", "1e3", "1e-3", "0", "-0", "1_000", " 5 ", "0x10", "2.0"]))


@SETTINGS
@given(flag=st.sampled_from(["--timeout", "--min-time", "--repetitions", "--min-iters"]), text=numberish)
def test_numeric_flags_accept_only_what_they_say(flag: str, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assume(not text.startswith("-") or text.lstrip("-")[:1].isdigit() or text.startswith("-inf"))
    try:
        ns = _parser().parse_args([flag, text])
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("archbench run: error: "), err
        return
    value = getattr(ns, flag[2:].replace("-", "_"))
    assert isinstance(value, (int, float)) and math.isfinite(value)
    if flag == "--timeout":
        assert value > 0
    elif flag == "--min-time":
        assert value >= 0
    else:
        assert isinstance(value, int) and value >= (1 if flag == "--repetitions" else 2) and value == float(text)


@SETTINGS
@given(st.one_of(st.none(), st.booleans(), finite, st.integers(-10**20, 10**20), st.text(max_size=8)))
def test_python_api_checks_match_the_cli(value: object) -> None:
    for check in (lambda v: check_count(v, 1, "n"), lambda v: check_seconds(v, "t")):
        try:
            out = check(value)
        except ValueError as e:
            _one_line(e)
            continue
        assert not isinstance(value, bool) and out > 0 and math.isfinite(out)


def test_argparse_types_name_themselves() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number >= 1"):
        count(1)("0")


# ----------------------------------------------------------------------------------------- zoo knobs

ZOO = list_models()


@SETTINGS
@given(st.sampled_from(ZOO), st.sampled_from(["width", "depth", "resolution", "seq_len", "num_classes", "fused",
                                              "patch_size", "vocab_size", "in_features", "nosuch"]),
       st.one_of(st.none(), st.booleans(), finite, st.integers(-5, 5), st.text(max_size=6)))
def test_knob_check_accepts_sizes_and_refuses_the_rest(name: str, knob: str, value: object) -> None:
    try:
        out = check_knobs(name, {knob: value})
    except ValueError as e:
        _one_line(e)
        assert name in str(e) and knob in str(e)
        return
    v = out[knob]
    if isinstance(v, bool):
        assert isinstance(value, bool)
    elif v is not None:
        assert isinstance(v, (int, float)) and v > 0 and math.isfinite(v) and not isinstance(value, str)
