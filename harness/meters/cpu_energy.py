"""CPU energy: RAPL package counters when readable, else an estimate from CPU load and the profile's
power figure, else unavailable. The three never mix: each window carries its source label.

Readers return a cumulative reading; `joules(a, b)` turns two readings into energy. The pipeline
uses them through `CpuEnergyMeter`, a window like the NVML one (begin/end -> EnergyWindow), so the
same two-loop split gives prefill and decode energy on every device.
"""
from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RAPL_ROOT = "/sys/class/powercap"


@dataclass(frozen=True)
class RaplZone:
    name: str
    energy_path: Path
    max_energy_uj: int


def rapl_zones(root: str = RAPL_ROOT) -> list[RaplZone]:
    """Top-level package zones (intel-rapl:N, not the sub-zones :N:M) whose counters we can read."""
    zones = []
    for d in sorted(glob.glob(os.path.join(root, "intel-rapl:*"))):
        if d.count(":") != 1:
            continue
        p = Path(d)
        try:
            int((p / "energy_uj").read_text())
            zones.append(RaplZone((p / "name").read_text().strip() if (p / "name").exists() else p.name,
                                  p / "energy_uj", int((p / "max_energy_range_uj").read_text())))
        except (OSError, ValueError):
            continue
    return zones


class RaplReader:
    source = "rapl"

    def __init__(self, zones: list[RaplZone]):
        if not zones:
            raise ValueError("no readable RAPL zones")
        self.zones = zones
        self.method = "RAPL package counters " + ", ".join(z.name for z in zones) + " (energy_uj deltas, wraparound handled)"

    def read(self) -> tuple[int, ...]:
        return tuple(int(z.energy_path.read_text()) for z in self.zones)

    def joules(self, a, b) -> float:
        total_uj = 0
        for z, x, y in zip(self.zones, a, b):
            d = y - x
            if d < 0:  # the counter wrapped at max_energy_range_uj
                d += z.max_energy_uj + 1
            total_uj += d
        return total_uj * 1e-6


class LoadEstimateReader:
    """E = power_w x CPU busy fraction (psutil.cpu_times over all cores) x seconds."""
    source = "estimate"

    def __init__(self, power_w: float):
        if power_w is None or power_w <= 0:
            raise ValueError("an energy estimate needs a positive power figure")
        self.power_w = power_w
        self.method = (f"{power_w:g} W (profile power) x CPU busy fraction (psutil.cpu_times, "
                       "all cores) x window seconds; not a measurement")

    def read(self):
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        return time.perf_counter(), sum(t) - idle, sum(t)

    def joules(self, a, b) -> float:
        dt = b[0] - a[0]
        d_total = b[2] - a[2]
        busy = (b[1] - a[1]) / d_total if d_total > 0 else 0.0
        return self.power_w * min(max(busy, 0.0), 1.0) * dt


class UnavailableReader:
    source = "unavailable"
    method = "no RAPL counter readable and no power figure for an estimate (set --cpu-power-w)"

    def read(self):
        return None

    def joules(self, a, b):
        return None


def open_cpu_energy_reader(power_w: float | None, rapl_root: str = RAPL_ROOT):
    zones = rapl_zones(rapl_root)
    if zones:
        return RaplReader(zones)
    if power_w:
        return LoadEstimateReader(power_w)
    return UnavailableReader()


class CpuEnergyMeter:
    """A begin()/end() window over a CPU energy reader; results are `EnergyWindow`s, as on the GPU."""

    def __init__(self, reader, min_window_s: float = 0.0):
        self.reader = reader
        self.source, self.method = reader.source, reader.method
        self.min_window_s = min_window_s
        self.update_period_s = None
        self._start = None

    def begin(self, name: str = "window") -> None:
        if self._start is not None:
            raise RuntimeError(f"window {self._start[2]!r} is still open")
        self._start = (time.perf_counter(), self.reader.read(), name)

    def end(self):
        from harness.meters.gpu_energy import EnergyWindow

        if self._start is None:
            raise RuntimeError("end() without begin()")
        t0, r0, name = self._start
        self._start = None
        r1 = self.reader.read()
        energy = self.reader.joules(r0, r1) if r0 is not None else None
        return EnergyWindow(name, energy, time.perf_counter() - t0, (), (), self.source, self.method)

    def abort(self) -> None:
        self._start = None
