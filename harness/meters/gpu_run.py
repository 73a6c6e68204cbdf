"""The GPU meters of a run, opened once per process and device set: NVML, the energy meter and its
power sampler, the copy bandwidth (the MBU reference), and idle power once per model.

Energy uses the two-loop method (harness.meters.two_loop, applied by the cell pipeline): the timed
loop of full passes is one energy window of at least `energy_window_s`; a second window repeats
prefill-only passes (prompt + first token) for as long.

A tensor-parallel run (--gpus N > 1) opens them over cuda:0..N-1: one energy window over every GPU
(per-GPU joules kept), the copy bandwidth measured on each GPU and summed (each rank streams its own
shard), and a MultiGpuMeter window for per-GPU and summed VRAM of the rank processes.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.meters.bandwidth import measure_copy_bandwidth
from harness.meters.gpu_energy import cuda_sync, measure_idle_power, open_gpu_energy_meter
from harness.meters.nvml import open_nvml
from harness.meters.vram import VramMeter


@dataclass
class GpuRunMeters:
    """Opened once per run and device set; idle power is measured once per model (after it is loaded)."""
    device_index: int
    energy_window_s: float             # RunSettings.energy_window_s
    sample_hz: float | None = 20.0
    gpus: int = 1                      # cuda:device_index .. device_index + gpus - 1

    def __post_init__(self):
        self.cuda_indices = tuple(range(self.device_index, self.device_index + self.gpus))
        self.nvml = open_nvml()
        self.nvml_indices = ([self.nvml.device_for_cuda(i).index for i in self.cuda_indices]
                             if self.nvml.available else [])
        self.nvml_index = self.nvml_indices[0] if self.nvml_indices else None
        self.meter = open_gpu_energy_meter(self.nvml, self.nvml_indices, cuda_sync(list(self.cuda_indices)),
                                           min_window_s=self.energy_window_s, sample_hz=self.sample_hz)
        if self.gpus == 1:
            self.copy_bw = measure_copy_bandwidth(f"cuda:{self.device_index}")
        else:
            from harness.meters.multi_gpu import summed_copy_bandwidth

            self.per_gpu_copy_bw = [measure_copy_bandwidth(f"cuda:{i}") for i in self.cuda_indices]
            self.copy_bw = summed_copy_bandwidth(self.per_gpu_copy_bw)
        self.idle_by_model: dict[str, object] = {}

    def idle_power(self, model_key: str):
        if model_key not in self.idle_by_model:
            self.idle_by_model[model_key] = measure_idle_power(self.meter)
        return self.idle_by_model[model_key]

    def devices(self) -> list:
        """The NVML devices of the cell's GPUs ([] without NVML)."""
        return self.nvml.devices(self.nvml_indices) if self.nvml_indices else []

    def vram_meter(self) -> VramMeter:
        devs = self.nvml.devices([self.nvml_index]) if self.nvml_index is not None else []
        return VramMeter(devs, [self.device_index])

    def multi_gpu_meter(self, pids, energy):
        """VRAM per GPU of the rank processes `pids` and summed; per-GPU energy from `energy`'s window."""
        from harness.meters.multi_gpu import MultiGpuMeter

        return MultiGpuMeter(self.devices(), pids, energy)
