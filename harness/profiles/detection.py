"""Which profile describes this machine, and why.

GPU: NVML's device name, total memory and compute capability are matched against the profiles'
`nvml_names`, `memory_bytes` and `compute_capability`. CPU only: a profile whose `cpu_model_names`
lists this CPU, else a `cpu-<model>` profile built from /proc/cpuinfo and psutil, with bandwidth,
peaks and power unknown (None) unless the caller supplies them.

Tests replace `pynvml`, `psutil` and `CPUINFO_PATH` in this module.
"""
from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import psutil

from harness.profiles.loader import load_profiles
from harness.profiles.schema import FEATURES, FORMATS, Profile

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but a broken install must not stop CPU detection
    pynvml = None

CPUINFO_PATH = Path("/proc/cpuinfo")
# NVML reports usable bytes (about GiB x the marketed number, minus reserved memory) while datasheets
# say "80 GB": an H100 80GB reports 85.5e9 bytes (1.07x), a B200 "180 GB" ~192e9.
MEMORY_MATCH_RATIO = (0.90, 1.15)
# CPU features we can use (x86 /proc/cpuinfo flags, Arm "Features"), reported in the reason.
CPU_FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimddp", "sve", "bf16", "i8mm")
# What torch and torchao run on any CPU (see anchors.md: int8 weight-only and dynamic quantization apply
# on CPU; torch has CPU int4 kernels); nothing on a CPU is fp8 or 2:4-sparse hardware.
CPU_FEATURES = {"fp8": False, "int8": True, "int4_weight_kernels": True, "sparse_2to4": False}


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_bytes: int
    compute_capability: str | None
    count: int
    driver: str = ""


@dataclass(frozen=True)
class Detection:
    profile: Profile
    reason: str
    gpu: GpuInfo | None = None


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_nvml() -> tuple[GpuInfo | None, str]:
    """First NVIDIA GPU as NVML sees it, or None with why not."""
    if pynvml is None:
        return None, "pynvml not importable"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded: a CPU-only machine
        return None, f"NVML unavailable ({e})"
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count < 1:
            return None, "NVML reports no GPU"
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = _text(pynvml.nvmlDeviceGetName(h))
        mem = int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
        try:
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            cc = f"{major}.{minor}"
        except Exception:
            cc = None
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = ""
        return GpuInfo(name, mem, cc, count, driver), ""
    except Exception as e:
        return None, f"NVML query failed ({e})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _memory_ok(gpu: GpuInfo, p: Profile) -> bool:
    if p.memory_bytes is None:
        return False
    r = gpu.memory_bytes / p.memory_bytes
    return MEMORY_MATCH_RATIO[0] <= r <= MEMORY_MATCH_RATIO[1]


def _tokens(s: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", s.lower())) - {"nvidia", "geforce", "gb", "amd"}


def match_gpu(gpu: GpuInfo, profiles: Mapping[str, Profile]) -> tuple[Profile | None, str]:
    seen = (f"NVML reports {gpu.name!r} ({gpu.memory_bytes / 1e9:.1f} GB, compute capability "
            f"{gpu.compute_capability or 'unknown'}) on {gpu.count} GPU(s); using GPU 0")
    by_name = [p for p in profiles.values() if gpu.name.strip().lower() in (n.lower() for n in p.nvml_names)]
    if by_name:
        p = by_name[0]
        checks = [
            f"memory {'agrees' if _memory_ok(gpu, p) else 'DIFFERS (MIG slice or a different SKU?)'} "
            f"with the profile's {p.memory_bytes / 1e9:.0f} GB" if p.memory_bytes else "profile memory unknown",
            f"compute capability {'agrees' if gpu.compute_capability == p.compute_capability else 'DIFFERS'} "
            f"({p.compute_capability})",
        ]
        return p, f"{seen}; matched profile {p.id} by NVML name; " + "; ".join(checks)
    cands = [p for p in profiles.values()
             if p.compute_capability and p.compute_capability == gpu.compute_capability and _memory_ok(gpu, p)]
    if cands:
        toks = _tokens(gpu.name)
        scored = sorted(cands, key=lambda p: (-len(toks & _tokens(p.name + " " + p.id)), p.id))
        best = scored[0]
        overlap = len(toks & _tokens(best.name + " " + best.id))
        tie = len(scored) > 1 and len(toks & _tokens(scored[1].name + " " + scored[1].id)) == overlap
        if overlap > 0 and not tie:
            return best, (f"{seen}; no profile lists this NVML name; matched {best.id} by compute capability, "
                          f"memory within {MEMORY_MATCH_RATIO[0]}-{MEMORY_MATCH_RATIO[1]}x and name tokens "
                          f"(other candidates: {', '.join(p.id for p in scored[1:]) or 'none'})")
        return None, f"{seen}; ambiguous: {', '.join(p.id for p in scored)} have this compute capability and memory"
    return None, f"{seen}; no profile has this NVML name, or this compute capability with this memory"


def _slug(s: str) -> str:
    s = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$|\bprocessor\b|\d+-core", " ", s.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "unknown"


def read_cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and feature flags from /proc/cpuinfo ('' and {} where it is missing)."""
    try:
        text = CPUINFO_PATH.read_text(errors="replace")
    except OSError:
        return platform.processor() or "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if not model and key in ("model name", "hardware", "cpu model", "processor") and not val.strip().isdigit():
            model = val.strip()
        if not flags and key in ("flags", "features"):
            flags = set(val.split())
    return model or platform.processor() or "", flags


def cpu_profile(power_w: float | None = None, bandwidth_bytes_per_s: float | None = None,
                peak_flops: Mapping[str, float | None] | None = None) -> Profile:
    """A profile of this CPU: cores and memory measured, the rest unknown unless supplied."""
    model, flags = read_cpuinfo()
    physical = psutil.cpu_count(logical=False)
    logical = psutil.cpu_count(logical=True)
    mem = int(psutil.virtual_memory().total)
    peaks = {f: None for f in FORMATS}
    peaks.update(peak_flops or {})
    noted = [f for f in CPU_FLAGS_OF_NOTE if f in flags]
    unknown = [n for n, v in (("bandwidth", bandwidth_bytes_per_s), ("power", power_w)) if v is None]
    if not any(peaks.values()):
        unknown.append("peak throughput")
    return Profile(
        id=f"cpu-{_slug(model)}", name=model or "unknown CPU", class_="cpu", memory_bytes=mem,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s, peak_flops=MappingProxyType(peaks), power_w=power_w,
        compute_capability=None, features=MappingProxyType({f: CPU_FEATURES[f] for f in FEATURES}),
        sources=(str(CPUINFO_PATH), "psutil") + (("user-supplied",) if power_w or bandwidth_bytes_per_s or peak_flops else ()),
        vendor="", memory_type="system RAM", baseline_format="fp32",
        onnxruntime_eps=("CPUExecutionProvider",), cpu_model_names=(model,) if model else (),
        notes=(f"{physical} physical / {logical} logical cores; flags of note: {', '.join(noted) or 'none'}; "
               f"unknown: {', '.join(unknown) or 'nothing'}"),
    )


def detect(profiles_dir: str | Path | None = None, cpu_power_w: float | None = None,
           cpu_bandwidth_bytes_per_s: float | None = None, *,
           cpu_peak_flops: Mapping[str, float | None] | None = None,
           profiles: Mapping[str, Profile] | None = None) -> Detection:
    """The profile of this machine and why. Never raises for missing hardware: a CPU-only machine
    gets a `cpu-<model>` profile; an NVIDIA GPU no profile describes gets an `nvml-<name>` profile
    with its memory and compute capability and everything else unknown."""
    profiles = profiles if profiles is not None else load_profiles(profiles_dir)
    gpu, why_not = read_nvml()
    if gpu is not None:
        p, reason = match_gpu(gpu, profiles)
        if p is not None:
            return Detection(p, reason, gpu)
        gen = Profile(
            id=f"nvml-{_slug(gpu.name)}", name=gpu.name, class_="enterprise", memory_bytes=gpu.memory_bytes,
            bandwidth_bytes_per_s=None, peak_flops=MappingProxyType({f: None for f in FORMATS}), power_w=None,
            compute_capability=gpu.compute_capability,
            features=MappingProxyType({f: None for f in FEATURES}), sources=("NVML",),
            notes="built by detection: bandwidth, peaks, power and features unknown (class assumed enterprise); "
                  "add a profile YAML with nvml_names to describe this GPU")
        return Detection(gen, reason + f"; using a generated profile {gen.id} with bandwidth and peaks unknown", gpu)
    model, _ = read_cpuinfo()
    for p in profiles.values():
        if model and model.strip().lower() in (n.strip().lower() for n in p.cpu_model_names):
            return Detection(p, f"no GPU ({why_not}); CPU {model!r} is listed by profile {p.id} ({p.source_file})")
    p = cpu_profile(cpu_power_w, cpu_bandwidth_bytes_per_s, cpu_peak_flops)
    return Detection(p, (f"no GPU ({why_not}); no profile lists CPU {model or 'unknown'!r}; built {p.id} from "
                         f"{CPUINFO_PATH} and psutil ({psutil.cpu_count(logical=True)} logical cores, "
                         f"{p.memory_bytes / 1e9:.1f} GB RAM); {p.notes.split('; ')[-1]}"))
