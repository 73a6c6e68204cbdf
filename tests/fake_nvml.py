"""A scripted stand-in for the pynvml module, patched in where it is imported
(`harness.meters.nvml.pynvml`), so NVML meters are tested without a GPU.

Each FakeGpu has a power schedule (W, constant or a function of seconds since the fake started).
Its energy counter integrates that schedule but publishes only every `period_s`, in whole mJ, like
the real counter (about 100 ms on the lab H100). Instant power is the schedule x `instant_scale`,
so a test can script a disagreement between counter and instant power. nvmlDeviceGetPowerUsage
raises and is counted: the meters must never call it.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from types import SimpleNamespace

import pynvml as _real


class FakeClock:
    """Manual clock: `sleep` advances it, so polling loops run instantly."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt

    advance = sleep


class FakeGpu:
    def __init__(self, power_w=300.0, period_s: float = 0.1, instant_scale: float = 1.0,
                 name: str = "NVIDIA H100 80GB HBM3", memory_total: int = 80 * 2**30,
                 memory_used: int = 2 * 2**30, processes=(), uuid: str | None = None,
                 energy_supported: bool = True, nvlinks: int | None = None, sm_clock_mhz=1980,
                 clock_reasons=0):
        self.power = power_w if callable(power_w) else (lambda t, p=float(power_w): p)
        self.period_s = period_s
        self.instant_scale = instant_scale
        self.name = name
        self.memory_total = memory_total
        self.memory_used = memory_used
        self.processes = list(processes)  # [(pid, used_bytes)]
        self.uuid = uuid
        self.energy_supported = energy_supported
        self.nvlinks = nvlinks   # active NVLink links; None: a PCIe-only board (NOT_SUPPORTED)
        # SM clock (MHz) and NVML clock event reasons: constants or functions of seconds since the start
        self.sm_clock = sm_clock_mhz if callable(sm_clock_mhz) else (lambda t, c=sm_clock_mhz: c)
        self.reasons = clock_reasons if callable(clock_reasons) else (lambda t, r=clock_reasons: r)
        self._cum_j = [0.0]  # energy at the end of each completed period

    def energy_mj(self, t: float) -> int:
        k = max(0, math.floor(t / self.period_s + 1e-9))
        while len(self._cum_j) <= k:
            i = len(self._cum_j) - 1
            self._cum_j.append(self._cum_j[-1] + self.power((i + 0.5) * self.period_s) * self.period_s)
        return int(round(self._cum_j[k] * 1e3))

    def instant_mw(self, t: float) -> int:
        return int(round(self.power(t) * self.instant_scale * 1e3))


class FakePynvml:
    NVMLError = _real.NVMLError
    NVML_SUCCESS = 0
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_CLOCK_SM = _real.NVML_CLOCK_SM
    NVML_CLOCK_MEM = _real.NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = _real.NVML_TEMPERATURE_GPU
    NVML_VALUE_TYPE_DOUBLE = 0
    NVML_VALUE_TYPE_UNSIGNED_INT = 1
    NVML_VALUE_TYPE_UNSIGNED_LONG = 2
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
    NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
    NVML_VALUE_TYPE_SIGNED_INT = 5
    NVML_NVLINK_MAX_LINKS = 18
    NVML_P2P_CAPS_INDEX_NVLINK = _real.NVML_P2P_CAPS_INDEX_NVLINK
    NVML_P2P_STATUS_OK = _real.NVML_P2P_STATUS_OK

    def __init__(self, gpus, clock=time.perf_counter, fail_init: bool = False):
        self.gpus = list(gpus)
        self.clock = clock
        self.t0 = clock()
        self.fail_init = fail_init
        self.calls: Counter = Counter()
        self.initialized = 0

    def _t(self) -> float:
        return self.clock() - self.t0

    def _err(self, code):
        return _real.NVMLError(code)

    def nvmlInit(self):
        self.calls["nvmlInit"] += 1
        if self.fail_init:
            raise self._err(_real.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialized += 1

    def nvmlShutdown(self):
        self.calls["nvmlShutdown"] += 1
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self):
        return "580.159.04"

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < len(self.gpus):
            raise self._err(_real.NVML_ERROR_INVALID_ARGUMENT)
        return i

    def nvmlDeviceGetName(self, h):
        return self.gpus[h].name

    def nvmlDeviceGetUUID(self, h):
        return self.gpus[h].uuid or f"GPU-0000000{h}-0000-0000-0000-000000000000"

    def nvmlDeviceGetMemoryInfo(self, h):
        g = self.gpus[h]
        return SimpleNamespace(total=g.memory_total, used=g.memory_used, free=g.memory_total - g.memory_used)

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (9, 0)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.calls["energy"] += 1
        g = self.gpus[h]
        if not g.energy_supported:
            raise self._err(_real.NVML_ERROR_NOT_SUPPORTED)
        return g.energy_mj(self._t())

    def nvmlDeviceGetFieldValues(self, h, ids):
        self.calls["field_values"] += 1
        out = []
        for fid in ids:
            if fid != 186:
                out.append(SimpleNamespace(fieldId=fid, nvmlReturn=_real.NVML_ERROR_NOT_SUPPORTED,
                                           valueType=1, value=SimpleNamespace(uiVal=0)))
            else:
                out.append(SimpleNamespace(fieldId=fid, nvmlReturn=0, valueType=1,
                                           value=SimpleNamespace(uiVal=self.gpus[h].instant_mw(self._t()))))
        return out

    def nvmlDeviceGetPowerUsage(self, h):
        self.calls["nvmlDeviceGetPowerUsage"] += 1
        raise AssertionError("nvmlDeviceGetPowerUsage is a 1-s trailing average: never read it")

    def nvmlDeviceGetClockInfo(self, h, kind):
        g = self.gpus[h]
        return g.sm_clock(self._t()) if kind == self.NVML_CLOCK_SM else 2619  # MHz

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980 if kind == self.NVML_CLOCK_SM else 2619  # MHz

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.gpus[h].reasons(self._t())

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 45

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=97, memory=80)  # percent

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in self.gpus[h].processes]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000  # mW

    def nvmlDeviceGetNvLinkState(self, h, link):
        n = self.gpus[h].nvlinks
        if n is None:
            raise self._err(_real.NVML_ERROR_NOT_SUPPORTED)
        if link >= self.NVML_NVLINK_MAX_LINKS:
            raise self._err(_real.NVML_ERROR_INVALID_ARGUMENT)
        return 1 if link < n else 0

    def nvmlDeviceGetP2PStatus(self, h1, h2, caps):
        both = self.gpus[h1].nvlinks and self.gpus[h2].nvlinks
        return self.NVML_P2P_STATUS_OK if both else _real.NVML_P2P_STATUS_NOT_SUPPORTED
