"""SIGINT and SIGTERM during a sweep: the cell in flight is recorded as failed ("interrupted by
SIGTERM"), the sweep stops, and `Interrupted` carries the records so far up to `harness run`, which
writes run.json (complete: false) and the views, prints the run folder and exits 128 + signal number
(130 for SIGINT, 143 for SIGTERM: the shell's convention for a process ended by a signal).
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_for(signum: int) -> int:
    """130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(Exception):
    """The sweep stopped on a signal. `records`: every record emitted, the interrupted cell's last;
    `out_dir` is filled in by `harness run` once the views are written."""

    def __init__(self, signum: int, records: list):
        super().__init__(f"interrupted by {signal_name(signum)}")
        self.signum, self.records = int(signum), list(records)
        self.out_dir = None

    @property
    def signame(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)


class SignalWatch:
    """While entered, SIGINT and SIGTERM only note the signal and write a byte to a pipe whose read end
    (`fileno()`) the supervisor waits on beside its workers; nothing is raised in the middle of an
    append. Outside the main thread (where handlers cannot be installed) it watches nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._r = self._w = -1

    def __enter__(self) -> "SignalWatch":
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._note)
        return self

    def _note(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum
        try:
            os.write(self._w, b"\0")
        except OSError:  # pipe full: a byte is already waiting
            pass

    def fileno(self) -> int:
        return self._r

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
        os.close(self._r)
        os.close(self._w)


class _Stop(BaseException):
    """Raised by the in-process handler inside a running cell (a BaseException, so that the cell's own
    `except Exception` does not turn it into a failed row and carry on)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def run_interruptible(loop: Callable, cells, settings, ctx, on_record=None, on_start=None) -> list:
    """`--isolation none`: run `loop(cells, settings, ctx, on_record, on_start)` (the in-process sweep)
    with SIGINT/SIGTERM raising inside the cell in flight, never inside on_record (a signal there
    waits for the append to finish). The cell in flight is recorded as failed, then Interrupted."""
    from harness.sweep import cell_record

    n = len(cells)
    state = {"cell": None, "emitting": False, "deferred": None}
    records: list = []

    def handler(signum, _frame):
        if state["emitting"]:
            state["deferred"] = signum
        else:
            raise _Stop(signum)

    def start(cell, total):
        state["cell"] = cell
        if on_start:
            on_start(cell, total)

    def record(cell, rec, total):
        state["emitting"] = True
        try:
            records.append(rec)
            if on_record:
                on_record(cell, rec, total)
        finally:
            state["emitting"], state["cell"] = False, None
        if state["deferred"] is not None:
            raise _Stop(state["deferred"])

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS} if main else {}
    try:
        return loop(cells, settings, ctx, record, start)
    except _Stop as stop:
        for s, h in previous.items():   # a second signal while recording the stop acts as usual
            signal.signal(s, h)
        cell = state["cell"]
        if cell is not None:
            rec = cell_record(cell, ctx, status="failed", reason=f"interrupted by {signal_name(stop.signum)}")
            records.append(rec)
            if on_record:
                on_record(cell, rec, n)
        raise Interrupted(stop.signum, records) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
