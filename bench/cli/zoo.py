"""`archbench list` (the zoo) and `archbench profile` (params, size, MACs per module and operator)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from archbench.bench.cli.options import source_from_args
from archbench.bench.errors import UsageError
from archbench.bench.report.format import human, pct, render

# ----------------------------------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    """The zoo, or with ``--source timm|torchvision|tv|hf`` (or a ``timm:`` prefix on the pattern) the models
    that source can build, each built on the meta device for its parameter count (no memory, no weights)."""
    from archbench.models import hub

    source, pattern = getattr(args, "source", None) or "zoo", args.pattern
    parts = hub.split_ref(pattern)
    if parts is not None:
        source, pattern = parts[0], parts[1] or "*"
    if source != "zoo":
        return _list_hub(source, pattern, args.format)
    import torch

    from archbench.models import create_model, get_entry, list_models

    names = list_models(pattern)
    if not names:
        raise UsageError(f"no model matches {pattern!r}; `archbench list` shows them all")
    rows = []
    for n in names:
        e = get_entry(n)
        with torch.device("meta"):  # build without allocating weights: list is instant even for resnet50
            m = create_model(n)
        rows.append({
            "name": n,
            "family": e.family,
            "params": sum(p.numel() for p in m.parameters()),
            "input": m.input_spec.describe(),
            "knobs": " ".join(f"{k}={v}" for k, v in e.knobs.items()),
        })
    _print_rows(rows, args.format)
    return 0


# Beyond this many matches `list --source` names models without building them (hf's ~800 model types would take
# minutes even on the meta device); narrow the pattern to see params and inputs.
LIST_BUILD_LIMIT = 100


def _list_hub(source: str, pattern: str, fmt: str) -> int:
    import sys
    import warnings

    import torch

    from archbench.models import hub

    try:
        names = hub.list_hub(source, pattern)
    except hub.HubError as e:
        raise UsageError(str(e)) from None
    source = hub.PREFIXES.get(source.lower(), source.lower())
    if not names:
        raise UsageError(f"no {source} model matches {pattern!r}")
    build = len(names) <= LIST_BUILD_LIMIT
    if not build:
        print(f"archbench list: {len(names)} {source} models match {pattern!r}; params and inputs are shown for "
              f"at most {LIST_BUILD_LIMIT}: narrow the pattern", file=sys.stderr)
    knobs = {"timm": "builder keywords, resolution", "torchvision": "builder keywords, resolution",
             "hf": "config attributes, task seq_len inputs"}[source]
    rows = []
    for n in names:
        row: dict[str, Any] = {"name": f"{source}:{n}", "family": source, "params": None, "input": ""}
        if source == "hf":
            row["head"] = ""  # the transformers class the default task builds
        row["knobs"] = knobs
        if build:
            try:
                with warnings.catch_warnings(), torch.device("meta"):
                    warnings.simplefilter("ignore")
                    m = hub.build(f"{source}:{n}", settle_batchnorm=False)
                row["params"] = sum(p.numel() for p in m.module.parameters())
                row["input"] = hub.describe_inputs(m.input_specs, m.input_names if len(m.input_specs) > 1 else ())
                if source == "hf":
                    row["head"] = type(m.module.model).__name__
            except hub.MissingExtra as e:
                raise UsageError(str(e)) from None
            except Exception as e:  # one model that cannot be built (even on meta) does not hide the others
                row["input"] = f"cannot build: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
        rows.append(row)
    _print_rows(rows, fmt)
    return 0


def _print_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt in ("table", "md"):
        for r in rows:
            r["params"] = human(r["params"]) if r["params"] is not None else "-"
    print(render(rows, fmt))


# ----------------------------------------------------------------------------------------------------- profile


def _profile_summary_rows(p) -> list[dict[str, Any]]:
    cc = p.cross_check
    return [{
        "model": p.model,
        "input": p.input,
        "params": p.params,
        "trainable_params": p.trainable_params,
        "state_dict_mib": round(p.state_dict_bytes / 2**20, 4),
        "file_mib": round(p.file_bytes / 2**20, 4),
        "macs": p.macs,
        "flops": p.flops,
        "flop_counter_flops": cc.flop_counter_flops if cc else None,
        "flop_counter_rel_diff": round(cc.rel_diff, 6) if cc else None,
        "uncounted_ops": " ".join(r.op for r in p.uncounted),
    }]


def _print_profile_text(p, fmt: str) -> None:
    lines = [
        f"{p.model}   input {p.input}",
        f"  params        {p.params:,} (trainable {p.trainable_params:,})",
        f"  size          {human(p.state_dict_bytes, 'B', binary=True)} fp32 state_dict, "
        f"{human(p.file_bytes, 'B', binary=True)} on disk",
        f"  MACs          {human(p.macs)}   multiply-accumulates of conv / linear / matmul / attention / RNN gates",
        f"  FLOPs         {human(p.flops)}   = 2 x MACs",
    ]
    cc = p.cross_check
    if cc is not None:
        agree = "agrees exactly" if cc.rel_diff == 0 else f"differs by {pct(cc.rel_diff, 2)}"
        line = f"  cross-check   FlopCounterMode {human(cc.flop_counter_flops)}FLOPs: {agree} on the ops it counts"
        lines.append(line)
        for op, f in cc.missed_by_flop_counter.items():
            lines.append(f"                FlopCounterMode does not count {op} here ({human(f)}FLOPs, "
                         f"{pct(f / p.flops if p.flops else 0)} of the total)")
    unc = p.uncounted
    if unc:
        timed = any(r.time_share is not None for r in unc)
        lines.append("  uncounted ops (no MACs by definition" + ("; share of CPU forward time)" if timed else ")"))
        for r in unc:
            share = f"{pct(r.time_share):>7}" if r.time_share is not None else "      -"
            lines.append(f"    {r.op:<32} {r.calls:>5} calls  {share}")
    for n in p.notes:
        lines.append(f"  note: {n}")
    print("\n".join(lines))


def cmd_profile(args: argparse.Namespace) -> int:
    from archbench.bench.measure.sources import is_onnx_ref, parse_shape

    if is_onnx_ref(args.model):
        from archbench.bench.measure.onnx_profile import profile_onnx
        from archbench.bench.measure.sources import resolve

        src = resolve(args.model)
        prof = profile_onnx(src.onnx_path, parse_shape(args.input_shape) if args.input_shape else None)
    else:
        from archbench.bench.measure.profile import profile_module

        src = source_from_args(args, args.model)
        inputs = src.example_inputs(batch=args.batch)
        desc = src.describe_inputs(args.batch)
        try:
            prof = profile_module(src.module, inputs, name=args.model, input_desc=desc,
                                  time_ops=not args.no_timing)
        except Exception as e:
            raise UsageError(f"{args.model}: forward on input {desc} failed: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    if args.by == "summary":
        if args.format == "table":
            _print_profile_text(prof, args.format)
        elif args.format == "json":
            print(json.dumps(asdict(prof) | {"uncounted": [asdict(r) for r in prof.uncounted]}, indent=2))
        else:
            print(render(_profile_summary_rows(prof), args.format))
        return 0
    if args.by == "operator":
        rows = [{"op": r.op, "calls": r.calls, "macs": r.macs, "flops": None if r.macs is None else 2 * r.macs,
                 "mac_share": None if r.macs is None or not prof.macs else r.macs / prof.macs,
                 "time_share": r.time_share} for r in prof.by_operator]
    else:
        rows = [{"module": r.module or "(model)", "type": r.type, "params": r.params, "macs": r.macs,
                 "flops": 2 * r.macs, "mac_share": r.macs / prof.macs if prof.macs else None}
                for r in prof.by_module
                if r.module.count(".") < args.max_depth or r.module == ""]
    if args.format in ("table", "md"):
        for r in rows:
            for k in ("params", "macs", "flops"):
                if k in r:
                    r[k] = human(r[k])
            for k in ("mac_share", "time_share"):
                if k in r:
                    r[k] = pct(r[k])
        print(f"{prof.model}   input {prof.input}   MACs {human(prof.macs)}   FLOPs {human(prof.flops)}")
    print(render(rows, args.format))
    return 0
