"""Foreign load during a window: work by other processes that makes a benchmark incomparable.

CPU: system-wide busy CPU time (psutil.cpu_times, all cores) minus this process tree's own CPU time
(psutil.Process.cpu_times, children included), over the window's wall time, in cores. On a shared
2-core machine another process's compile can make a CPU figure several times off.
GPU: the processes NVML lists on the cell's GPUs other than this one (pid and bytes used). Inside VMs
and containers NVML may list none at all; then nothing can be said and the record says so.

A window whose foreign CPU use exceeds `max_cpu_share` of the machine's cores, or that saw another
GPU process, is flagged on the record (and in the report).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil

DEFAULT_MAX_CPU_SHARE = 0.25


@dataclass(frozen=True)
class ForeignLoad:
    window_s: float
    cpu_cores: int
    other_cpu_cores: float | None          # cores' worth of CPU time used by other processes
    own_cpu_cores: float | None = None      # this process tree's, over the same window
    other_gpu_processes: tuple[tuple[int, int | None], ...] = ()   # (pid, bytes) on the cell's GPUs
    gpu_processes_listed: bool = False      # False: NVML listed no process at all (VM/container)
    max_cpu_share: float = DEFAULT_MAX_CPU_SHARE
    flags: tuple[str, ...] = field(default=())


def _busy(t) -> float:
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _own(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    own = t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            own += c.user + c.system
        except psutil.Error:
            pass
    return own


class ForeignLoadMeter:
    name = "foreign-load"

    def __init__(self, gpu_devices=(), max_cpu_share: float = DEFAULT_MAX_CPU_SHARE, pid: int | None = None):
        self.gpu_devices = list(gpu_devices)
        self.max_cpu_share = max_cpu_share
        self.proc = psutil.Process(pid or os.getpid())
        self._start = None

    def begin(self) -> None:
        self._start = (time.perf_counter(), _busy(psutil.cpu_times()), _own(self.proc))

    def end(self) -> ForeignLoad:
        t0, busy0, own0 = self._start
        self._start = None
        dt = time.perf_counter() - t0
        own = (_own(self.proc) - own0) / dt if dt > 0 else None
        other = max(0.0, (_busy(psutil.cpu_times()) - busy0) / dt - own) if dt > 0 else None
        cores = psutil.cpu_count() or 1
        listed, others = False, []
        for d in self.gpu_devices:
            procs = d.processes()
            listed = listed or bool(procs)
            others += [(p.pid, p.used_bytes) for p in procs if p.pid != self.proc.pid]
        flags = []
        if other is not None and other > self.max_cpu_share * cores:
            flags.append(f"other processes used {other:.2f} of {cores} CPU cores during the timed window "
                         f"(over {self.max_cpu_share:.0%}): the figure may not be comparable")
        if others:
            flags.append(f"{len(others)} other process(es) on the GPU during the timed window: "
                         + ", ".join(f"pid {p}" for p, _ in others))
        return ForeignLoad(dt, cores, other, own, tuple(others), listed, self.max_cpu_share, tuple(flags))

    def record_fields(self, r: ForeignLoad) -> dict:
        return {"foreign_load": {"other_cpu_cores": r.other_cpu_cores, "own_cpu_cores": r.own_cpu_cores,
                                 "cpu_cores": r.cpu_cores,
                                 "max_cpu_share": r.max_cpu_share,
                                 "other_gpu_processes": [list(p) for p in r.other_gpu_processes],
                                 "gpu_processes_listed": r.gpu_processes_listed, "flags": list(r.flags)}}
