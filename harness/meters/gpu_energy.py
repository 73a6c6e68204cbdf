"""GPU energy windows from NVML's total-energy counter (nvmlDeviceGetTotalEnergyConsumption).

A window is begin()/end() around a region: the device is synchronized at both edges (queued kernels
belong to the window that launched them), the counter is read on every GPU the cell uses, and the
deltas are summed. Zeus's energy monitor is the model.

Why the window must be long (anchors.md, "Energy measurement practice"): the counter updates about
every 100 ms on the lab H100, so each edge can be one period stale. A 1 s window can be ~10% off, a
30 s window under 1%; ML.ENERGY requires 30 s of steady state, MLPerf Power cites 60 s. The period
is measured at start-up (never assumed); a window shorter than one period is refused, and one
shorter than `min_window_s` (default 10 s) carries a flag with its worst-case staleness error.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from harness.meters.power_sampler import DEFAULT_RATE_HZ, PowerSampler, PowerTimeline, cross_check

DEFAULT_MIN_WINDOW_S = 10.0


class EnergyCounterError(RuntimeError):
    """The counter cannot be used (unsupported, stuck, or went backwards)."""


class WindowTooShort(ValueError):
    """A window shorter than one counter update period: its energy would be mostly staleness."""


@dataclass(frozen=True)
class EnergyWindow:
    name: str
    energy_j: float | None              # summed over `devices`; None, never 0, when unknown
    duration_s: float                   # wall time between the synchronized edges
    per_device_j: tuple[float, ...]     # same order as `devices`
    devices: tuple[int, ...]            # NVML indices
    source: str                         # "nvml_counter" | "unavailable" (records.ENERGY_SOURCES)
    method: str                         # for Record.energy_method
    flags: tuple[str, ...] = ()
    update_period_s: float | None = None
    timeline: PowerTimeline | None = field(default=None, repr=False)

    @property
    def mean_power_w(self) -> float | None:
        """Counter energy / duration: the mean power to report (the timeline's is a cross-check)."""
        if self.energy_j is None or self.duration_s <= 0:
            return None
        return self.energy_j / self.duration_s

    @property
    def peak_power_w(self) -> float | None:
        return None if self.timeline is None else self.timeline.peak_power_w()

    def net_energy_j(self, idle_power_w: float | None) -> float | None:
        """Gross minus idle power x duration. Labelled net; gross stays the headline figure."""
        if self.energy_j is None or idle_power_w is None:
            return None
        return self.energy_j - idle_power_w * self.duration_s


@dataclass(frozen=True)
class IdlePower:
    power_w: float | None
    duration_s: float
    per_device_w: tuple[float, ...]
    method: str


def measure_update_period(devices: Sequence, max_s: float = 1.0, poll_s: float = 0.001,
                          clock: Callable[[], float] = time.perf_counter,
                          sleep: Callable[[float], None] = time.sleep) -> float:
    """Poll each device's counter for up to `max_s` and take the median interval between changes;
    the slowest device sets the period. Raises EnergyCounterError if a counter does not tick at
    least three times (two intervals)."""
    last = [d.energy_j() for d in devices]
    if any(v is None for v in last):
        raise EnergyCounterError("NVML energy counter not supported on this GPU (needs Volta or newer)")
    changes: list[list[float]] = [[] for _ in devices]
    start = clock()
    while clock() - start < max_s:
        sleep(poll_s)
        now = clock()
        for i, d in enumerate(devices):
            v = d.energy_j()
            if v != last[i]:
                changes[i].append(now)
                last[i] = v
        if all(len(c) >= 12 for c in changes):  # fast counters: 11 intervals are plenty
            break
    periods = []
    for d, c in zip(devices, changes):
        if len(c) < 3:
            raise EnergyCounterError(
                f"energy counter of GPU {d.index} changed {len(c)} times in {max_s:g} s of polling: "
                "cannot measure its update period (raise max_s, or check the driver)")
        periods.append(statistics.median(b - a for a, b in zip(c, c[1:])))
    return max(periods)


def cuda_sync(cuda_indices: Sequence[int] = (0,)) -> Callable[[], None]:
    """A sync callable for every CUDA device of the cell (torch imported lazily)."""
    def sync() -> None:
        import torch

        for i in cuda_indices:
            torch.cuda.synchronize(i)
    return sync


class GpuEnergyMeter:
    source = "nvml_counter"

    def __init__(self, devices: Sequence, sync: Callable[[], None], *,
                 update_period_s: float | None = None, min_window_s: float = DEFAULT_MIN_WINDOW_S,
                 sampler: PowerSampler | None = None,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        """`update_period_s`: pass one measured earlier in this process to skip the ~1 s
        measurement; by default it is measured here."""
        if not devices:
            raise ValueError("GpuEnergyMeter needs at least one device")
        self.devices = list(devices)
        self.sync = sync
        self.min_window_s = min_window_s
        self.sampler = sampler
        self._clock, self._sleep = clock, sleep
        self.update_period_s = (update_period_s if update_period_s is not None
                                else measure_update_period(self.devices, clock=clock, sleep=sleep))
        self._start: tuple[float, list[float], str] | None = None

    @property
    def method(self) -> str:
        idx = ",".join(str(d.index) for d in self.devices)
        return (f"NVML nvmlDeviceGetTotalEnergyConsumption deltas (mJ -> J) summed over GPU {idx}; "
                f"device synchronized at both edges; counter update period "
                f"{self.update_period_s * 1e3:.0f} ms (measured)")

    def _read(self) -> list[float]:
        vals = [d.energy_j() for d in self.devices]
        if any(v is None for v in vals):
            raise EnergyCounterError("NVML energy counter read failed mid-run")
        return vals

    def begin(self, name: str = "window") -> None:
        if self._start is not None:
            raise RuntimeError(f"window {self._start[2]!r} is still open")
        self.sync()
        e0 = self._read()
        self._start = (self._clock(), e0, name)
        if self.sampler is not None:
            self.sampler.begin()

    def end(self) -> EnergyWindow:
        if self._start is None:
            raise RuntimeError("end() without begin()")
        t0, e0, name = self._start
        # the window closes and the sampler stops whatever the reads below do: an NVML error inside
        # one window must not leave every later cell failing at begin()
        self._start = None
        try:
            self.sync()
            e1 = self._read()
            t1 = self._clock()
        finally:
            timeline = self.sampler.end() if self.sampler is not None else None
        duration = t1 - t0
        if duration < self.update_period_s:
            raise WindowTooShort(
                f"window {name!r} lasted {duration * 1e3:.1f} ms, shorter than the energy counter's "
                f"update period ({self.update_period_s * 1e3:.0f} ms): repeat the workload until the "
                f"window reaches {self.min_window_s:g} s (run_for_at_least)")
        per = tuple(b - a for a, b in zip(e0, e1))
        flags = []
        if any(p < 0 for p in per):
            flags.append("energy counter went backwards (driver reloaded?): energy unknown")
            total = None
        else:
            total = sum(per)
        if duration < self.min_window_s:
            flags.append(f"window {duration:.2f} s < {self.min_window_s:g} s minimum: each edge may be one "
                         f"counter period stale, up to ~{200 * self.update_period_s / duration:.1f}% error")
        flags += cross_check(total, timeline)
        return EnergyWindow(name, total, duration, per, tuple(d.index for d in self.devices), self.source,
                            self.method, tuple(flags), self.update_period_s, timeline)

    def abort(self) -> None:
        """Close an open window without a result (the region it wrapped failed)."""
        if self._start is None:
            return
        self._start = None
        if self.sampler is not None:
            self.sampler.end()

    def _aligned_read(self, timeout_s: float) -> list[tuple[float, float]]:
        """(time, energy) per device at the moment its counter next changes: removes edge staleness
        for quiet windows (used for idle power, where waiting up to one period costs nothing)."""
        first = self._read()
        out: list[tuple[float, float] | None] = [None] * len(self.devices)
        start = self._clock()
        while any(o is None for o in out):
            if self._clock() - start > timeout_s:
                raise EnergyCounterError("energy counter did not change while waiting to align")
            self._sleep(0.0005)
            now = self._clock()
            for i, d in enumerate(self.devices):
                if out[i] is None:
                    v = d.energy_j()
                    if v != first[i]:
                        out[i] = (now, v)
        return out  # type: ignore[return-value]


class NullEnergyMeter:
    """No NVML (or no usable counter): windows still sync and time, energy is None, never 0."""

    source = "unavailable"
    update_period_s = None
    sampler = None

    def __init__(self, reason: str, sync: Callable[[], None] | None = None,
                 min_window_s: float = DEFAULT_MIN_WINDOW_S, clock: Callable[[], float] = time.perf_counter):
        self.method = reason
        self.sync = sync or (lambda: None)
        self.min_window_s = min_window_s
        self._clock = clock
        self._start: tuple[float, str] | None = None

    def begin(self, name: str = "window") -> None:
        self.sync()
        self._start = (self._clock(), name)

    def end(self) -> EnergyWindow:
        if self._start is None:
            raise RuntimeError("end() without begin()")
        self.sync()
        t0, name = self._start
        self._start = None
        return EnergyWindow(name, None, self._clock() - t0, (), (), self.source, self.method)

    def abort(self) -> None:
        self._start = None


def open_gpu_energy_meter(nvml, nvml_indices: Sequence[int], sync: Callable[[], None], *,
                          min_window_s: float = DEFAULT_MIN_WINDOW_S, sample_hz: float | None = DEFAULT_RATE_HZ,
                          update_period_s: float | None = None) -> GpuEnergyMeter | NullEnergyMeter:
    """The meter for a cell's GPUs, with a power sampler at `sample_hz` (None: no timeline), or a
    NullEnergyMeter saying why energy is unavailable."""
    if not nvml.available:
        return NullEnergyMeter(nvml.reason, sync, min_window_s)
    devices = nvml.devices(nvml_indices)
    sampler = PowerSampler(devices, sample_hz) if sample_hz else None
    try:
        return GpuEnergyMeter(devices, sync, update_period_s=update_period_s, min_window_s=min_window_s,
                              sampler=sampler)
    except EnergyCounterError as e:
        return NullEnergyMeter(str(e), sync, min_window_s)


def passes_for(min_s: float, pass_s: float) -> int:
    """Passes of a workload taking `pass_s` each that fill at least `min_s`."""
    return max(1, math.ceil(min_s / pass_s)) if pass_s > 0 else 1


def run_for_at_least(meter, fn: Callable[[], object], min_s: float | None = None, name: str = "window",
                     max_passes: int | None = None) -> tuple[EnergyWindow, int]:
    """One window around `fn()` repeated until `min_s` (default meter.min_window_s) of host time has
    passed; returns (window, passes). The host clock can run ahead of queued GPU work, so the
    synchronized window is at least as long as the host loop."""
    min_s = meter.min_window_s if min_s is None else min_s
    clock = getattr(meter, "_clock", time.perf_counter)
    meter.begin(name)
    t0, n = clock(), 0
    while True:
        fn()
        n += 1
        if clock() - t0 >= min_s or (max_passes is not None and n >= max_passes):
            break
    return meter.end(), n


def measure_idle_power(meter, seconds: float = 3.0, cooldown_s: float = 2.0) -> IdlePower:
    """Board power with nothing queued: after `cooldown_s`, the counter delta over `seconds`
    divided by its duration, each edge aligned to a counter change so staleness cancels."""
    if not isinstance(meter, GpuEnergyMeter):
        return IdlePower(None, seconds, (), getattr(meter, "method", "no energy counter"))
    meter.sync()
    meter._sleep(cooldown_s)
    timeout = 5 * meter.update_period_s + 1.0
    a = meter._aligned_read(timeout)
    meter._sleep(seconds)
    b = meter._aligned_read(timeout)
    per_w = tuple((eb - ea) / (tb - ta) for (ta, ea), (tb, eb) in zip(a, b))
    dur = statistics.mean(tb - ta for (ta, _), (tb, _) in zip(a, b))
    method = (f"NVML energy counter delta over {dur:.2f} s of idle after {cooldown_s:g} s cool-down, "
              "edges aligned to counter changes")
    if any(w < 0 for w in per_w):
        return IdlePower(None, dur, per_w, method + "; counter went backwards")
    return IdlePower(sum(per_w), dur, per_w, method)
