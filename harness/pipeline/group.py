"""The cells of one (model, variant, backend) group, run in the current process through the cell
pipeline: the unit a worker process runs (harness.executor) and the in-process loop runs."""
from __future__ import annotations

import traceback
from typing import Callable

from harness.records import Record
from harness.sweep import Cell, RunContext, cell_record


class RetireWorker(Exception):
    """Raised by run_group after a cell's failed record was emitted, when the process can no longer be
    trusted to measure (a CUDA error poisons the context for every later cell): the supervisor ends
    this worker and starts a fresh one for the remaining cells of the group."""


def is_fatal_device_error(e: BaseException) -> bool:
    """A CUDA error (illegal memory access, launch failure, ...) leaves the context unusable."""
    text = f"{type(e).__name__}: {e}"
    return ("CUDA error" in text or "cudaError" in text or "CUBLAS_STATUS" in text
            or "AcceleratorError" in type(e).__name__)


def run_group(group: list[Cell], settings, ctx: RunContext,
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


