"""The worker process: runs the cells of one model, group by group with `run_group` (the model loaded
once for all of them), and reports over a pipe.

Messages to the parent, in order:
    ("start", cell_index)             before each cell
    ("phase", cell_index, name)       the cell enters a phase (harness.phases: load, apply, ... measure)
    ("record", cell_index, envelope)  its Record, as harness.records.to_envelope writes it
    ("gpu", snapshot)                 the run-level GPU meter figures, when this worker opened them
    ("retire", reason)                a cell's error left the process unusable (RetireWorker)
    ("error", "Type: message")        an error outside any cell (the traceback is on stderr)
    ("done", None)                    every cell ran
The worker writes no file of the run: the parent appends each record. Its stderr goes to a file the
parent reads the tail of when the worker dies.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
from types import SimpleNamespace

# Sent by the parent before it kills a worker that ran past its timeout: faulthandler then writes
# every thread's Python stack to stderr, so the failed record says where the cell was stuck.
DUMP_STACKS_SIGNAL = signal.SIGUSR1


def _redirect_stderr(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the parent dies (a parent killed with SIGKILL cannot stop it)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def gpu_snapshot(gpu) -> SimpleNamespace:
    """The attributes of GpuRunMeters that run.json reads, without its NVML handles (which do not pickle)."""
    return SimpleNamespace(copy_bw=gpu.copy_bw, idle_by_model=dict(gpu.idle_by_model),
                           meter=SimpleNamespace(update_period_s=getattr(gpu.meter, "update_period_s", None),
                                                 method=gpu.meter.method))


def worker_main(conn, cells: list, settings, ctx, stderr_path: str) -> None:
    """Entry point of a spawned worker (see the module docstring for the protocol)."""
    _redirect_stderr(stderr_path)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole process group: the parent decides
    faulthandler.enable(file=sys.stderr, all_threads=True)   # SIGSEGV, SIGABRT, ...: Python stacks on stderr
    faulthandler.register(DUMP_STACKS_SIGNAL, file=sys.stderr, all_threads=True)
    try:
        from harness.executor.plugins import load_plugins
        from harness.phases import listening
        from harness.records import to_envelope
        from harness.pipeline.group import RetireWorker, run_group
        from harness.sweep import group_cells

        load_plugins(settings.plugins)
        configure_device(settings)
        _warm_imports()

        def emit(cell, rec) -> None:
            rec.extra["worker"] = {"pid": os.getpid()}   # which process measured it (a crash record says the same)
            conn.send(("record", cell.index, to_envelope(rec)))

        models: dict = {}   # one model for all the groups of this worker
        in_flight = [None]

        def start(cell) -> None:
            in_flight[0] = cell.index
            conn.send(("start", cell.index))

        try:
            with listening(lambda name: conn.send(("phase", in_flight[0], name))):
                for _m, _v, _b, group in group_cells(cells):
                    run_group(group, settings, ctx, emit, start, models)
            end = ("done", None)
        except RetireWorker as e:
            end = ("retire", str(e))
        if ctx.gpu is not None:
            conn.send(("gpu", gpu_snapshot(ctx.gpu)))
        conn.send(end)
    except BaseException as e:
        import traceback

        traceback.print_exc()
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"[:500]))
        except (OSError, ValueError):
            pass
        sys.stderr.flush()
        os._exit(1)
    finally:
        sys.stderr.flush()
    conn.close()


def _warm_imports() -> None:
    """What every cell's model load imports (transformers' modeling stack: 2 s on an idle 2-core
    machine, 15 s under load), imported before the first cell so that the parent counts it as the
    worker's start-up and not against the first cell's timeout."""
    try:
        import transformers.modeling_utils  # noqa: F401
    except ImportError:
        pass


def configure_device(settings) -> None:
    """The parent configured the CUDA allocator in its own process only; spawn starts afresh. NVLink
    multicast off here too, whatever environment the worker was started with (issue 18)."""
    from harness.backends.pytorch.tp.env import disable_multicast

    disable_multicast()
    from harness.backends.pytorch.device import configure_cuda_allocator, resolve_device

    if resolve_device(settings.device).type == "cuda":
        configure_cuda_allocator()
