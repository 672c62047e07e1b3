"""Options shared by the commands that take models and cells (run, sweep, profile) and their parsing."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from archbench.bench.cli.argtypes import count, positive_number, seconds, seconds_or_zero, seed
from archbench.bench.errors import UsageError

# Knob flags every model-taking command understands; each maps to the builder keyword of the same name.
# (argparse type, metavar): every zoo size is positive; the registry checks the rest (models._registry).
KNOB_FLAGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "width": (positive_number, "FLOAT"), "depth": (count(1), "INT"), "resolution": (count(1), "INT"),
    "seq_len": (count(1), "INT"), "num_classes": (count(1), "INT"),
}


def add_cell_options(p: argparse.ArgumentParser) -> None:
    """--batch, --device, --threads: shared by `run` and `sweep`."""
    p.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=count(1), default=None, help="intra-op threads for every runtime (default: all CPUs)")


def add_timing_options(p: argparse.ArgumentParser) -> None:
    """--timeout, the repetitions and the stop rule of each (--min-time, --min-iters, --warmup): `run` and `sweep`."""
    from archbench.bench.cell import QUICK
    from archbench.bench.measure.engine import DEFAULT_REPETITIONS

    g = p.add_argument_group("repetitions and timing (each repetition is a fresh worker process; see README "
                             "'How it measures')")
    g.add_argument("--repetitions", type=count(1), default=DEFAULT_REPETITIONS, metavar="N",
                   help=f"worker processes per cell, in interleaved rounds (default {DEFAULT_REPETITIONS}; "
                        "intervals need >= 2)")
    g.add_argument("--rel-ci", type=float, default=None, metavar="FRACTION",
                   help="precision target: add repetitions to a cell until its p50 95%% interval is within "
                        "+/-FRACTION (e.g. 0.03), its budget verdict is decided, or --max-repetitions")
    g.add_argument("--max-repetitions", type=count(1), default=None, metavar="N",
                   help="cap for --rel-ci (default 3 x --repetitions)")
    g.add_argument("--seed", type=seed, default=None, help="seed of the random round order (default: the clock)")
    g.add_argument("--timeout", type=seconds, default=300.0, help="seconds per cell before it is killed (default 300)")
    g.add_argument("--min-time", type=seconds_or_zero, default=None,
                   help=f"seconds of timed calls per repetition (default {QUICK.min_time_s:g})")
    g.add_argument("--min-iters", type=count(2), default=None,
                   help=f"timed calls per repetition at least (default {QUICK.min_iters})")
    g.add_argument("--warmup", type=count(0), default=None, help=f"warm-up calls at least (default {QUICK.warmup_iters})")


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """--cluster, --target: `run` and `sweep` on a Ray cluster (archbench.bench.measure.cluster.dispatcher)."""
    g = p.add_argument_group("on a Ray cluster (pip install 'archbench[ray]'; README: 'Sweeps on a Ray cluster')")
    g.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run each job as a Ray task on a node it holds alone: local (a one-node Ray here), auto (the "
                        "cluster this machine joined with `ray start`), HOST:6379 or ray://HOST:10001")
    g.add_argument("--target", metavar="LABEL", default=None,
                   help="with --cluster: only nodes that offer these Ray custom resources (NAME, e.g. cpu-avx512) or "
                        "carry these labels (KEY=VALUE); a comma list, all required")


def cluster_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """RunSpec's ``cluster`` and ``target`` from --cluster / --target ({} without --cluster); UsageError first of
    all when Ray is not installed."""
    cluster, target = getattr(args, "cluster", None), getattr(args, "target", None)
    if cluster is None:
        if target:
            raise UsageError(f"--target {target!r} picks cluster nodes: it needs --cluster")
        return {}
    from archbench.bench.measure.cluster.dispatcher import check_address, parse_target, require_ray

    require_ray()
    if not cluster.strip():
        raise UsageError("--cluster '': expected local, auto or a Ray address (HOST:6379, ray://HOST:10001)")
    check_address(cluster.strip())  # seconds, not Ray's minute of retries, for an address nobody listens on
    for flag in ("find_max_batch", "find_max_qps"):  # searches whose trials depend on each other: this machine only
        if getattr(args, flag, False):
            raise UsageError(f"--{flag.replace('_', '-')} does not run on --cluster (its trials depend on each "
                             "other): drop one")
    return {"cluster": cluster.strip(), "target": parse_target(target)}


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model options")
    g.add_argument("--input-shape", metavar="1,3,224,224", help="example input shape when the model cannot say")
    g.add_argument("--dtype", help="example input dtype (float32, float16, bfloat16, int64)")
    g.add_argument("--weights", metavar="FILE", help="state_dict to load (torch.load weights_only=True)")
    g.add_argument("--knob", action="append", default=[], metavar="K=V", help="any builder keyword, repeatable")
    for name, (typ, metavar) in KNOB_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest="knob_" + name, type=typ, metavar=metavar,
                       help=f"zoo knob {name}")


def knobs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from archbench.bench.measure.sources import parse_knob_value

    knobs: dict[str, Any] = {}
    for kv in args.knob:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise UsageError(f"bad --knob {kv!r}: expected NAME=VALUE")
        knobs[k.strip().replace("-", "_")] = parse_knob_value(v.strip())
    for name in KNOB_FLAGS:
        v = getattr(args, "knob_" + name, None)
        if v is not None:
            knobs[name] = v
    return knobs


def source_from_args(args: argparse.Namespace, ref: str):
    from archbench.bench.measure.sources import parse_dtype, parse_shape, resolve

    shape = parse_shape(args.input_shape) if args.input_shape is not None else None
    dtype = parse_dtype(args.dtype) if args.dtype is not None else None
    return resolve(ref, knobs_from_args(args), shape, dtype, args.weights)


# The default zoo of `archbench run`: one small size per family, so the whole run takes ~2 minutes on 2 cores.
DEFAULT_ZOO = ["mlp_s", "vgg_s", "resnet_s", "mobilenet_s", "vit_s", "llama_tiny", "lstm_s", "gru_s"]


def csv_list(text: str, cast: Callable[[str], Any] = str, what: str = "value") -> list[Any]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    try:
        out = [cast(t) for t in items]
    except ValueError:
        raise UsageError(f"bad {what} list {text!r}: expected comma-separated values") from None
    if not out:
        raise UsageError(f"empty {what} list")
    return out
