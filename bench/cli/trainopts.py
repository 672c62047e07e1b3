"""The training flags of ``archbench run`` and their validation (no torch import: ``--help`` stays instant).

    archbench run resnet_s vit_s --mode train --batch 8,32,128 --optimizer adamw
    archbench run llama_tiny --mode train --find-max-batch --device cuda
    archbench run mlp_m --mode train --find-max-batch --mem-cap-mib 2048
    archbench run vit_s --mode train --batch 64 --train-samples 1281167 --epochs 90

``--mode generate`` (prefill and decode of language models) has its flags in archbench.bench.cli.genopts.
"""

from __future__ import annotations

import argparse
from typing import Any

from archbench.bench.errors import UsageError

OPTIMIZERS = ("adamw", "sgd")  # archbench.bench.measure.train_step.DEFAULT_LR holds their learning rates


def train_runtimes() -> list[str]:
    """Runtimes whose class says it trains (measure.runtimes: ``trains``)."""
    from archbench.bench.measure.runtimes import get_runtime, runtime_names

    return [n for n in runtime_names() if get_runtime(n).trains]


def _count(text: str) -> int:
    """A positive count, as an integer or in e-notation (``1281167``, ``1.2e6``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != int(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(v)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from archbench.bench.cli import genopts

    g = p.add_argument_group("mode: training (--mode train; see bench/modes/train.py for what a step and each "
                             "number is) and generation (--mode generate; bench/modes/generate.py)")
    g.add_argument("--mode", choices=("infer", "train", "generate"), default="infer",
                   help="infer: one forward per call (default); train: one full training step per call; "
                        "generate: language models' prefill (TTFT) and decode steps (TPOT)")
    genopts.add_arguments(g)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="train: adamw (default) or sgd")
    g.add_argument("--train-samples", type=_count, default=None, metavar="N",
                   help="train: samples per epoch (e.g. the dataset size); records time_to_train_s")
    g.add_argument("--epochs", type=float, default=None, metavar="E",
                   help="train: epochs over --train-samples (default 1)")
    g.add_argument("--find-max-batch", action="store_true",
                   help="train: largest batch that fits, doubling from the smallest --batch then bisecting; "
                        "each trial in its own worker")
    g.add_argument("--mem-cap-mib", type=float, default=None, metavar="MIB",
                   help="train: memory cap per worker (CPU: resident memory, incl. the ~400 MiB of interpreter "
                        "and torch; CUDA: allocator). --find-max-batch on CPU defaults to 80%% of available memory")
    g.add_argument("--max-batch-limit", type=_count, default=None, metavar="N",
                   help="train: --find-max-batch stops doubling here (default 65536)")


def default_runtimes(args: argparse.Namespace) -> str:
    """--runtime's default: training runs torch only unless --runtime says more; inference torch and ONNX Runtime."""
    return "torch" if getattr(args, "mode", None) == "train" else "torch,onnxruntime"


def from_args(args: argparse.Namespace, models: list[str], runtimes: list[str]) -> tuple[str, dict[str, Any]]:
    """(mode, {"train": TrainOptions} or the generate options) for Options; UsageError on a flag that cannot apply."""
    from archbench.bench.measure.sources import is_onnx_ref

    # getattr: a command that reuses spec_from_args without these flags gets inference.
    a = {k: getattr(args, k, None) for k in ("mode", "optimizer", "train_samples", "epochs", "find_max_batch",
                                              "mem_cap_mib", "max_batch_limit")}
    from archbench.bench.cli import genopts

    gen = genopts.from_args(args, a["mode"] or "infer")
    args = argparse.Namespace(**a)
    mode = args.mode or "infer"
    given = {"--" + k.replace("_", "-"): v for k, v in a.items() if k != "mode" and v not in (None, False)}
    if mode != "train":
        if given:
            raise UsageError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with --mode train")
        return mode, gen
    onnx = [m for m in models if is_onnx_ref(m)]
    if onnx:
        raise UsageError(f"--mode train needs PyTorch models; {onnx[0]} is an ONNX graph")
    trainers = train_runtimes()
    bad = [r for r in runtimes if r not in trainers]
    if bad:
        raise UsageError(f"--mode train: runtime {', '.join(bad)} cannot train; use {' or '.join(trainers)}")
    if args.epochs is not None and (args.train_samples is None or args.epochs <= 0):
        raise UsageError("--epochs needs --train-samples and must be > 0")
    if args.mem_cap_mib is not None and args.mem_cap_mib <= 0:
        raise UsageError("--mem-cap-mib must be > 0")
    if args.max_batch_limit is not None and not args.find_max_batch:
        raise UsageError("--max-batch-limit only applies with --find-max-batch")
    train: dict[str, Any] = {"optimizer": args.optimizer or "adamw"}
    if args.train_samples is not None:
        train["train_samples"] = round(args.train_samples * (args.epochs or 1.0))
    if args.mem_cap_mib is not None:
        train["mem_cap_mib"] = args.mem_cap_mib
    if args.find_max_batch:
        train["find_max_batch"] = True
        if args.max_batch_limit is not None:
            train["max_batch_limit"] = args.max_batch_limit
    from archbench.bench.cell import TrainOptions

    return mode, {"train": TrainOptions(**train)}
