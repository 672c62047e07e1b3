"""The cell: one thing to measure (source x knobs x runtime x precision x batch x device x threads x mode), typed.

    cell = Cell("resnet_s", runtime="onnxruntime", precision="fp32", batch=8, threads=2)
    cell.key() == record.key()            # the same tuple identifies it in records.jsonl (--resume, compare)
    Job.from_json(job.to_json()) == job   # how a group of cells crosses the pipe to a measuring worker

A ``Cell`` is frozen and hashable. What identifies it is its fields except ``options``; ``Options`` holds what changes
how it is measured but not what it is (input shape override, fidelity samples, calibration, training and generation settings).
A ``Job`` is what one worker process receives: cells that share everything but the batch size, measured after one
model build and one runtime preparation, plus the stop rule, the run id and the artefact folder.

This module imports nothing heavy: it is loaded by torch-free workers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

MODES = ("infer", "train", "maxbatch-trial", "generate", "offline", "server", "concurrency")  # the last three:
# serving scenarios (archbench.bench.scenario)


def knobs_text(knobs: str | None) -> str:
    """How every label shows a cell's knobs: ' {width:0.5,depth:2}' from their canonical JSON, '' when none."""
    return "" if knobs in (None, "", "{}") else " " + str(knobs).replace('"', "").replace(" ", "")


def cell_label(source: str, knobs: str | None, runtime: str, precision: str, batch: int | None, mode: str = "infer",
               scenario: str = "", device: str = "cpu") -> str:
    """The one label of a cell, for logs, messages and reports: 'mlp_s {width:0.5} onnxruntime int8-static b1'
    (the device when it is not the CPU, the mode when it is not inference, then a serving cell's scenario)."""
    parts = [f"{source}{knobs_text(knobs)}", runtime, precision, f"b{batch}", "" if device in ("", "cpu") else device,
             "" if (mode or "infer") == "infer" else mode, scenario]
    return " ".join(p for p in parts if p)


def canonical_knobs(knobs: dict[str, Any] | None) -> str:
    """Knobs as records store them: JSON with sorted keys ("{}" when none)."""
    return json.dumps(dict(knobs or {}), sort_keys=True)


@dataclass(frozen=True)
class TrainOptions:
    """``--mode train`` (archbench.bench.modes.train, measure.train_step)."""

    optimizer: str = ""  # adamw | sgd
    train_samples: int | None = None
    mem_cap_mib: float | None = None
    find_max_batch: bool = False
    max_batch_limit: int | None = None

    def __post_init__(self) -> None:
        _counts(self, train_samples=1, max_batch_limit=1)
        if self.mem_cap_mib is not None and not (_number(self.mem_cap_mib) and self.mem_cap_mib > 0):
            raise ValueError(f"mem_cap_mib {self.mem_cap_mib!r}: expected a finite number > 0")


@dataclass(frozen=True)
class GenerateOptions:
    """``--mode generate`` (archbench.bench.modes.generate); the prompt is the model's example input (its seq_len)."""

    new_tokens: int = 0  # tokens generated per timed generation: 1 from the prefill, new_tokens - 1 decode steps

    def __post_init__(self) -> None:
        _counts(self, new_tokens=0)


@dataclass(frozen=True)
class ServeOptions:
    """Serving scenarios (archbench.bench.modes.serve; scenario.Rules: 0 = the scenario's default)."""

    min_duration_s: float = 0.0
    min_queries: int = 0
    tolerance: float = 0.0
    find_max_qps: str = ""  # the SLA of a --find-max-qps search ("" none)
    max_qps_rel_tol: float = 0.0

    def __post_init__(self) -> None:
        _counts(self, min_queries=0)
        for name in ("min_duration_s", "tolerance", "max_qps_rel_tol"):  # 0: the default
            v = getattr(self, name)
            if not (_number(v) and v >= 0 and (name == "min_duration_s" or v < 1)):
                raise ValueError(f"{name} {v!r}: expected a finite number >= 0" + ("" if name == "min_duration_s"
                                                                                  else " and < 1"))


@dataclass(frozen=True)
class Options:
    """How a cell is measured, not what it is (so not part of its key): what every mode reads, then each mode's own."""

    input_shape: tuple[int, ...] | None = None  # overrides the model's example input (batch dim included)
    dtype: str | None = None  # of that input
    weights: str | None = None  # state_dict file loaded into the built model
    input_sets: int = 4  # random input sets the timed loop rotates through
    fidelity_samples: int = 64  # compare at least this many samples with the fp32 PyTorch model
    calibration: str | None = None  # int8-static: pkg.mod:fn calibration hook (archbench.bench.measure.hooks)
    calib_batches: int | None = None
    calib_batch_size: int | None = None
    metric_hook: str | None = None  # pkg.mod:fn task metric (archbench.bench.measure.hooks)
    train: TrainOptions = field(default_factory=TrainOptions)
    generate: GenerateOptions = field(default_factory=GenerateOptions)
    serve: ServeOptions = field(default_factory=ServeOptions)

    def __post_init__(self) -> None:  # the Python API checks what the CLI checks (archbench.bench.cli.argtypes)
        if self.input_shape is not None and (not self.input_shape or not all(_whole(d) and d >= 1
                                                                           for d in self.input_shape)):
            raise ValueError(f"input_shape {self.input_shape!r}: expected positive whole numbers")
        _counts(self, input_sets=1, fidelity_samples=0, calib_batches=1, calib_batch_size=1)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _counts(obj: Any, **minimum: int) -> None:
    """ValueError naming the field when one of these (optional) counts is not a whole number >= its minimum."""
    for name, low in minimum.items():
        v = getattr(obj, name)
        if v is not None and not (_whole(v) and v >= low):
            raise ValueError(f"{type(obj).__name__}.{name} = {v!r}: expected a whole number >= {low}")


@dataclass(frozen=True)
class Cell:
    source: str  # zoo name, pkg.module:factory or path/to/model.onnx, as the user gave it
    runtime: str = "torch"
    precision: str = "fp32"
    batch: int = 1
    device: str = "cpu"
    threads: int = 1  # intra-op threads of the measuring runtime (resolved: never 0)
    knobs: str = "{}"  # canonical JSON of the builder keywords (canonical_knobs)
    mode: str = "infer"
    options: Options = field(default_factory=Options)
    scenario: str = ""  # serving modes: the scenario's descriptor (scenario.Scenario.descriptor)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError(f"Cell.source = {self.source!r}: expected a model reference")
        _counts(self, batch=1, threads=0)
        if self.mode not in MODES:
            raise ValueError(f"Cell.mode = {self.mode!r}: expected one of {', '.join(MODES)}")

    def key(self) -> tuple:
        """(source, knobs, runtime, precision, batch, device, threads, mode, scenario): Record.key() of its record."""
        return (self.source, self.knobs, self.runtime, self.precision, self.batch, self.device, self.threads,
                self.mode, self.scenario)

    @property
    def knob_dict(self) -> dict[str, Any]:
        return json.loads(self.knobs)

    def with_batch(self, batch: int) -> Cell:
        return replace(self, batch=batch)

    def label(self) -> str:
        return cell_label(self.source, self.knobs, self.runtime, self.precision, self.batch, self.mode,
                          self.scenario, self.device)


@dataclass(frozen=True)
class StopRule:
    """When the timed loop stops (archbench.bench.measure.harness)."""

    warmup_iters: int = 5
    warmup_s: float = 0.2
    min_iters: int = 30
    min_time_s: float = 1.0
    max_iters: int = 100_000
    max_time_s: float = 30.0

    def __post_init__(self) -> None:
        _counts(self, warmup_iters=0, min_iters=1, max_iters=1)
        for name in ("warmup_s", "min_time_s", "max_time_s"):
            v = getattr(self, name)
            if not (_number(v) and v >= 0):
                raise ValueError(f"StopRule.{name} = {v!r}: expected a finite number of seconds >= 0")
        if self.max_iters < self.min_iters or self.max_time_s <= 0:
            raise ValueError(f"StopRule: max_iters {self.max_iters} < min_iters {self.min_iters}, or max_time_s "
                             f"{self.max_time_s} <= 0")


# `archbench run`'s rule for one repetition: each cell gets several repetitions (worker processes), so one
# repetition's loop is short; time goes into more processes, where the variance is (analyze.intervals).
QUICK = StopRule(warmup_iters=3, warmup_s=0.1, min_iters=15, min_time_s=0.2, max_time_s=5.0)


@dataclass(frozen=True)
class Job:
    """One worker's work: cells identical but for the batch size, measured after one build and one prepare."""

    cells: tuple[Cell, ...]
    workdir: str  # the source's artefact folder (export, counts, input spec, reference outputs)
    run_id: str = ""
    rule: StopRule = QUICK
    user_path: str | None = None  # appended to sys.path (after archbench and site-packages) for pkg.module:factory
    kind: str = "measure"  # measure | artifacts (build the source's artefacts, see measure.artifacts)
    repetition: int = 0  # which repetition of these cells this worker is (the run's round); 0 also measures memory
    # and fidelity, later ones only time
    artifact: str = "none"  # what kind="artifacts" builds: none (counts and inputs only) | onnx
    log: str = ""  # a worker that runs several jobs (measure.dispatch.Pool, build_all) sends this job's output here

    @property
    def head(self) -> Cell:
        return self.cells[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        cells = tuple(_cell_from_dict(c) for c in d.pop("cells"))
        rule = StopRule(**d.pop("rule"))
        return cls(cells=cells, rule=rule, **d)


def _cell_from_dict(d: dict[str, Any]) -> Cell:
    opts = dict(d.pop("options") or {})
    if opts.get("input_shape") is not None:
        opts["input_shape"] = tuple(opts["input_shape"])
    for name, cls in (("train", TrainOptions), ("generate", GenerateOptions), ("serve", ServeOptions)):
        opts[name] = cls(**_known(cls, opts.get(name) or {}))
    return Cell(options=Options(**_known(Options, opts)), **d)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}
