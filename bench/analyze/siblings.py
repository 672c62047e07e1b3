"""Sibling records: the same model measured another way (another runtime or precision) under the same conditions.

**The rule.** Two records are siblings when both are ok and they share ``setup_key``: the same model with the same
knobs, batch, device and mode (a forward vs a training step), measured on the same machine, i.e. with the same
environment fingerprint (archbench.bench.env.fingerprint: CPU model and count, GPU, threads, torch and onnxruntime
versions). Siblings differ only in runtime and precision, so their latencies compare directly and their outputs
come from the same model.

On that rule:

- ``fp32_parent``: the fp32 sibling of the *same runtime*, the record a reduced-precision variant was made from
  (flags and findings: "int8 slower than its fp32 parent");
- ``fp32_reference``: the fp32 sibling whose task metric a variant's ``task_metric_drop`` is measured from: the
  torch one (the fidelity reference) when there is one, else the same runtime's, else any;
- ``other_runtimes``: siblings of the same precision on other runtimes (which runtime is fastest).

``Siblings(records)`` indexes the records once for many look-ups; the module functions are one-off shortcuts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from archbench.bench.env import fingerprint
from archbench.bench.record import Record


def setup_key(r: Record) -> tuple:
    """What siblings share: machine fingerprint, model, knobs, batch, device, mode (and serving scenario)."""
    return (fingerprint(r), r.model, r.knobs or "", r.batch, r.device, r.mode or "infer", r.scenario or "")


class Siblings:
    """The ok records of ``records`` grouped by ``setup_key``, for look-ups of any record's siblings."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._by_setup: dict[tuple, list[Record]] = defaultdict(list)
        for r in records:
            if r.ok:
                self._by_setup[setup_key(r)].append(r)

    def of(self, r: Record) -> list[Record]:
        """Every sibling of ``r`` (not ``r`` itself), in the order the records were given."""
        return [o for o in self._by_setup.get(setup_key(r), []) if o is not r]

    def fp32_parent(self, r: Record) -> Record | None:
        """The fp32 sibling of the same runtime: what a reduced-precision variant was made from."""
        return next((o for o in self.of(r) if o.precision == "fp32" and o.runtime == r.runtime), None)

    def fp32_reference(self, r: Record) -> Record | None:
        """The fp32 sibling a variant's task metric is compared with: torch first, else the same runtime, else any.
        The record itself when it is an fp32 one (its drop is 0)."""
        same = [o for o in [r, *self.of(r)] if o.ok and o.precision == "fp32"]
        for runtime in ("torch", r.runtime):
            for o in same:
                if o.runtime == runtime:
                    return o
        return same[0] if same else None

    def other_runtimes(self, r: Record) -> list[Record]:
        """Siblings of the same precision measured by other runtimes."""
        return [o for o in self.of(r) if o.precision == r.precision and o.runtime != r.runtime]


def fp32_parent(r: Record, records: Iterable[Record]) -> Record | None:
    return Siblings(records).fp32_parent(r)


def fp32_reference(r: Record, records: Iterable[Record]) -> Record | None:
    return Siblings(records).fp32_reference(r)


def other_runtimes(r: Record, records: Iterable[Record]) -> list[Record]:
    return Siblings(records).other_runtimes(r)
