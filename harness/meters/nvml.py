"""A thin NVML device interface: the one module that imports pynvml (tests patch
`harness.meters.nvml.pynvml`). Units are converted once, here: NVML's mJ -> J, mW -> W, MHz -> Hz,
percent -> fraction. Optional readings a GPU does not support come back as None, never 0.

`open_nvml()` returns an `Nvml` session, or a `NullNvml` (available = False) on machines without
NVML, so callers never branch on import errors. NVML facts seen on the lab H100 (anchors.md): the
energy counter, field NVML_FI_DEV_POWER_INSTANT (186), clocks, temperature and utilization answer;
nvmlDeviceGetComputeRunningProcesses returned an empty list inside the VM.

nvmlDeviceGetPowerUsage is deliberately not wrapped: on Ampere and newer (except GA100) it is a
1-second trailing average, and integrating it under-reports bursts (lab: 357 W vs 409 W from the
counter while copying). Instant power comes from the field value instead.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import pynvml

FI_DEV_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT in nvml.h; pynvml's constant where it has one


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    used_bytes: int | None  # None where NVML cannot attribute memory (e.g. WDDM)


def _field_value(v) -> float:
    """Read a c_nvmlFieldValue_t's union by its declared type."""
    t = v.valueType
    name = {
        getattr(pynvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
        getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
        getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
        getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
        getattr(pynvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
        getattr(pynvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
    }.get(t, "uiVal")
    return float(getattr(v.value, name))


class NvmlDevice:
    """One GPU by NVML index. Every reading is one NVML call; nothing is cached except the handle."""

    available = True

    def __init__(self, index: int, handle):
        self.index = index
        self._h = handle

    def _opt(self, fn, *args):
        try:
            return fn(self._h, *args)
        except pynvml.NVMLError:
            return None

    def name(self) -> str | None:
        n = self._opt(pynvml.nvmlDeviceGetName)
        return n.decode() if isinstance(n, bytes) else n

    def uuid(self) -> str | None:
        u = self._opt(pynvml.nvmlDeviceGetUUID)
        return u.decode() if isinstance(u, bytes) else u

    def memory_info(self) -> MemoryInfo | None:
        m = self._opt(pynvml.nvmlDeviceGetMemoryInfo)
        return None if m is None else MemoryInfo(int(m.total), int(m.used), int(m.free))

    def memory_used_bytes(self) -> int | None:
        m = self.memory_info()
        return None if m is None else m.used_bytes

    def compute_capability(self) -> tuple[int, int] | None:
        cc = self._opt(pynvml.nvmlDeviceGetCudaComputeCapability)
        return None if cc is None else (int(cc[0]), int(cc[1]))

    def energy_j(self) -> float | None:
        """Total energy since the driver loaded (nvmlDeviceGetTotalEnergyConsumption, mJ, Volta+)."""
        mj = self._opt(pynvml.nvmlDeviceGetTotalEnergyConsumption)
        return None if mj is None else mj * 1e-3

    def power_instant_w(self) -> float | None:
        """NVML_FI_DEV_POWER_INSTANT (mW): the instantaneous board power, for timelines."""
        vals = self._opt(pynvml.nvmlDeviceGetFieldValues, [FI_DEV_POWER_INSTANT])
        if not vals or vals[0].nvmlReturn != getattr(pynvml, "NVML_SUCCESS", 0):
            return None
        return _field_value(vals[0]) * 1e-3

    def sm_clock_hz(self) -> float | None:
        mhz = self._opt(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM)
        return None if mhz is None else mhz * 1e6

    def mem_clock_hz(self) -> float | None:
        mhz = self._opt(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM)
        return None if mhz is None else mhz * 1e6

    def max_sm_clock_hz(self) -> float | None:
        """The SM clock's maximum (nvmlDeviceGetMaxClockInfo): what "full clock" means for this board."""
        mhz = self._opt(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM)
        return None if mhz is None else mhz * 1e6

    def clock_event_reasons(self) -> int | None:
        """Why the clocks are below their maximum now, as NVML's bitmask (harness.meters.clocks.REASONS):
        nvmlDeviceGetCurrentClocksEventReasons, or its older name ...ThrottleReasons."""
        fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
            or getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        r = self._opt(fn) if fn is not None else None
        return None if r is None else int(r)

    def temperature_c(self) -> float | None:
        t = self._opt(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU)
        return None if t is None else float(t)

    def utilization(self) -> tuple[float, float] | None:
        """(gpu, memory) busy fractions over NVML's last sample period (percent -> fraction)."""
        u = self._opt(pynvml.nvmlDeviceGetUtilizationRates)
        return None if u is None else (u.gpu / 100.0, u.memory / 100.0)

    def processes(self) -> list[ProcessMemory]:
        """Compute processes with their used memory. May be empty even while we hold memory: inside
        VMs and containers NVML often lists none (seen on the lab H100); callers must say so."""
        procs = self._opt(pynvml.nvmlDeviceGetComputeRunningProcesses) or []
        return [ProcessMemory(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                for p in procs]

    def power_limit_w(self) -> float | None:
        mw = self._opt(pynvml.nvmlDeviceGetEnforcedPowerLimit)
        return None if mw is None else mw * 1e-3

    def nvlink_active_links(self) -> int | None:
        """Active NVLink links (nvmlDeviceGetNvLinkState per link); None where NVML has no NVLink
        (PCIe-only boards answer NOT_SUPPORTED for link 0)."""
        n, seen = 0, False
        for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
            state = self._opt(pynvml.nvmlDeviceGetNvLinkState, link)
            if state is None:
                break
            seen, n = True, n + (1 if state else 0)
        return n if seen else None

    def p2p_over_nvlink(self, other: "NvmlDevice") -> bool | None:
        """Whether peer-to-peer to `other` goes over NVLink (nvmlDeviceGetP2PStatus, NVLINK caps)."""
        try:
            st = pynvml.nvmlDeviceGetP2PStatus(self._h, other._h, pynvml.NVML_P2P_CAPS_INDEX_NVLINK)
        except pynvml.NVMLError:
            return None
        return st == pynvml.NVML_P2P_STATUS_OK


class NullDevice:
    """A device on a machine without NVML: every reading is None, the process list empty."""

    available = False

    def __init__(self, index: int):
        self.index = index

    def _none(self, *args):
        return None

    name = uuid = memory_info = memory_used_bytes = compute_capability = _none
    energy_j = power_instant_w = sm_clock_hz = mem_clock_hz = temperature_c = _none
    max_sm_clock_hz = clock_event_reasons = _none
    utilization = power_limit_w = nvlink_active_links = p2p_over_nvlink = _none

    def processes(self) -> list[ProcessMemory]:
        return []


_lock = threading.Lock()
_refs = 0  # nvmlInit once per process; nvmlShutdown when the last session closes


class Nvml:
    available = True
    reason = ""

    def __init__(self):
        global _refs
        with _lock:
            if _refs == 0:
                pynvml.nvmlInit()
            _refs += 1
        self._closed = False
        self._devices: dict[int, NvmlDevice] = {}

    def device_count(self) -> int:
        return int(pynvml.nvmlDeviceGetCount())

    def device(self, index: int) -> NvmlDevice:
        if index not in self._devices:
            self._devices[index] = NvmlDevice(index, pynvml.nvmlDeviceGetHandleByIndex(index))
        return self._devices[index]

    def devices(self, indices=None) -> list[NvmlDevice]:
        return [self.device(i) for i in (range(self.device_count()) if indices is None else indices)]

    def device_for_cuda(self, cuda_index: int) -> NvmlDevice:
        """The NVML device behind torch's cuda:N. NVML indexes every GPU in PCI order and ignores
        CUDA_VISIBLE_DEVICES, so the two numberings can differ: match by UUID."""
        import torch

        want = str(torch.cuda.get_device_properties(cuda_index).uuid).lower().removeprefix("gpu-")
        for d in self.devices():
            u = (d.uuid() or "").lower().removeprefix("gpu-")
            if u == want:
                return d
        raise LookupError(f"cuda:{cuda_index} (uuid {want}) not found among NVML devices")

    def driver_version(self) -> str | None:
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
        except pynvml.NVMLError:
            return None
        return v.decode() if isinstance(v, bytes) else v

    def shutdown(self) -> None:
        global _refs
        with _lock:
            if self._closed:
                return
            self._closed = True
            _refs -= 1
            if _refs == 0:
                pynvml.nvmlShutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


class NullNvml:
    """NVML absent (no driver, no library, CPU machine): meters built on it report 'unavailable'."""

    available = False

    def __init__(self, reason: str):
        self.reason = reason

    def device_count(self) -> int:
        return 0

    def device(self, index: int) -> NullDevice:
        return NullDevice(index)

    def devices(self, indices=None) -> list[NullDevice]:
        return [NullDevice(i) for i in (indices or [])]

    def device_for_cuda(self, cuda_index: int) -> NullDevice:
        return NullDevice(cuda_index)

    def driver_version(self):
        return None

    def shutdown(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def open_nvml() -> Nvml | NullNvml:
    try:
        return Nvml()
    except (pynvml.NVMLError, OSError) as e:
        return NullNvml(f"NVML unavailable: {e}")
