"""One meter interface: a window.

`begin()` / `end()` around a region, returning a frozen result with units in its field names;
`record_fields(result)` names the Record fields the result fills (a name the Record does not have
lands in `Record.extra`). The cell pipeline opens the meters of a cell from this registry, wraps the
timed loop in all of them, and never asks a meter what kind it is.

A meter factory takes a `MeterScope` and returns a meter, or None where it does not apply (no GPU, a
meters-off repetition). Factories are registered in order; `register_meter` adds one, also from a
plugin module, without editing harness/.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol


class Meter(Protocol):
    name: str

    def begin(self) -> None: ...

    def end(self) -> Any: ...

    def record_fields(self, result: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class MeterScope:
    """What a factory may look at to decide whether its meter applies to a cell."""
    device_type: str          # "cpu" | "cuda"
    device_index: int | None  # CUDA index, or None
    cell: Any                 # harness.sweep.Cell
    settings: Any             # harness.options.RunSettings
    run_context: Any          # harness.sweep.RunContext


MeterFactory = Callable[[MeterScope], "Meter | None"]
_FACTORIES: list[tuple[str, MeterFactory]] = []


def register_meter(name: str, factory: MeterFactory) -> None:
    if any(n == name for n, _ in _FACTORIES):
        raise ValueError(f"meter {name!r} registered twice")
    _FACTORIES.append((name, factory))


def meters_for(scope: MeterScope) -> list[Meter]:
    out = []
    for _, factory in _FACTORIES:
        m = factory(scope)
        if m is not None:
            out.append(m)
    return out
