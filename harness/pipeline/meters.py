"""The built-in meters of a cell, as windows (harness.meters.base), and the cell's energy meter.

- host RSS (psutil, sampled in a thread): every cell measured with meters on;
- VRAM (NVML per process or device-wide, and the caching allocator's peaks): CUDA cells;
- energy: NVML's counter on CUDA (opened once per process, with its power sampler), RAPL or a
  labelled estimate on CPU. The energy window also feeds the two-loop prefill/decode split, so the
  pipeline keeps a handle on it; its own record fields come from that split (harness.pipeline.assemble);
- clocks (CUDA): whether the timed loop ran at full SM clock, from the energy window's timeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.meters.base import MeterScope, meters_for, register_meter
from harness.meters.memory import RssSampler

RSS_METHOD = "psutil RSS of this process, sampled every 5 ms in a thread during the timed window"


class RssMeter:
    name = "rss"

    def __init__(self):
        self._s = RssSampler()

    def begin(self) -> None:
        self._s.begin()

    def end(self):
        return self._s.end()

    def record_fields(self, result) -> dict[str, Any]:
        return {"peak_rss_bytes": result.peak_rss_bytes, "memory.rss_method": RSS_METHOD}


class EnergyMeter:
    """The energy window around the timed loop (GPU counter, CPU RAPL/estimate, or unavailable)."""
    name = "energy"

    def __init__(self, meter):
        self.meter = meter
        self.min_window_s = getattr(meter, "min_window_s", 0.0)
        self.last = None

    @property
    def source(self) -> str:
        return self.meter.source

    def begin(self) -> None:
        self.last = None
        self.meter.begin("full-loop")

    def end(self):
        self.last = self.meter.end()
        return self.last

    def abort(self) -> None:
        getattr(self.meter, "abort", lambda: None)()

    def record_fields(self, result) -> dict[str, Any]:
        return {}   # filled from the two-loop split, which also needs the prefill window


class VramWindowMeter:
    """VRAM over the timed loop; its NVML device peak comes from the energy window's power timeline
    (sampled at 20 Hz), so it ends after the energy meter (windows end in reverse order)."""
    name = "vram"

    def __init__(self, vram, energy: EnergyMeter | None):
        self.vram, self.energy = vram, energy

    def begin(self) -> None:
        self.vram.begin()

    def end(self):
        last = self.energy.last if self.energy is not None else None
        return self.vram.end(getattr(last, "timeline", None))

    def record_fields(self, w) -> dict[str, Any]:
        return {"peak_vram_bytes": w.peak_vram_bytes, "memory.peak_vram_source": w.peak_vram_source,
                "memory.torch_max_allocated_bytes": w.torch_max_allocated_bytes,
                "memory.torch_max_reserved_bytes": w.torch_max_reserved_bytes,
                "memory.nvml_process_bytes": w.nvml_process_used_bytes, "memory.vram_notes": list(w.notes)}


class ClockWindowMeter:
    """Whether the timed loop ran at full clock (harness.meters.clocks), from the energy window's power
    timeline; like the VRAM window it ends after the energy meter."""
    name = "clocks"

    def __init__(self, energy: EnergyMeter, max_sm_hz: dict):
        self.energy, self.max_sm_hz = energy, max_sm_hz

    def begin(self) -> None:
        pass

    def end(self):
        return self.summary(getattr(self.energy.last, "timeline", None))

    def summary(self, timeline, window: str = "the timed window"):
        from harness.meters.clocks import clock_summary

        return clock_summary(timeline, self.max_sm_hz, window)

    def record_fields(self, summary) -> dict[str, Any]:
        return {"clocks": summary}


@dataclass
class CellMeters:
    """The windows of one cell, in begin order, and the energy meter among them (or None)."""
    windows: list
    energy: EnergyMeter | None
    vram: VramWindowMeter | None


def gpu_run_meters(scope: MeterScope):
    """The run's GPU meters, opened once per process by the first CUDA cell that has meters."""
    ctx, s = scope.run_context, scope.settings
    if ctx.gpu is None:
        from harness.meters.gpu_run import GpuRunMeters

        ctx.gpu = GpuRunMeters(scope.device_index or 0, s.energy_window_s, gpus=_gpus(scope))
    return ctx.gpu


def _gpus(scope: MeterScope) -> int:
    """How many GPUs a CUDA cell runs on: --gpus (a tensor-parallel cell's ranks), else 1."""
    return max(1, int(getattr(scope.settings, "gpus", 1) or 1))


def open_energy(scope: MeterScope, cpu_power_w: float | None) -> EnergyMeter | None:
    if not scope.cell.meters or not scope.settings.meters:
        return None
    if scope.device_type == "cuda":
        return EnergyMeter(gpu_run_meters(scope).meter)
    if scope.device_type == "cpu":
        from harness.meters.cpu_energy import CpuEnergyMeter, open_cpu_energy_reader

        return EnergyMeter(CpuEnergyMeter(open_cpu_energy_reader(cpu_power_w), scope.settings.meter.min_seconds))
    return None


def open_cell_meters(scope: MeterScope, cpu_power_w: float | None, pids=()) -> CellMeters:
    """The cell's windows. A CUDA cell on several GPUs (`pids`: its rank processes) gets the
    multi-GPU window (per-GPU and summed VRAM, per-GPU energy) in place of GPU 0's VRAM window."""
    energy = open_energy(scope, cpu_power_w)
    vram = multi = clocks = None
    if energy is not None and scope.device_type == "cuda":
        gpu = gpu_run_meters(scope)
        if _gpus(scope) > 1:
            multi = gpu.multi_gpu_meter(list(pids), energy)
        else:
            vram = VramWindowMeter(gpu.vram_meter(), energy)
        clocks = ClockWindowMeter(energy, {d.index: d.max_sm_clock_hz() for d in gpu.devices()})
    others = meters_for(scope)   # host RSS and any registered meter
    # begun before the energy window, ended after it (reverse order): these windows read its result
    windows = others + [w for w in (vram, multi, clocks) if w] + ([energy] if energy else [])
    return CellMeters(windows, energy, vram)


def _rss_factory(scope: MeterScope):
    return RssMeter() if scope.cell.meters else None


def _foreign_load_factory(scope: MeterScope):
    """Other processes' CPU and GPU use during the window (harness.meters.foreign)."""
    if not scope.cell.meters:
        return None
    from harness.meters.foreign import ForeignLoadMeter

    devices = []
    if scope.device_type == "cuda" and scope.settings.meters:
        devices = gpu_run_meters(scope).devices()
    return ForeignLoadMeter(devices)


register_meter("rss", _rss_factory)
register_meter("foreign-load", _foreign_load_factory)
