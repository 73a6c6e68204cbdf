"""The meters of a cell that runs on several GPUs (a tensor-parallel cell): one window over all of
them whose figures are sums, with each GPU's own figures kept for the record (extra["per_gpu"]),
the interconnect between them named from NVML, and the MBU reference as the summed copy bandwidth.

Energy comes from the cell's one energy window over every GPU (harness.meters.gpu_energy already
sums the counters and keeps per_device_j); this window adds per-GPU memory. The ranks are other
processes than the one measuring, so NVML's per-process memory is read for the ranks' pids; where
NVML lists no processes (VMs, containers), device-wide memory used is the figure, labelled as such.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Interconnect:
    kind: str                                   # "NVLink" | "PCIe" | "unknown" | "single GPU"
    nvlink_active_links: tuple[int | None, ...]  # per GPU, NVML order of the cell's devices
    p2p_nvlink: tuple[bool | None, ...]          # per pair (i < j) in that order
    method: str


INTERCONNECT_METHOD = ("NVML nvmlDeviceGetNvLinkState (active links per GPU) and nvmlDeviceGetP2PStatus "
                       "(NVML_P2P_CAPS_INDEX_NVLINK) per pair; no NVLink between a pair: PCIe")


def interconnect(devices: Sequence) -> Interconnect:
    """How the cell's GPUs talk: NVLink when every pair has NVLink peer-to-peer, PCIe when NVML says
    none has (or the boards have no NVLink at all), unknown when NVML cannot tell."""
    links = tuple(getattr(d, "nvlink_active_links", lambda: None)() for d in devices)
    pairs = tuple(devices[i].p2p_over_nvlink(devices[j]) if hasattr(devices[i], "p2p_over_nvlink") else None
                  for i in range(len(devices)) for j in range(i + 1, len(devices)))
    if len(devices) < 2:
        kind = "single GPU"
    elif pairs and all(p is True for p in pairs):
        kind = "NVLink"
    elif all(p is False for p in pairs) or (all(n is None for n in links) and all(d.available for d in devices)):
        kind = "PCIe"
    else:
        kind = "unknown"
    return Interconnect(kind, links, pairs, INTERCONNECT_METHOD)


@dataclass(frozen=True)
class GpuShare:
    """One GPU's figures inside a multi-GPU window."""
    nvml_index: int
    energy_j: float | None
    peak_vram_bytes: int | None            # from `peak_vram_source`
    peak_vram_source: str                  # nvml_process (the ranks' pids) | nvml_device | unavailable
    memory_used_at_begin_bytes: int | None


@dataclass(frozen=True)
class MultiGpuWindow:
    per_gpu: tuple[GpuShare, ...]
    energy_j: float | None                 # summed; None when any GPU's is unknown
    peak_vram_bytes: int | None            # summed; None when any GPU's is unknown
    peak_vram_source: str                  # the weakest source among the GPUs
    interconnect: Interconnect

    def as_extra(self) -> dict[str, Any]:
        return {"per_gpu": [asdict(g) for g in self.per_gpu], "interconnect": asdict(self.interconnect)}


def _sum(xs):
    xs = list(xs)
    return None if not xs or any(x is None for x in xs) else sum(xs)


_SOURCE_RANK = ("unavailable", "nvml_device", "nvml_process")


def _peak(device, pids: Sequence[int], used: list[int]) -> tuple[int | None, str]:
    mine = [p.used_bytes for p in device.processes() if p.pid in pids and p.used_bytes is not None]
    if mine:
        return sum(mine), "nvml_process"
    return (max(used), "nvml_device") if used else (None, "unavailable")


def combine(devices: Sequence, begin_used: Sequence[int | None], end_used: Sequence[int | None],
            per_device_j: Sequence[float] | None, pids: Sequence[int], link: Interconnect) -> MultiGpuWindow:
    """Sum the per-GPU figures; `per_device_j` in the order of `devices` (an EnergyWindow's)."""
    shares = []
    for i, d in enumerate(devices):
        used = [x for x in (begin_used[i], end_used[i]) if x is not None]
        peak, src = _peak(d, pids, used)
        e = per_device_j[i] if per_device_j is not None else None
        shares.append(GpuShare(d.index, e, peak, src, begin_used[i]))
    source = min((s.peak_vram_source for s in shares), key=_SOURCE_RANK.index) if shares else "unavailable"
    return MultiGpuWindow(tuple(shares), _sum(s.energy_j for s in shares), _sum(s.peak_vram_bytes for s in shares),
                          source, link)


class MultiGpuMeter:
    """A window over several GPUs. Pass the cell's energy meter (harness.pipeline.meters.EnergyMeter)
    so that end() splits its window per GPU: it must end after that one (windows end in reverse
    order of begin, so begin this one first)."""
    name = "multi-gpu"

    def __init__(self, devices: Sequence, pids: Sequence[int] = (), energy=None):
        self.devices, self.pids, self.energy = list(devices), list(pids), energy
        self.link = interconnect(self.devices)
        self._begin: list[int | None] = []

    def begin(self) -> None:
        self._begin = [d.memory_used_bytes() for d in self.devices]

    def end(self) -> MultiGpuWindow:
        end_used = [d.memory_used_bytes() for d in self.devices]
        last = getattr(self.energy, "last", None)
        per_j = getattr(last, "per_device_j", None) if getattr(last, "energy_j", None) is not None else None
        if per_j is not None and len(per_j) != len(self.devices):
            per_j = None
        return combine(self.devices, self._begin, end_used, per_j, self.pids, self.link)

    def record_fields(self, w: MultiGpuWindow) -> dict[str, Any]:
        return {"peak_vram_bytes": w.peak_vram_bytes, "memory.peak_vram_source": w.peak_vram_source,
                "gpus": len(w.per_gpu), **w.as_extra()}


def summed_copy_bandwidth(per_gpu) -> "Throughput":
    """The MBU reference of a multi-GPU cell: each GPU streams its own shard of the weights, so the
    ceiling is the sum of the GPUs' measured copy bandwidths (harness.meters.bandwidth.Throughput)."""
    from harness.meters.bandwidth import Throughput

    per_gpu = list(per_gpu)
    return Throughput(sum(t.value_per_s for t in per_gpu), tuple(t.value_per_s for t in per_gpu),
                      f"sum over {len(per_gpu)} GPUs of: {per_gpu[0].method}" if per_gpu else "no GPU")
