"""GPU memory of a window, from three views that answer different questions:

- NVML device-wide memory used: what the board holds (every process, CUDA context, allocator
  slack); its peak comes from the power sampler's timeline, which reads it at 20 Hz.
- NVML per-process memory used: our footprint, where NVML lists the process. Inside VMs and
  containers it often lists none (the lab H100 did not): then the headline falls back to the
  device-wide figure and a note says so.
- torch.cuda.max_memory_allocated / max_memory_reserved: the caching allocator's own peaks
  (tensors, and what the allocator reserved for them); they exclude the CUDA context and libraries.

torch is imported inside functions: a meter never imports model code, and CPU runs never pay for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

NO_PROCESSES_NOTE = "device-wide: NVML lists no processes"


@dataclass(frozen=True)
class VramWindow:
    peak_vram_bytes: int | None                 # headline, from `peak_vram_source`
    peak_vram_source: str                       # nvml_process | nvml_device | torch_reserved | unavailable
    nvml_device_peak_used_bytes: int | None     # device-wide, all processes, summed over devices
    nvml_device_used_at_begin_bytes: int | None
    nvml_process_used_bytes: int | None         # this pid at end(); the allocator keeps what it reserved
    torch_max_allocated_bytes: int | None
    torch_max_reserved_bytes: int | None
    notes: tuple[str, ...] = ()
    torch_reserved_at_end_bytes: int | None = None   # held by the allocator when the NVML figure was read


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda if torch.cuda.is_available() else None


def torch_peaks(cuda_indices: Sequence[int]) -> tuple[int | None, int | None]:
    """(max allocated, max reserved) bytes since the last reset, summed over devices."""
    cuda = _torch_cuda()
    if cuda is None or not cuda_indices:
        return None, None
    return (sum(int(cuda.max_memory_allocated(i)) for i in cuda_indices),
            sum(int(cuda.max_memory_reserved(i)) for i in cuda_indices))


def torch_reserved_now(cuda_indices: Sequence[int]) -> int | None:
    cuda = _torch_cuda()
    if cuda is None or not cuda_indices:
        return None
    return sum(int(cuda.memory_reserved(i)) for i in cuda_indices)


def reset_torch_peaks(cuda_indices: Sequence[int]) -> None:
    cuda = _torch_cuda()
    if cuda is not None:
        for i in cuda_indices:
            cuda.reset_peak_memory_stats(i)


def process_used_bytes(devices, pid: int | None = None) -> int | None:
    """Our process's memory summed over devices; None when NVML lists no entry for it on any."""
    pid = os.getpid() if pid is None else pid
    found, total = False, 0
    for d in devices:
        for p in d.processes():
            if p.pid == pid and p.used_bytes is not None:
                found, total = True, total + p.used_bytes
    return total if found else None


def _sum_or_none(xs):
    xs = list(xs)
    return None if not xs or any(x is None for x in xs) else sum(xs)


class VramMeter:
    """begin() resets torch's peak counters and notes NVML memory used; end(timeline) reads the
    peaks. Pass the energy window's power timeline to end() for the sampled NVML peak; without it
    the device-wide figure is one reading at end()."""

    def __init__(self, devices, cuda_indices: Sequence[int] = (), pid: int | None = None):
        self.devices = list(devices)
        self.cuda_indices = list(cuda_indices)
        self.pid = os.getpid() if pid is None else pid
        self._begin_used: int | None = None

    def begin(self) -> None:
        reset_torch_peaks(self.cuda_indices)
        self._begin_used = _sum_or_none(d.memory_used_bytes() for d in self.devices)

    def end(self, timeline=None) -> VramWindow:
        notes = []
        alloc, reserved = torch_peaks(self.cuda_indices)
        reserved_now = torch_reserved_now(self.cuda_indices)
        end_used = _sum_or_none(d.memory_used_bytes() for d in self.devices)
        sampled = timeline.peak_memory_used_bytes() if timeline is not None else None
        if sampled is None and end_used is not None:
            notes.append("NVML device memory: one reading at end(), not a sampled peak")
        seen_used = [x for x in (sampled, end_used, self._begin_used) if x is not None]
        device_peak = max(seen_used) if seen_used else None
        proc = process_used_bytes(self.devices, self.pid)
        if proc is not None:
            peak, src = proc, "nvml_process"
        elif device_peak is not None:
            peak, src = device_peak, "nvml_device"
            notes.append(NO_PROCESSES_NOTE + " (figure includes any other process on the GPU)")
        elif reserved is not None:
            peak, src = reserved, "torch_reserved"
            notes.append("no NVML: torch caching-allocator peak, without CUDA context and libraries")
        else:
            peak, src = None, "unavailable"
        return VramWindow(peak, src, device_peak, self._begin_used, proc, alloc, reserved, tuple(notes), reserved_now)


# Peak VRAM may exceed weights + KV cache + workspace by this share before it is flagged.
VRAM_BUDGET_TOLERANCE = 0.10


@dataclass(frozen=True)
class VramBudget:
    """Peak VRAM against what the cell needs: weights (measured from the tensors) + KV cache (from the
    shape) + workspace. Workspace = activations (the planner's formula, for the prefill tokens this
    engine runs in one chunk) + the CUDA context and libraries, measured as NVML's figure minus what
    torch's allocator held at the same moment. What is left over is allocator slack: cached or
    fragmented blocks, leftovers of variant application, CUDA graph pools."""
    expected_bytes: int
    weight_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    runtime_bytes: int | None
    peak_bytes: int
    ratio: float                 # peak / expected

    @property
    def within(self) -> bool:
        return self.ratio <= 1 + VRAM_BUDGET_TOLERANCE

    def as_dict(self) -> dict:
        return {"expected_bytes": self.expected_bytes, "weight_bytes": self.weight_bytes,
                "kv_cache_bytes": self.kv_cache_bytes, "activation_bytes": self.activation_bytes,
                "runtime_bytes": self.runtime_bytes, "peak_bytes": self.peak_bytes, "ratio": self.ratio,
                "within_tolerance": self.within, "tolerance": VRAM_BUDGET_TOLERANCE,
                "method": "expected = weights (tensors) + KV cache (shape) + activations (planner formula, "
                          "prefill tokens in one chunk) + runtime (NVML used - torch reserved, same moment)"}


def vram_budget(window: VramWindow, weight_bytes: int | None, kv_bytes: int | None,
                activation_bytes: int | None) -> VramBudget | None:
    """None when the peak or a term is unknown. The runtime term is counted only where the peak is an
    NVML figure (torch's own peak excludes the context)."""
    if window.peak_vram_bytes is None or weight_bytes is None or kv_bytes is None or activation_bytes is None:
        return None
    runtime = None
    if window.peak_vram_source in ("nvml_process", "nvml_device"):
        used = (window.nvml_process_used_bytes if window.peak_vram_source == "nvml_process"
                else window.nvml_device_peak_used_bytes)
        if used is None or window.torch_reserved_at_end_bytes is None:
            return None
        runtime = max(0, used - window.torch_reserved_at_end_bytes)
    expected = weight_bytes + kv_bytes + activation_bytes + (runtime or 0)
    return VramBudget(expected, weight_bytes, kv_bytes, activation_bytes, runtime, window.peak_vram_bytes,
                      window.peak_vram_bytes / expected)


def _tensors(obj, depth: int = 0) -> Iterable:
    if depth > 6 or obj is None:
        return
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, depth + 1)
    else:  # KV cache objects: lean decoder (k_cache/v_cache), transformers (layers[i].keys/values)
        for name in ("k_cache", "v_cache", "key_cache", "value_cache", "layers", "keys", "values"):
            v = getattr(obj, name, None)
            if v is not None and not callable(v):
                yield from _tensors(v, depth + 1)


def kv_cache_bytes(cache) -> int:
    """Allocated bytes of the tensors of a KV cache (a tensor, nested lists/dicts of them, or a cache
    object), each storage counted once: views of a preallocated static cache count its whole buffer,
    which is what it occupies."""
    seen, total = set(), 0
    for t in _tensors(cache):
        try:
            st = t.untyped_storage()
            key, nbytes = (st.data_ptr(), st.nbytes()), st.nbytes()
        except (AttributeError, RuntimeError, NotImplementedError):
            key, nbytes = (id(t), 0), t.numel() * t.element_size()
        if key not in seen:
            seen.add(key)
            total += nbytes
    return total
