"""Background timeline of GPU power (NVML_FI_DEV_POWER_INSTANT), clocks and why they are below their
maximum, temperature, utilization and memory used, at >= 10 Hz (default 20 Hz).

The timeline is a cross-check and a picture, not the energy figure: energy comes from the counter
(gpu_energy.py). Its trapezoidal integral is compared with the counter delta; a disagreement above
5% becomes a flag on the window. nvmlDeviceGetPowerUsage is never read: it is a 1-s trailing
average on Ampere and newer (anchors.md), so integrating it smears and under-reports bursts.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, fields

MIN_RATE_HZ = 10.0
DEFAULT_RATE_HZ = 20.0
CROSS_CHECK_TOLERANCE = 0.05


@dataclass(frozen=True)
class PowerSample:
    t_s: float                       # seconds since begin(); all devices of one tick share it
    device: int                      # NVML index
    power_w: float | None            # instant board power
    sm_clock_hz: float | None = None
    mem_clock_hz: float | None = None
    temperature_c: float | None = None
    gpu_util: float | None = None    # fraction 0..1
    mem_util: float | None = None    # fraction 0..1 (memory controller busy)
    memory_used_bytes: int | None = None  # device-wide, every process
    clock_reasons: int | None = None      # NVML clock event reasons bitmask (harness.meters.clocks)


@dataclass(frozen=True)
class PowerTimeline:
    samples: tuple[PowerSample, ...]
    requested_rate_hz: float
    source: str = "NVML_FI_DEV_POWER_INSTANT"

    def devices(self) -> list[int]:
        return sorted({s.device for s in self.samples})

    def of(self, device: int) -> list[PowerSample]:
        return [s for s in self.samples if s.device == device]

    def _ticks(self) -> dict[float, list[PowerSample]]:
        by_t: dict[float, list[PowerSample]] = defaultdict(list)
        for s in self.samples:
            by_t[s.t_s].append(s)
        return dict(sorted(by_t.items()))

    def duration_s(self) -> float:
        ts = [s.t_s for s in self.samples]
        return max(ts) - min(ts) if ts else 0.0

    def rate_hz(self) -> float | None:
        """Achieved ticks per second (the slowest device where they differ)."""
        rates = []
        for d in self.devices():
            ts = [s.t_s for s in self.of(d)]
            if len(ts) >= 2 and ts[-1] > ts[0]:
                rates.append((len(ts) - 1) / (ts[-1] - ts[0]))
        return min(rates) if rates else None

    def energy_j(self) -> float | None:
        """Trapezoidal integral of instant power, summed over devices; None if any device lacks two
        power readings (a partial sum would look like a measurement)."""
        total = 0.0
        for d in self.devices():
            pts = [(s.t_s, s.power_w) for s in self.of(d) if s.power_w is not None]
            if len(pts) < 2:
                return None
            total += sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(pts, pts[1:]))
        return total if self.samples else None

    def mean_power_w(self) -> float | None:
        e, dur = self.energy_j(), self.duration_s()
        return None if e is None or dur <= 0 else e / dur

    def peak_power_w(self) -> float | None:
        """Highest instant power of one tick, summed over the devices of the cell."""
        sums = [sum(s.power_w for s in tick) for tick in self._ticks().values()
                if all(s.power_w is not None for s in tick)]
        return max(sums) if sums else None

    def peak_memory_used_bytes(self) -> int | None:
        """Highest device-wide NVML memory used of one tick, summed over devices."""
        sums = [sum(s.memory_used_bytes for s in tick) for tick in self._ticks().values()
                if all(s.memory_used_bytes is not None for s in tick)]
        return max(sums) if sums else None

    def to_json(self) -> dict:
        """Columnar and JSON-serializable, for a record's `extra` (one list per field)."""
        cols = {f.name: [getattr(s, f.name) for s in self.samples] for f in fields(PowerSample)}
        return {"source": self.source, "requested_rate_hz": self.requested_rate_hz,
                "rate_hz": self.rate_hz(), **cols}

    @classmethod
    def from_json(cls, d: dict) -> "PowerTimeline":
        names = [f.name for f in fields(PowerSample)]
        n = len(d.get("t_s", []))
        # a column a record written before it existed lacks (clock_reasons: 2026-12-04) reads as None
        samples = tuple(PowerSample(**{k: d[k][i] if k in d else None for k in names}) for i in range(n))
        return cls(samples, d["requested_rate_hz"], d.get("source", "NVML_FI_DEV_POWER_INSTANT"))


def cross_check(counter_j: float | None, timeline: PowerTimeline | None,
                tolerance: float = CROSS_CHECK_TOLERANCE) -> list[str]:
    """Flags comparing the counter delta with the integral of instant power over the same window."""
    flags = []
    if timeline is None or counter_j is None:
        return flags
    rate = timeline.rate_hz()
    if rate is not None and rate < MIN_RATE_HZ:
        flags.append(f"power sampler reached only {rate:.1f} Hz (< {MIN_RATE_HZ:g} Hz)")
    integral = timeline.energy_j()
    if integral is None:
        flags.append("no instant-power samples: counter not cross-checked")
    elif counter_j > 0:
        diff = (integral - counter_j) / counter_j
        if abs(diff) > tolerance:
            flags.append(f"counter-vs-instant-power disagree by {abs(diff) * 100:.1f}% "
                         f"(counter {counter_j:.3f} J, integral {integral:.3f} J)")
    return flags


class PowerSampler:
    """begin() takes one tick at once and starts the thread; end() stops it, takes a last tick, and
    returns the timeline. NVML calls go through ctypes, which releases the GIL while they run."""

    def __init__(self, devices, rate_hz: float = DEFAULT_RATE_HZ, extras: bool = True,
                 clock=time.perf_counter):
        if rate_hz < MIN_RATE_HZ:
            raise ValueError(f"power sampler rate {rate_hz} Hz is below the {MIN_RATE_HZ:g} Hz minimum")
        self.devices = list(devices)
        self.rate_hz = rate_hz
        self.extras = extras
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[PowerSample] = []
        self._error: BaseException | None = None
        self._t0 = 0.0

    def _read(self, d, t: float) -> PowerSample:
        if not self.extras:
            return PowerSample(t, d.index, d.power_instant_w())
        util = d.utilization()
        return PowerSample(t, d.index, d.power_instant_w(), d.sm_clock_hz(), d.mem_clock_hz(),
                           d.temperature_c(), util[0] if util else None, util[1] if util else None,
                           d.memory_used_bytes(), d.clock_event_reasons())

    def sample_once(self) -> None:
        t = self._clock() - self._t0
        self._samples.extend(self._read(d, t) for d in self.devices)

    def _loop(self) -> None:
        interval = 1.0 / self.rate_hz
        nxt = self._clock() + interval
        try:
            while not self._stop.wait(max(0.0, nxt - self._clock())):
                self.sample_once()
                nxt += interval
                now = self._clock()
                if nxt < now:  # fell behind (slow NVML call): skip missed ticks, do not burst
                    nxt = now + interval
        except BaseException as e:  # re-raised in end(): a sampler error must not vanish
            self._error = e

    def begin(self) -> None:
        self._stop.clear()
        self._samples, self._error = [], None
        self._t0 = self._clock()
        self.sample_once()
        self._thread = threading.Thread(target=self._loop, name="nvml-power-sampler", daemon=True)
        self._thread.start()

    def end(self) -> PowerTimeline:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise RuntimeError(f"power sampler failed: {self._error!r}") from self._error
        self.sample_once()
        return PowerTimeline(tuple(self._samples), self.rate_hz)
