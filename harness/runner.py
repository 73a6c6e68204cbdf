"""`run_sweep`: run a list of cells with the executor the settings name (worker processes, or this
process), one Record per cell. The data of a sweep lives in harness.sweep; one group's cells are run
by harness.pipeline.group."""
from __future__ import annotations

from typing import Callable

# The sweep's axes and the run's settings are declared with every other run option; the names
# below are re-exported for callers that import them from here.
from harness.options import ISOLATION_MODES, METER_MODES, MeterSettings, RunSettings, SweepAxes  # noqa: F401
from harness.pipeline.group import RetireWorker, is_fatal_device_error, run_group  # noqa: F401
from harness.records import Record
from harness.sweep import Cell, RunContext, cell_record, expand, group_cells, new_run_id  # noqa: F401


def run_sweep(cells: list[Cell], settings: RunSettings, ctx: RunContext,
              on_record: Callable[[Cell, Record, int], None] | None = None,
              on_start: Callable[[Cell, int], None] | None = None,
              on_phase: Callable[[Cell, str, int], None] | None = None) -> list[Record]:
    """Run the given cells (all of `expand(axes)`, or the ones a resumed run still lacks); a failing
    cell becomes a `failed` row and the sweep goes on. Callbacks get the cell and len(cells), in the
    parent; on_phase also the phase the cell in flight entered (harness.phases). SIGINT/SIGTERM
    record the cell in flight as failed and raise harness.executor.Interrupted."""
    from harness.executor import load_plugins
    from harness.executor.signals import run_interruptible

    if settings.isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_MODES)}, got {settings.isolation!r}")
    load_plugins(settings.plugins)
    if getattr(settings, "executor", "local") == "ray":   # imported only when asked for: ray is an extra
        from harness.executor.ray_executor import run_ray

        return run_ray(list(cells), settings, ctx, on_record, on_start, on_phase=on_phase)
    if settings.isolation == "process":
        from harness.executor.local import run_supervised

        return run_supervised(list(cells), settings, ctx, on_record, on_start, on_phase)
    from harness.executor.in_process import run_in_process

    if on_phase is None:
        return run_interruptible(run_in_process, list(cells), settings, ctx, on_record, on_start)
    from harness.phases import listening

    n, in_flight = len(cells), [None]

    def start(cell: Cell, total: int) -> None:
        in_flight[0] = cell
        if on_start:
            on_start(cell, total)

    with listening(lambda name: on_phase(in_flight[0], name, n)):
        return run_interruptible(run_in_process, list(cells), settings, ctx, on_record, start)
