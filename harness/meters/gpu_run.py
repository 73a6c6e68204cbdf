"""The GPU meters of a run, opened once per process and device: NVML, the energy meter and its
power sampler, the copy bandwidth (the MBU reference), and idle power once per model.

Energy uses the two-loop method (harness.meters.two_loop, applied by the cell pipeline): the timed
loop of full passes is one energy window of at least `energy_window_s`; a second window repeats
prefill-only passes (prompt + first token) for as long.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.meters.bandwidth import measure_copy_bandwidth
from harness.meters.gpu_energy import cuda_sync, measure_idle_power, open_gpu_energy_meter
from harness.meters.nvml import open_nvml
from harness.meters.vram import VramMeter


@dataclass
class GpuRunMeters:
    """Opened once per run and device; idle power is measured once per model (after it is loaded)."""
    device_index: int
    energy_window_s: float             # RunSettings.energy_window_s
    sample_hz: float | None = 20.0

    def __post_init__(self):
        self.nvml = open_nvml()
        self.nvml_index = (self.nvml.device_for_cuda(self.device_index).index if self.nvml.available else None)
        self.meter = open_gpu_energy_meter(self.nvml, [self.nvml_index] if self.nvml_index is not None else [],
                                           cuda_sync([self.device_index]), min_window_s=self.energy_window_s,
                                           sample_hz=self.sample_hz)
        self.copy_bw = measure_copy_bandwidth(f"cuda:{self.device_index}")
        self.idle_by_model: dict[str, object] = {}

    def idle_power(self, model_key: str):
        if model_key not in self.idle_by_model:
            self.idle_by_model[model_key] = measure_idle_power(self.meter)
        return self.idle_by_model[model_key]

    def vram_meter(self) -> VramMeter:
        devs = self.nvml.devices([self.nvml_index]) if self.nvml_index is not None else []
        return VramMeter(devs, [self.device_index])
