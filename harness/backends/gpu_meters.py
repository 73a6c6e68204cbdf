"""GPU meters for a run: NVML energy windows, idle power, VRAM, copy bandwidth, MBU and MFU.

Energy uses the two-loop method (harness.meters.two_loop): the timed loop of full passes is one
energy window of at least `energy_window_s`; a second window repeats prefill-only passes (prompt +
first token) for as long. Gross J/token is the headline; the idle-subtracted figure sits beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.meters.bandwidth import (achieved_bandwidth, achieved_flops, decode_bytes_per_step, measure_copy_bandwidth,
                                      mbu, mfu, prefill_flops)
from harness.meters.gpu_energy import cuda_sync, measure_idle_power, open_gpu_energy_meter, run_for_at_least
from harness.meters.nvml import open_nvml
from harness.meters.two_loop import LoopEnergy, split_gross_and_net
from harness.meters.vram import VramMeter
from harness.variants import compute_format

DEFAULT_ENERGY_WINDOW_S = 10.0


@dataclass
class GpuRunMeters:
    """Opened once per run and device; idle power is measured once per model (after it is loaded)."""
    device_index: int
    energy_window_s: float = DEFAULT_ENERGY_WINDOW_S
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

    def prefill_window(self, engine, ids):
        return run_for_at_least(self.meter, lambda: engine.run_prefill(ids), name="prefill-loop")


def energy_fields(meters: GpuRunMeters, model_key: str, m, w_pre, n_pre, vram_window, cell) -> tuple[dict, dict]:
    """Record fields and `extra` entries from the full-loop window (m.window), the prefill window and VRAM."""
    w_full = m.window
    idle = meters.idle_power(model_key)
    gross, net = split_gross_and_net(LoopEnergy.from_window(w_pre, n_pre), LoopEnergy.from_window(w_full, m.repeats),
                                     cell.prompt_tokens, cell.new_tokens, cell.batch_size, idle.power_w)
    fields = dict(
        energy_j=w_full.energy_j, j_per_token_decode=gross.j_per_token_decode,
        j_per_token_prefill=gross.j_per_token_prefill, power_mean_w=w_full.mean_power_w,
        power_peak_w=w_full.peak_power_w, idle_power_w=idle.power_w, energy_source=w_full.source,
        energy_method=(f"{meters.meter.method}; two-loop split: full-loop window {w_full.duration_s:.1f} s "
                       f"({m.repeats} passes), prefill-loop window {w_pre.duration_s:.1f} s ({n_pre} passes)"),
        energy_flags=list(w_pre.flags) + list(w_full.flags) + list(gross.reasons),
        peak_vram_bytes=vram_window.peak_vram_bytes)
    extra = {
        "energy_net": None if net is None else {"basis": net.basis, "j_per_token_decode": net.j_per_token_decode,
                                                "j_per_token_prefill": net.j_per_token_prefill},
        "j_per_output_token": gross.j_per_output_token,
        "idle_method": idle.method,
        "power_timeline": w_full.timeline.to_json() if w_full.timeline is not None else None,
        "peak_vram_source": vram_window.peak_vram_source,
        "vram": {"torch_max_allocated_bytes": vram_window.torch_max_allocated_bytes,
                 "torch_max_reserved_bytes": vram_window.torch_max_reserved_bytes,
                 "process_bytes": vram_window.nvml_process_used_bytes, "notes": list(vram_window.notes)},
    }
    return fields, extra


def bandwidth_fields(meters: GpuRunMeters | None, profile, shape, variant: str, weight_bytes: int, kv_per_token: float,
                     context_len: float, cell, decode_tok_s, ttft_s, dtype_name: str) -> tuple[dict, dict]:
    """Achieved decode bandwidth (bytes read per step x steps/s), MBU against the copy bandwidth measured
    in this run, and prefill MFU against the profile's peak for the variant's compute format."""
    if decode_tok_s is None:
        return {}, {}
    per_step = decode_bytes_per_step(weight_bytes, kv_per_token, context_len, cell.batch_size)
    bw = achieved_bandwidth(per_step, decode_tok_s / cell.batch_size)
    copy = meters.copy_bw.value_per_s if meters is not None else None
    peak_bw = getattr(profile, "bandwidth_bytes_per_s", None)
    # the variant layout's compute format bounds prefill: fp8/int8 activations use those tensor cores,
    # weight-only variants dequantize into the compute dtype
    fmt = compute_format(variant, dtype_name)
    peak = profile.peak(fmt) if hasattr(profile, "peak") else None
    flops = achieved_flops(prefill_flops(shape, cell.batch_size, cell.prompt_tokens), ttft_s) if shape else None
    return ({"achieved_bandwidth_bytes_per_s": bw, "mbu": mbu(bw, copy), "mfu": mfu(flops, peak)},
            {"copy_bandwidth_bytes_per_s": copy, "copy_bandwidth_method": meters.copy_bw.method if meters else None,
             "bandwidth_share_of_profile_peak": mbu(bw, peak_bw), "decode_bytes_per_step": per_step,
             "decode_context_for_kv_bytes": context_len, "prefill_flop_per_s": flops, "mfu_format": fmt})
