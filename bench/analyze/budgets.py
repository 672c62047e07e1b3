"""Deployment budgets and the verdict of each record against one: PASS, FAIL, INCONCLUSIVE, ERROR or SKIPPED.

Two ways to write a budget:

    "p95_ms<=20, size_mib<=30, top1_agree>=0.99"           an expression: comma- (or ;-) separated terms
    budgets/edge.toml[:PROFILE]                            a TOML file of named profiles (schema below)

A term is ``METRIC OP NUMBER`` with OP one of ``<= < >= >``. METRIC is a name of the metric registry
(archbench.bench.analyze.metrics; an alias such as the Record field itself, ``latency_p95_ms``, works too); any latency
percentile ``pNN_ms`` (e.g. ``p75_ms``, ``p99.9_ms``) is judged from the raw samples.

TOML schema (one table per profile under ``[profiles]``; a file with a single profile needs no profile name)::

    [profiles.edge]
    description = "phone-class CPU, interactive"   # optional, shown in reports
    confidence = 0.95                               # optional, one-sided confidence of percentile bounds
    p95_ms = "<= 20"                                # METRIC = "OP NUMBER"
    size_mib = "<= 30"
    top1_agree = ">= 0.99"
    p50_ms = [">= 0.01", "<= 10"]                   # a list for a range

How each term is judged:

- latency percentiles (``p50_ms`` ... ``p99_ms``, ``pNN_ms``) with a distribution-free confidence bound from the
  record's ``samples_ms`` (``archbench.bench.analyze.orderstats``): for ``p95_ms <= L``, PASS when the upper bound is <= L, FAIL
  when the lower bound is > L, INCONCLUSIVE otherwise, with an estimate of how many samples would decide;
- every other metric on its recorded value (sizes and counts are exact; ``mean_ms`` and ``throughput_sps``
  are point estimates, said so in the reason);
- ``task_metric_drop`` is derived: the fp32 sibling's ``task_metric`` minus this cell's (archbench.bench.analyze.siblings:
  same model, knobs, batch, device, mode and machine; the torch fp32 cell when there is one, else the same
  runtime's);
- a serving record (``archbench run --scenario``) whose run was INVALID (archbench.bench.measure.loadgen: it could not
  keep up, or ran too short) FAILs every timed term, with the reason;
- a missing metric is INCONCLUSIVE with the reason, a failed record ERROR, a skipped record SKIPPED.

A record's verdict is FAIL if any term fails, else ERROR, else INCONCLUSIVE, else PASS.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from archbench.bench.analyze.merge import machine_cell_key
from archbench.bench.analyze.metrics import Metric, metric
from archbench.bench.errors import UsageError
from archbench.bench.numfmt import num
from archbench.bench.record import Record

PASS, FAIL, INCONCLUSIVE, ERROR, SKIPPED = "PASS", "FAIL", "INCONCLUSIVE", "ERROR", "SKIPPED"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, ERROR, SKIPPED)
OPS = ("<=", ">=", "<", ">")
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Term:
    metric: Metric
    op: str
    limit: float
    text: str  # as written, for messages

    def holds(self, value: float) -> bool:
        return {"<=": value <= self.limit, "<": value < self.limit,
                ">=": value >= self.limit, ">": value > self.limit}[self.op]

    def __str__(self) -> str:
        return f"{self.metric.name} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class Budget:
    terms: tuple[Term, ...]
    name: str = ""  # the profile name, or "" for an expression
    source: str = ""  # the expression or file it came from
    description: str = ""
    confidence: float = DEFAULT_CONFIDENCE

    def describe(self) -> str:
        head = f"{self.source}:{self.name}" if self.name and self.source.endswith(".toml") else self.source
        return f"{head} ({', '.join(str(t) for t in self.terms)})"


_TERM_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>|=<|=>|==|=|!=)?\s*(.*?)\s*$")


def parse_term(text: str, where: str = "") -> Term:
    """``"p95_ms <= 20"`` -> Term. UsageError naming the term when malformed."""
    ctx = f" in {where}" if where else ""
    m = _TERM_RE.match(text)
    if not m or not text.strip():
        raise UsageError(f"bad budget term {text.strip()!r}{ctx}: expected METRIC OP NUMBER, e.g. 'p95_ms <= 20'")
    name, op, num = m.groups()
    if op not in OPS:
        what = f"operator {op!r}" if op else "no comparison operator"
        raise UsageError(f"bad budget term {text.strip()!r}{ctx}: {what}; use one of {', '.join(OPS)}")
    met = metric(name)  # raises naming the metric
    try:
        limit = float(num)
    except ValueError:
        raise UsageError(f"bad budget term {text.strip()!r}{ctx}: {num!r} is not a number "
                         "(units live in the metric's name: p95_ms <= 20, size_mib <= 30)") from None
    if not math.isfinite(limit):
        raise UsageError(f"bad budget term {text.strip()!r}{ctx}: the limit is {limit}; expected a finite number")
    return Term(met, op, limit, text.strip())


def parse_expression(text: str) -> Budget:
    """``"p95_ms<=20, size_mib<=30"`` -> Budget. Terms are separated by commas, semicolons or newlines."""
    parts = [p for p in re.split(r"[,;\n]", text)]
    if not any(p.strip() for p in parts):
        raise UsageError("empty budget: expected terms like 'p95_ms<=20, size_mib<=30'")
    terms = []
    for i, p in enumerate(parts):
        if not p.strip():
            raise UsageError(f"bad budget {text!r}: term {i + 1} is empty (a stray comma?)")
        terms.append(parse_term(p, f"budget {text.strip()!r}"))
    return Budget(tuple(terms), source=text.strip())


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError("budget files need Python >= 3.11 (tomllib) or `pip install tomli`") from None
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"no such budget file: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"budget file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"budget file {path} is not UTF-8 text (byte {e.start}): TOML files are UTF-8") from None
    except IsADirectoryError:
        raise UsageError(f"budget file {path} is a folder") from None
    except RecursionError:
        raise UsageError(f"budget file {path} nests too deeply to read") from None


def parse_profile(name: str, table: dict[str, Any], source: str, section: str = "profiles") -> Budget:
    """One ``[profiles.NAME]`` table -> Budget (see the module docstring for the schema). ``section`` is the
    table's parent as messages name it (the pytest plugin reads ``[tool.archbench.budgets.NAME]``)."""
    where = f"{source} [{section}.{name}]"
    if not isinstance(table, dict):
        raise UsageError(f"{where}: expected a table of METRIC = \"OP NUMBER\"")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"{where}: description must be a string")
    confidence = table.get("confidence", DEFAULT_CONFIDENCE)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise UsageError(f"{where}: confidence = {confidence!r}; expected a number in [0.5, 1), e.g. 0.95")
    terms = []
    for key, value in table.items():
        if key in ("description", "confidence"):
            continue
        try:
            metric(key)  # an unknown name first: quoting the value would not fix it
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, str):
                raise UsageError(f"{where}: {key} = {v!r}; write the comparison as a string, e.g. "
                                 f"{key} = \"<= {v}\"")
            terms.append(parse_term(f"{key} {v}", f"{where}, key {key!r}"))
    if not terms:
        raise UsageError(f"{where}: no budget terms")
    return Budget(tuple(terms), name=name, source=source, description=description, confidence=float(confidence))


def load_file(path: str | Path, profile: str | None = None) -> Budget:
    """A profile of a TOML budget file; the profile may be omitted when the file has exactly one."""
    path = Path(path)
    data = _load_toml(path)
    unknown = sorted(set(data) - {"profiles"})
    if unknown:
        raise UsageError(f"budget file {path}: unknown top-level key {unknown[0]!r}; profiles live under "
                         "[profiles.NAME] tables")
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise UsageError(f"budget file {path} has no [profiles.NAME] table")
    if profile is None:
        if len(profiles) != 1:
            raise UsageError(f"budget file {path} has {len(profiles)} profiles ({', '.join(profiles)}); "
                             f"name one: --budget {path}:{next(iter(profiles))} or --profile NAME")
        profile = next(iter(profiles))
    if profile not in profiles:
        raise UsageError(f"budget file {path} has no profile {profile!r}; it has: {', '.join(profiles)}")
    return parse_profile(profile, profiles[profile], str(path))


def parse_budget(text: str, profile: str | None = None, confidence: float | None = None) -> Budget:
    """What ``--budget`` takes: ``file.toml``, ``file.toml:PROFILE`` or an expression. ``profile`` (from
    ``--profile``) names the profile of a file; ``confidence`` (from ``--confidence``) overrides the budget's."""
    text = text.strip()
    m = re.match(r"^(.+?\.toml)(?::([A-Za-z0-9_.-]+))?$", text)
    if m:
        if m.group(2) and profile and m.group(2) != profile:
            raise UsageError(f"--budget names profile {m.group(2)!r} but --profile says {profile!r}")
        budget = load_file(m.group(1), m.group(2) or profile)
    else:
        if profile:
            raise UsageError("--profile names a profile of a budget file; the budget given is an expression")
        budget = parse_expression(text)
    if confidence is not None:
        if not 0.5 <= confidence < 1:
            raise UsageError(f"--confidence {confidence}: expected a number in [0.5, 1), e.g. 0.95")
        budget = Budget(budget.terms, budget.name, budget.source, budget.description, confidence)
    return budget


# --------------------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class TermVerdict:
    term: Term
    verdict: str
    value: float | None = None  # the point estimate
    lower: float | None = None  # confidence bounds (percentile terms)
    upper: float | None = None
    n: int | None = None  # samples the bounds rest on
    samples_needed: int | None = None  # INCONCLUSIVE percentiles: total samples that would decide, if any
    reason: str = ""


@dataclass(frozen=True)
class RecordVerdict:
    record: Record
    verdict: str
    terms: tuple[TermVerdict, ...] = field(default_factory=tuple)
    reason: str = ""  # for ERROR / SKIPPED records: why

    @property
    def label(self) -> str:
        return record_label(self.record)


def record_label(r: Record) -> str:
    """The record's cell label (Record.label)."""
    return r.label()


def _combine(verdicts: Iterable[str]) -> str:
    vs = list(verdicts)
    for v in (FAIL, ERROR, INCONCLUSIVE):
        if v in vs:
            return v
    return PASS


def judge_percentile(term: Term, samples: Sequence[float], confidence: float) -> TermVerdict:
    """A latency-percentile term from raw samples, by order-statistic confidence bounds (archbench.bench.analyze.orderstats)."""
    from archbench.bench.analyze import orderstats

    q = term.metric.quantile
    assert q is not None
    b = orderstats.quantile_bounds(samples, q, confidence)
    below_is_good = term.op in ("<=", "<")
    # Upper bound good (<=: ub <= L) -> PASS; lower bound bad (lb > L) -> FAIL. Mirrored for >=.
    if below_is_good:
        passed = b.upper is not None and term.holds(b.upper)
        failed = b.lower is not None and not term.holds(b.lower)
    else:
        passed = b.lower is not None and term.holds(b.lower)
        failed = b.upper is not None and not term.holds(b.upper)
    conf = f"{confidence:.0%}"
    bounds = f"{conf} bounds [{num(b.lower)}, {num(b.upper)}] ms from n={b.n}"
    common = dict(value=b.estimate, lower=b.lower, upper=b.upper, n=b.n)
    if passed:
        which = "upper" if below_is_good else "lower"
        return TermVerdict(term, PASS, reason=f"{bounds}: the {which} bound meets {term.op} {term.limit:g}", **common)
    if failed:
        which = "lower" if below_is_good else "upper"
        return TermVerdict(term, FAIL, reason=f"{bounds}: even the {which} bound misses {term.op} {term.limit:g}",
                           **common)
    good = sum(1 for s in samples if term.holds(s)) / b.n
    need = orderstats.samples_to_decide(b.n, q, confidence, good, below_is_good)
    missing = "upper" if (b.upper is None and below_is_good) or (b.lower is None and not below_is_good) else ""
    if missing:
        why = f"n={b.n} is too few for any {conf} {'upper' if below_is_good else 'lower'} bound on p{100 * q:g}"
    else:
        why = f"{bounds} straddle {term.limit:g}"
    if need is None:
        why += "; no sample count would decide: the budget sits at the measured quantile"
    else:
        way = orderstats.decides(need, q, confidence, good, below_is_good)
        why += f"; ~{need - b.n} more samples (n~{need}) would likely decide {way} if the distribution holds"
    return TermVerdict(term, INCONCLUSIVE, samples_needed=need, reason=why, **common)


def judge_over_repetitions(term: Term, per_rep: Sequence[float], confidence: float) -> TermVerdict:
    """A latency term from its per-repetition values (one per worker process): the interval of
    archbench.bench.analyze.intervals at ``confidence``. PASS when the bound on the far side of the limit meets it,
    FAIL when even the near bound misses it, else INCONCLUSIVE with about how many repetitions would decide."""
    import math as _m

    from archbench.bench.analyze.intervals import log_interval, t_quantile

    iv = log_interval(per_rep, confidence)
    below_is_good = term.op in ("<=", "<")
    conf = f"{confidence:.0%}"
    bounds = f"{conf} interval [{num(iv.lo)}, {num(iv.hi)}] ms over {iv.n} repetitions"
    common = dict(value=iv.estimate, lower=iv.lo, upper=iv.hi, n=iv.n)
    if iv.lo is None or iv.hi is None:
        return TermVerdict(term, INCONCLUSIVE, reason="one repetition: no interval (--repetitions 3 or more)",
                           **common)
    far, near = (iv.hi, iv.lo) if below_is_good else (iv.lo, iv.hi)
    if term.holds(far):
        return TermVerdict(term, PASS, reason=f"{bounds}: it meets {term.op} {term.limit:g}", **common)
    if not term.holds(near):
        return TermVerdict(term, FAIL, reason=f"{bounds}: it misses {term.op} {term.limit:g}", **common)
    # Repetitions m whose half-width t(m-1) s / sqrt(m) (logs) would clear the limit, for the spread seen so far.
    x = [_m.log(v) for v in per_rep if v > 0]
    s = float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    gap = abs(_m.log(term.limit / iv.estimate)) if term.limit > 0 else 0.0
    need = next((m for m in range(iv.n + 1, 201) if t_quantile(m - 1, confidence) * s / _m.sqrt(m) < gap), None)
    why = f"{bounds} straddles {term.limit:g}"
    why += (f"; about {need - iv.n} more repetitions (--repetitions {need}) would likely decide it" if need
            else "; no affordable number of repetitions would decide: the limit sits at the measured value")
    return TermVerdict(term, INCONCLUSIVE, samples_needed=need, reason=why, **common)


def _per_rep(r: Record, quantile: float) -> list[float]:
    """The quantile of each repetition's own samples (the record's per-repetition statistics where stored)."""
    stored = {0.5: r.rep_p50_ms, 0.95: r.rep_p95_ms, 0.99: r.rep_p99_ms}.get(quantile)
    if stored and len(stored) == len(r.samples_by_rep or stored):
        return list(stored)
    return [float(np.percentile(np.asarray(s, dtype=float), 100 * quantile, method="linear"))
            for s in (r.samples_by_rep or []) if s]


def judge_term(term: Term, r: Record, confidence: float, context: Sequence[Record] = ()) -> TermVerdict:
    met = term.metric
    if met.mode and (r.mode or "infer") != met.mode:  # tpot_ms, tokens_per_s... on a record of another mode
        return TermVerdict(term, INCONCLUSIVE, reason=met.read(r, context)[1])
    if r.valid is False and met.timed:  # a serving run that could not keep up: its timings pass nothing
        return TermVerdict(term, FAIL, reason=f"INVALID serving run: {r.invalid_reason}")
    if met.rep_field and len(getattr(r, met.rep_field) or []) >= 2:  # ttft_ms, e2e_ms: their own repetitions
        v = judge_over_repetitions(term, getattr(r, met.rep_field), confidence)
        return v if met.unit == "ms" else replace(v, reason=v.reason.replace("] ms over", f"] {met.unit} over"))
    if met.quantile is not None and met.samples:
        per_rep = _per_rep(r, met.quantile)
        if len(per_rep) >= 2:
            return judge_over_repetitions(term, per_rep, confidence)
        samples = getattr(r, met.samples) or []
        if samples:
            v = judge_percentile(term, samples, confidence)
            note = "; one repetition: bounds from one loop's samples understate run-to-run variance"
            return TermVerdict(v.term, v.verdict, v.value, v.lower, v.upper, v.n, v.samples_needed, v.reason + note)
        return TermVerdict(term, INCONCLUSIVE, value=getattr(r, met.field) if met.field else None,
                           reason=f"no raw {met.samples} in the record (read records.jsonl, not the CSV)")
    if met.field in ("latency_mean_ms", "throughput_sps") and len(r.rep_mean_ms or []) >= 2:
        # The mean and throughput (= batch / mean) over repetitions, with their interval.
        per_rep = [m if met.field == "latency_mean_ms" else r.batch * 1000.0 / m for m in r.rep_mean_ms if m > 0]
        v = judge_over_repetitions(term, per_rep, confidence)
        unit = "ms" if met.field == "latency_mean_ms" else met.unit
        return TermVerdict(v.term, v.verdict, v.value, v.lower, v.upper, v.n, v.samples_needed,
                           v.reason.replace("] ms over", f"] {unit} over"))
    value, why = met.read(r, context)
    if value is None:
        return TermVerdict(term, INCONCLUSIVE, reason=why)
    if math.isnan(value):
        return TermVerdict(term, FAIL, value=value, reason="value is NaN (non-finite outputs?)")
    return TermVerdict(term, PASS if term.holds(value) else FAIL, value=value, reason=why)


def judge_record(r: Record, budget: Budget, context: Sequence[Record] = ()) -> RecordVerdict:
    """One record against a budget; ``context``: the records its derived metrics look in (its fp32 sibling)."""
    if r.status == "skipped":
        return RecordVerdict(r, SKIPPED, reason=r.error or "")
    if not r.ok:
        return RecordVerdict(r, ERROR, reason=f"cell {r.status}: {r.error or ''}")
    tv = tuple(judge_term(t, r, budget.confidence, context) for t in budget.terms)
    return RecordVerdict(r, _combine(t.verdict for t in tv), tv)


def judge(records: Sequence[Record], budget: Budget) -> list[RecordVerdict]:
    """Verdicts of every record (its fp32 siblings in ``records`` give the derived task_metric_drop)."""
    # Max-batch and max-QPS search trials are probes, not candidates: their failures are expected and judged by
    # nobody (a max-QPS search's answer is the record with max_qps set).
    return [judge_record(r, budget, records) for r in records
            if r.mode != "maxbatch-trial" and not (r.sla and r.max_qps is None)]


def summary(verdicts: Sequence[RecordVerdict]) -> dict[str, int]:
    out = {v: 0 for v in VERDICTS}
    for v in verdicts:
        out[v.verdict] += 1
    return out


def exit_code(verdicts: Sequence[RecordVerdict], strict: bool = False) -> int:
    """1 when any record FAILs or ERRORs (and, with strict, when any is INCONCLUSIVE); else 0."""
    bad = {FAIL, ERROR} | ({INCONCLUSIVE} if strict else set())
    return 1 if any(v.verdict in bad for v in verdicts) else 0


# ------------------------------------------------------------------------------------- verdicts beside records


@dataclass(frozen=True)
class CellVerdict:
    """A record's budget verdict as a report shows it beside the record: the verdict and why it is not PASS."""

    verdict: str  # PASS | FAIL | INCONCLUSIVE | ERROR | SKIPPED
    reason: str = ""


# Verdicts beside records are keyed by archbench.bench.analyze.merge.machine_cell_key (machine and cell).
Verdicts = Mapping[tuple, CellVerdict]


def verdicts_from_json(data: Any, records: Sequence[Record]) -> dict[tuple, CellVerdict]:
    """Match a verdicts.json (what ``archbench run --budget`` writes: ``verdicts_json`` of archbench.bench.report.verdicts)
    to ``records`` by cell (model, knobs, runtime, precision, batch, and the cell label: mode and scenario)."""
    if not isinstance(data, list):
        return {}
    # the cell label (record_label) tells a serving or training cell from the inference cell of the same batch
    by_cell = {(v.get("model"), v.get("knobs") or "", v.get("runtime"), v.get("precision"), v.get("batch"),
                v.get("cell")): v for v in data if isinstance(v, dict)}
    out = {}
    for r in records:
        key = (r.model, r.knobs or "", r.runtime, r.precision, r.batch)
        v = by_cell.get((*key, record_label(r)), by_cell.get((*key, None)))
        if v is None:
            continue
        why = [f"{t.get('term')} {t.get('verdict')}" + (f": {t['reason']}" if t.get("reason") else "")
               for t in v.get("terms", []) if isinstance(t, dict) and t.get("verdict") != PASS]
        out[machine_cell_key(r)] = CellVerdict(str(v.get("verdict")), "; ".join(why) or str(v.get("reason") or ""))
    return out


def verdict_of(r: Record, verdicts: Verdicts) -> CellVerdict | None:
    """The verdict reported beside ``r``, from a map keyed by archbench.bench.analyze.merge.machine_cell_key."""
    if not verdicts:
        return None
    return verdicts.get(machine_cell_key(r))
