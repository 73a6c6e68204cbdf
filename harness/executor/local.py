"""The supervisor: runs the cells of each model in a spawned worker process, so that a crash, a hang
or an exhausted device costs one cell, never the sweep.

One worker per model: its (model, variant, backend) groups run one after the other in it, so the
model is loaded (and its baseline quality reference built) once, as in one process. The parent blocks on the
worker's pipe, its process sentinel and the signal pipe (multiprocessing.connection.wait with the
cell's deadline as timeout, never polling); it calls on_start / on_phase / on_record as the messages
arrive and appends nothing itself. When a worker dies with a cell in flight (a signal, a non-zero exit, the host
OOM killer, or the parent killing it at the cell timeout), that cell becomes a `failed` record naming
the cause, with the tail of the worker's stderr in `extra["worker_stderr_tail"]`; a fresh worker runs
the rest of the model's cells. A worker that retires (RetireWorker: a CUDA error) is replaced the same way.
Every cell gets exactly one record, in the order of the cells, unless a signal stops the sweep.

Timeout: `settings.cell_timeout_s` counts from the cell's ("start") message, so it covers the first
cell's model load, variant apply and compilation; a worker's start-up (interpreter, imports, plug-ins)
until its first cell has max(cell_timeout_s, STARTUP_TIMEOUT_S).
"""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import re
import signal
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType

from harness.executor.signals import Interrupted, SignalWatch, signal_name
from harness.executor.worker import DUMP_STACKS_SIGNAL, worker_main

STARTUP_TIMEOUT_S = 120.0      # spawn + `import torch` + plug-ins: 2-4 s on an idle 2-core machine
STDERR_TAIL_BYTES = 2048       # of the worker's stderr, kept on a crashed cell's record
HEADLINE_SCAN_BYTES = 65536    # searched for the line that names the crash (faulthandler's header
                               # sits above every thread's stack, often more than 2 KB up)
DUMP_WAIT_S = 1.0              # for faulthandler to write a timed-out worker's stacks before the kill
TERMINATE_WAIT_S = 5.0         # for an interrupted worker to exit on SIGTERM before SIGKILL
EXIT_WAIT_S = 30.0             # for a worker that sent its last message to exit (CUDA teardown)


def _mappingproxy(d: dict) -> MappingProxyType:
    return MappingProxyType(d)


# Profile keeps its tables in read-only MappingProxyType, which plain pickle refuses; the worker's
# arguments travel through multiprocessing's pickler, which this teaches to send them as dicts.
ForkingPickler.register(MappingProxyType, lambda m: (_mappingproxy, (dict(m),)))


def run_supervised(cells: list, settings, ctx, on_record=None, on_start=None, on_phase=None) -> list:
    """Run `cells` model by model in worker processes; returns their records in cell order. Raises
    Interrupted (carrying the records, the cell in flight recorded as failed) on SIGINT or SIGTERM.
    on_phase(cell, name, n): the cell in flight entered a phase (harness.phases)."""
    import itertools

    cells = list(cells)
    sup = _Supervisor(len(cells), settings, ctx, on_record, on_start)
    sup.on_phase = on_phase
    with SignalWatch() as watch:
        sup.watch = watch
        for _model, same_model in itertools.groupby(cells, key=lambda c: c.model):
            pending = list(same_model)
            while pending:
                if watch.signum is not None:   # arrived while a record was appended: start no other worker
                    raise Interrupted(watch.signum, sup.records)
                pending = sup.run_worker(pending)
    return sup.records


class _Supervisor:
    def __init__(self, n: int, settings, ctx, on_record, on_start):
        self.n, self.settings, self.ctx = n, settings, ctx
        self.on_record, self.on_start = on_record, on_start
        self.on_phase = None
        self.records: list = []
        self.watch: SignalWatch | None = None
        self.mp = multiprocessing.get_context("spawn")   # a fresh interpreter: no CUDA state inherited
        self.worker_ctx = dataclasses.replace(ctx, gpu=None)   # GPU meters are opened in the worker

    # -- one worker -------------------------------------------------------------------------------
    def run_worker(self, pending: list) -> list:
        """Start a worker for `pending` (cells of one model, in order) and supervise it until it ends;
        returns the cells still to run (after a crash, the one in flight already has its record)."""
        fd, log = tempfile.mkstemp(prefix="harness-worker-", suffix=".stderr")
        os.close(fd)
        recv, send = self.mp.Pipe(duplex=False)
        proc = self.mp.Process(target=worker_main, args=(send, pending, self.settings, self.worker_ctx, log),
                               name=f"harness-worker-{pending[0].index}")
        try:
            proc.start()
            send.close()   # only the worker holds the sending end now: its death shows as EOF
            return self._supervise(proc, recv, pending, log)
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join()
            proc.close()
            recv.close()
            with contextlib.suppress(OSError):
                os.unlink(log)

    def _supervise(self, proc, recv, pending: list, log: str) -> list:
        pending = list(pending)
        state = {"end": None, "error": None, "started": False}
        deadline = time.monotonic() + max(self.settings.cell_timeout_s, STARTUP_TIMEOUT_S)
        while True:
            ready = wait([recv, proc.sentinel, self.watch], timeout=max(0.0, deadline - time.monotonic()))
            if self.watch.signum is not None:
                self._stop_worker(proc)
                self._drain(recv, pending, state)
                if pending:
                    self._fail(pending.pop(0), f"interrupted by {signal_name(self.watch.signum)}", proc, log)
                raise Interrupted(self.watch.signum, self.records)
            if recv in ready:
                kind = self._receive(recv, pending, state)
                if kind:
                    if kind != "phase":   # a phase is part of the cell in flight: its deadline stands
                        deadline = time.monotonic() + (EXIT_WAIT_S if state["end"] else self.settings.cell_timeout_s)
                    continue
                ready = [proc.sentinel]   # EOF: the worker is gone or going
            if proc.sentinel in ready:
                proc.join(TERMINATE_WAIT_S)
                self._drain(recv, pending, state)
                return self._after_exit(proc, pending, state, log)
            if not ready and (state["end"] or not pending):   # its last message is in: only its exit is late
                proc.kill()
                return pending
            if not ready:   # the cell in flight (or the start-up) ran past its deadline
                limit = self.settings.cell_timeout_s if state["started"] else max(self.settings.cell_timeout_s,
                                                                                   STARTUP_TIMEOUT_S)
                self._kill_hung(proc)
                self._drain(recv, pending, state)
                if pending:
                    what = "timed out" if state["started"] else "worker did not start its first cell"
                    self._fail(pending.pop(0), f"{what} after {limit:g} s (killed)", proc, log)
                return pending

    def _receive(self, recv, pending: list, state: dict):
        """Handle one message and return its kind; False at EOF (or a message cut short by the worker's death)."""
        try:
            msg = recv.recv()
        except (EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
            return False  # EOF, or a message cut short by the worker's death
        kind = msg[0]
        if kind == "start":
            state["started"] = True
            cell = pending[0]
            if msg[1] != cell.index:
                raise RuntimeError(f"worker started cell {msg[1]}, expected {cell.index}")
            if self.on_start:
                self.on_start(cell, self.n)
        elif kind == "record":
            from harness.records import from_envelope

            cell = pending[0]
            if msg[1] != cell.index:
                raise RuntimeError(f"worker sent the record of cell {msg[1]}, expected {cell.index}")
            self._emit(pending.pop(0), from_envelope(msg[2]))
        elif kind == "phase":
            if self.on_phase and pending and msg[1] == pending[0].index:
                self.on_phase(pending[0], msg[2], self.n)
        elif kind == "gpu":
            self._merge_gpu(msg[1])
        elif kind in ("retire", "done"):
            state["end"] = kind
        elif kind == "error":
            state["error"] = msg[1]
        return kind

    def _drain(self, recv, pending: list, state: dict) -> None:
        """Messages the worker sent before it ended (a record can land just before a crash)."""
        while True:
            try:
                if not recv.poll(0):
                    return
            except (EOFError, OSError):
                return
            if not self._receive(recv, pending, state):
                return

    def _after_exit(self, proc, pending: list, state: dict, log: str) -> list:
        code = proc.exitcode
        if not pending or state["end"] == "retire":
            return pending          # finished, or retired after its record: a fresh worker goes on
        if code is not None and code < 0:
            why = f"worker killed by {signal_name(-code)}"
            if -code == signal.SIGKILL:
                why += " (the host's OOM killer ends processes with SIGKILL)"
        elif state["error"]:
            why = f"worker failed outside the cell's own error handling: {state['error']}"
        elif code:
            why = f"worker exited with code {code}"
        else:
            why = "worker exited before the cell's record"
        self._fail(pending.pop(0), why, proc, log)
        return pending

    # -- ending a worker --------------------------------------------------------------------------
    def _kill_hung(self, proc) -> None:
        try:
            os.kill(proc.pid, DUMP_STACKS_SIGNAL)
            proc.join(DUMP_WAIT_S)
        except (ProcessLookupError, OSError):
            pass
        proc.kill()
        proc.join()

    def _stop_worker(self, proc) -> None:
        proc.terminate()
        proc.join(TERMINATE_WAIT_S)
        if proc.exitcode is None:
            proc.kill()
            proc.join()

    # -- records ----------------------------------------------------------------------------------
    def _emit(self, cell, rec) -> None:
        self.records.append(rec)
        if self.on_record:
            self.on_record(cell, rec, self.n)

    def _fail(self, cell, why: str, proc, log: str) -> None:
        from harness.sweep import cell_record

        tail = stderr_tail(log)
        line = stderr_headline(stderr_tail(log, HEADLINE_SCAN_BYTES))
        reason = f"{why}; stderr: {line[:300]}" if line else why
        extra = {"worker_stderr_tail": tail, "worker": {"pid": proc.pid, "exitcode": proc.exitcode}}
        self._emit(cell, cell_record(cell, self.ctx, status="failed", reason=reason, extra=extra))

    def _merge_gpu(self, snap) -> None:
        """The first worker's copy bandwidth and counter period go to run.json; idle power per model from all."""
        if self.ctx.gpu is None:
            self.ctx.gpu = snap
        else:
            for k, v in snap.idle_by_model.items():
                self.ctx.gpu.idle_by_model.setdefault(k, v)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b")


def stderr_headline(tail: str) -> str:
    """The line of a worker's stderr that says what happened: faulthandler's "Fatal Python error: ..."
    (a crash), else the last exception line of a traceback; "" when there is neither (the full tail is
    on the record either way)."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith("Fatal Python error:")]
    if fatal:
        return fatal[-1]
    return next((ln for ln in reversed(lines) if _EXCEPTION_LINE.match(ln) and "Warning" not in ln.split(":")[0]), "")


def stderr_tail(path: str, limit: int = STDERR_TAIL_BYTES) -> str:
    """The last `limit` characters of a worker's stderr, from a whole line where one starts in the
    first half. faulthandler's "Extension modules: ..." line (a list of every loaded extension, often
    longer than the limit by itself) is left out."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - HEADLINE_SCAN_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    text = "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("Extension modules:"))
    if len(text) <= limit:
        return text
    text = text[-limit:]
    cut = text.find("\n")
    return "..." + (text[cut + 1:] if 0 <= cut < limit // 2 else text)
