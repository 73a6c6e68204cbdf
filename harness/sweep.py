"""Sweeps are axes, expanded into an ordered list of cells; each cell yields exactly one Record.

Cells are grouped by (model, variant, backend): a model is loaded once, each variant is applied once
to a fresh instance, and every batch/prompt/new-token cell of the group reuses it. Data only: the
pipeline (harness.pipeline), the executors (harness.executor) and the runner all import this module,
and it imports none of them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable

from harness.options import AUTO_BACKENDS, SweepAxes
from harness.records import Record


@dataclass(frozen=True)
class Cell:
    index: int
    model: str
    variant: str
    backend: str
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    repetition: int = 0
    meters: bool = True
    profile: str = ""          # set by `harness run`: the profile that measures it (several under --executor ray)

    @property
    def geometry(self) -> tuple[int, int, int]:
        """What an engine is built for: cells differing only in repetition or meters share one."""
        return self.batch_size, self.prompt_tokens, self.new_tokens

    def label(self) -> str:
        rep = f" rep={self.repetition}" if self.repetition else ""
        return (f"{self.model} {self.variant} [{self.backend}] batch={self.batch_size} prompt={self.prompt_tokens} "
                f"new={self.new_tokens}{rep}{'' if self.meters else ' meters=off'}")


def _meter_settings(mode: str, repetition: int) -> tuple[bool, ...]:
    if mode == "alternate":
        return (False, True) if repetition % 2 == 0 else (True, False)
    return (mode == "on",)


def expand(axes: SweepAxes) -> list[Cell]:
    """Deterministic order: model, variant, backend, then batch, prompt length, new tokens (each axis
    in the order given), then repetitions and meter settings, innermost. A backend named in
    --backend-variants gets only its paired variants."""
    if AUTO_BACKENDS in axes.backends:
        raise ValueError("--backends auto is resolved by harness run (harness.backends.defaults) before the sweep "
                         "is expanded; name the backends")
    only = axes.variants_by_backend()
    combos = itertools.product(axes.models, axes.variants, axes.backends, axes.batch_sizes, axes.prompt_tokens,
                               axes.new_tokens)
    cells: list[Cell] = []
    for c in combos:
        if c[2] in only and c[1] not in only[c[2]]:
            continue
        for rep in range(axes.repetitions):
            for on in _meter_settings(axes.meters, rep):
                cells.append(Cell(len(cells), *c, repetition=rep, meters=on))
    return cells


def group_cells(cells: Iterable[Cell]) -> list[tuple[str, str, str, list[Cell]]]:
    """Runs of cells sharing (model, variant, backend): one prepared model instance each."""
    out: list[tuple[str, str, str, list[Cell]]] = []
    for (m, v, b), grp in itertools.groupby(cells, key=lambda c: (c.model, c.variant, c.backend)):
        out.append((m, v, b, list(grp)))
    return out


@dataclass
class RunContext:
    run_id: str
    profile: object                      # harness.profiles.Profile
    provenance: dict
    gpu: object | None = None            # GpuRunMeters, opened by the first CUDA cell of this process
    gpu_by_node: dict = field(default_factory=dict)   # --executor ray: each node's GPU run meters


def cell_record(cell: Cell, ctx: RunContext, **kw) -> Record:
    """The Record of a cell with its keys and the run's provenance filled in; figures come as kw."""
    return Record(model=cell.model, variant=cell.variant, backend=cell.backend, profile=cell.profile or ctx.profile.id,
                  batch_size=cell.batch_size, prompt_tokens=cell.prompt_tokens, new_tokens=cell.new_tokens,
                  repetition=cell.repetition, meters=cell.meters, run_id=ctx.run_id, provenance=ctx.provenance, **kw)


def new_run_id(models: Iterable[str]) -> str:
    from harness.provenance import utc_now

    first = next(iter(models)).replace("synthetic:", "").replace("/", "_").replace(":", "_")[-40:]
    return f"{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{first}"

