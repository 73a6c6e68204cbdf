"""Sweeps are axes, expanded into an ordered list of cells; each cell yields exactly one Record.

Cells are grouped by (model, variant): a model is loaded once, each variant is applied once to a
fresh instance, and every batch/prompt/new-token cell of the group reuses it. `execute_group` takes
only picklable inputs (cells, settings, profile id), so a later backend can run it in its own process.
"""
from __future__ import annotations

import gc
import itertools
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable

# The sweep's axes and the run's settings are declared with every other run option.
from harness.options import ISOLATION_MODES, METER_MODES, MeterSettings, RunSettings, SweepAxes  # noqa: F401
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
    in the order given), then repetitions and meter settings, innermost."""
    combos = itertools.product(axes.models, axes.variants, axes.backends, axes.batch_sizes, axes.prompt_tokens,
                               axes.new_tokens)
    cells: list[Cell] = []
    for c in combos:
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


def cell_record(cell: Cell, ctx: RunContext, **kw) -> Record:
    """The Record of a cell with its keys and the run's provenance filled in; figures come as kw."""
    return Record(model=cell.model, variant=cell.variant, backend=cell.backend, profile=cell.profile or ctx.profile.id,
                  batch_size=cell.batch_size, prompt_tokens=cell.prompt_tokens, new_tokens=cell.new_tokens,
                  repetition=cell.repetition, meters=cell.meters, run_id=ctx.run_id, provenance=ctx.provenance, **kw)


class RetireWorker(Exception):
    """Raised by run_group after a cell's failed record was emitted, when the process can no longer be
    trusted to measure (a CUDA error poisons the context for every later cell): the supervisor ends
    this worker and starts a fresh one for the remaining cells of the group."""


def is_fatal_device_error(e: BaseException) -> bool:
    """A CUDA error (illegal memory access, launch failure, ...) leaves the context unusable."""
    text = f"{type(e).__name__}: {e}"
    return ("CUDA error" in text or "cudaError" in text or "CUBLAS_STATUS" in text
            or "AcceleratorError" in type(e).__name__)


def run_group(group: list[Cell], settings: RunSettings, ctx: RunContext,
              emit: Callable[[Cell, Record], None], on_start: Callable[[Cell], None] | None = None,
              models: dict | None = None) -> None:
    """Run the cells of one (model, variant, backend) group in this process, calling `emit` with each
    cell's record (a failing cell is a `failed` row). Raises RetireWorker after emitting the record of a
    cell whose error leaves the process unusable."""
    from harness.pipeline.cell import GroupPipeline

    models = {} if models is None else models
    first = group[0]
    runner = GroupPipeline(first.model, first.variant, first.backend, settings, ctx, models)
    try:
        for cell in group:
            if on_start:
                on_start(cell)
            fatal = None
            try:
                rec = runner.run(cell)
            except Exception as e:  # noqa: BLE001  (a cell's failure is a row, never the end of the sweep)
                rec = cell_record(cell, ctx, status="failed", reason=f"{type(e).__name__}: {e}",
                                  extra={"traceback": traceback.format_exc(limit=8)})
                fatal = e if is_fatal_device_error(e) else None
            emit(cell, rec)
            if fatal is not None:
                raise RetireWorker(f"{type(fatal).__name__}: {fatal}")
    finally:
        try:
            runner.close()
        except Exception:  # noqa: BLE001  (freeing a poisoned context can itself raise)
            pass


def run_sweep(cells: list[Cell], settings: RunSettings, ctx: RunContext,
              on_record: Callable[[Cell, Record, int], None] | None = None,
              on_start: Callable[[Cell, int], None] | None = None) -> list[Record]:
    """Run the given cells (all of `expand(axes)`, or the ones a resumed run still lacks); a failing
    cell becomes a `failed` row and the sweep goes on. Callbacks get the cell and len(cells), in the
    parent. SIGINT/SIGTERM record the cell in flight as failed and raise harness.executor.Interrupted."""
    from harness.executor import load_plugins
    from harness.executor.signals import run_interruptible

    if settings.isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_MODES)}, got {settings.isolation!r}")
    load_plugins(settings.plugins)
    if getattr(settings, "executor", "local") == "ray":   # imported only when asked for: ray is an extra
        from harness.executor.ray_executor import run_ray

        return run_ray(list(cells), settings, ctx, on_record, on_start)
    if settings.isolation == "process":
        from harness.executor.local import run_supervised

        return run_supervised(list(cells), settings, ctx, on_record, on_start)
    return run_interruptible(_run_in_process, list(cells), settings, ctx, on_record, on_start)


def _run_in_process(cells: list[Cell], settings: RunSettings, ctx: RunContext,
                    on_record: Callable[[Cell, Record, int], None] | None = None,
                    on_start: Callable[[Cell, int], None] | None = None) -> list[Record]:
    """`--isolation none`: every group in this process, one model instance per spec."""
    n = len(cells)
    records: list[Record] = []
    models: dict[str, object] = {}

    def emit(cell: Cell, rec: Record) -> None:
        records.append(rec)
        if on_record:
            on_record(cell, rec, n)

    groups = group_cells(cells)
    for gi, (model_spec, _v, _b, group) in enumerate(groups):
        todo = group
        while todo:
            before = len(records)
            try:
                run_group(todo, settings, ctx, emit, (lambda c: on_start(c, n)) if on_start else None, models)
                todo = []
            except RetireWorker:
                # in-process there is no fresh worker: the rest of the group goes on here (each of its
                # cells reports its own error if the device stays unusable), so every cell gets its record
                todo = todo[len(records) - before:]
        # models are loaded once per spec; drop one when no later group needs it
        if all(g[0] != model_spec for g in groups[gi + 1:]):
            models.pop(model_spec, None)
            gc.collect()
    return records


def new_run_id(models: Iterable[str]) -> str:
    from harness.provenance import utc_now

    first = next(iter(models)).replace("synthetic:", "").replace("/", "_").replace(":", "_")[-40:]
    return f"{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{first}"

