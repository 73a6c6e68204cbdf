"""The hardware profile schema: what one `profiles/**/*.yaml` file may hold, validated into a `Profile`.

Units live in key names. Memory and bandwidth are SI in the file (bytes, bytes/s; YAML integers may
use `_` separators). Throughput is written in TFLOPS (TOPS for integer formats) because that is how
datasheets print it, and converted to FLOP/s once, at load. A null means "not published / not confirmed"
and stays null: nothing downstream may substitute a guess for it.

Validation (validate.py) turns every problem into a `ProfileError` naming the file, the key and the problem.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

CLASSES = ("edge", "enterprise", "cpu")
# Numeric formats a peak may be given for. tf32 is optional; the other seven are required keys of
# peak_dense_tflops (each may be null).
FORMATS = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4", "fp4")
REQUIRED_DENSE_FORMATS = ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "fp4")
BASELINE_FORMATS = ("bf16", "fp16", "fp32")
# Tri-state capabilities (true / false / null = not published). What the planner needs of a device.
FEATURES = {
    "fp8": "fp8 tensor math (e4m3/e5m2 matmul in hardware)",
    "int8": "int8 matmul in hardware (W8A8 kernels)",
    "int4_weight_kernels": "int4 weight-only kernels (dequantize in the matmul) in a listed software stack",
    "sparse_2to4": "2:4 semi-structured sparse tensor cores",
}
# ONNX Runtime execution provider names, as `onnxruntime.get_all_providers()` spells them.
ORT_EPS = (
    "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider", "DmlExecutionProvider", "QNNExecutionProvider", "VitisAIExecutionProvider",
    "MIGraphXExecutionProvider", "ROCMExecutionProvider", "WebGpuExecutionProvider", "NnapiExecutionProvider",
    "XnnpackExecutionProvider", "AzureExecutionProvider",
)
TERA = 1e12
ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
CC_RE = re.compile(r"^\d+\.\d+$")
# Smallest plausible values: a smaller one almost always means the number was written in GB or GB/s.
MIN_MEMORY_BYTES = 100_000_000
MIN_BANDWIDTH_BYTES_PER_S = 1_000_000_000


class ProfileError(ValueError):
    """A profile file that cannot be used: `path`, `key` and `problem` say where and why."""

    def __init__(self, path: str | Path, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}")


@dataclass(frozen=True)
class Npu:
    """A vendor's NPU / accelerator TOPS figure with the precision the vendor states (None = not stated)."""

    tops: float | None
    precision: str | None = None
    sparse: bool | None = None
    unverified_tops: float | None = None  # commonly quoted, not confirmed from a source: never used
    notes: str = ""


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    class_: str
    memory_bytes: int | None
    bandwidth_bytes_per_s: float | None
    peak_flops: Mapping[str, float | None]          # dense, FLOP/s (op/s for int formats), every FORMATS key
    power_w: float | None                           # TDP / board power: energy from it is an upper estimate
    compute_capability: str | None
    features: Mapping[str, bool | None]             # every FEATURES key
    sources: tuple[str, ...]
    vendor: str = ""
    memory_type: str = ""
    memory_options_bytes: tuple[int, ...] = ()
    bandwidth_variants_bytes_per_s: Mapping[str, float | None] = field(default_factory=lambda: MappingProxyType({}))
    peak_sparse_flops: Mapping[str, float | None] = field(default_factory=lambda: MappingProxyType({}))
    peak_other_flops: Mapping[str, float | None] = field(default_factory=lambda: MappingProxyType({}))
    sparse_2to4_speedup: float | None = None
    npu: Npu | None = None
    power_range_w: tuple[float, ...] = ()
    gfx_target: str | None = None
    baseline_format: str = "bf16"
    software: tuple[str, ...] = ()
    onnxruntime_eps: tuple[str, ...] = ()
    nvml_names: tuple[str, ...] = ()
    cpu_model_names: tuple[str, ...] = ()
    derived_estimates: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    notes: str = ""
    source_file: str = ""                           # "" for a profile built by detection

    def supports(self, feature: str) -> bool | None:
        if feature not in FEATURES:
            raise KeyError(f"unknown feature {feature!r}; known: {', '.join(FEATURES)}")
        return self.features.get(feature)

    def peak(self, fmt: str, sparse: bool = False) -> float | None:
        """Peak FLOP/s for a format; with `sparse`, the 2:4 rate where the hardware has sparse tensor
        cores (the published sparse figure, else dense x the published speed-up), else None."""
        if not sparse:
            return self.peak_flops.get(fmt)
        if not self.supports("sparse_2to4"):
            return None
        published = self.peak_sparse_flops.get(fmt)
        if published is not None:
            return published
        dense = self.peak_flops.get(fmt)
        return dense * self.sparse_2to4_speedup if dense is not None and self.sparse_2to4_speedup else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able view, SI units (FLOP/s, bytes, bytes/s, W)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Mapping):
                v = dict(v)
            elif isinstance(v, Npu):
                v = asdict(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @property
    def formats(self) -> tuple[str, ...]:
        """Formats with a published dense peak."""
        return tuple(f for f in FORMATS if self.peak_flops.get(f) is not None)
