"""`--isolation none`: every (model, variant, backend) group of a sweep run in this process, one
model instance per spec (the local executor's debugging mode, and a Ray node's under --isolation none)."""
from __future__ import annotations

import gc
from typing import Callable

from harness.pipeline.group import RetireWorker, run_group
from harness.records import Record
from harness.sweep import Cell, RunContext, group_cells


def run_in_process(cells: list[Cell], settings, ctx: RunContext,
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
