"""Execution providers: which one a cell runs on, and whether this machine has it.

The EP comes from the override if one is given, else from the profile's `onnxruntime_eps` (the first
listed is the vendor's preferred one: QNN for Snapdragon, OpenVINO for Intel, CoreML for Apple, CUDA for
NVIDIA), else the CPU EP. An EP that this onnxruntime build lacks is never swapped for the CPU EP: the
record would then claim an NPU figure measured on a CPU.
"""
from __future__ import annotations

from harness.backends.ort.recipes import CPU_EP
from harness.profiles.schema import ORT_EPS

# onnxruntime-genai's provider names (Config.append_provider), as its examples spell them; the CPU EP
# is what a config with no providers runs on.
GENAI_PROVIDERS = {
    CPU_EP: None, "CUDAExecutionProvider": "cuda", "DmlExecutionProvider": "dml", "QNNExecutionProvider": "qnn",
    "OpenVINOExecutionProvider": "OpenVINO", "WebGpuExecutionProvider": "WebGPU",
    "NvTensorRTRTXExecutionProvider": "NvTensorRtRtx",
}
# The model builder's -e value for each EP it can target.
BUILDER_TARGETS = {
    CPU_EP: "cpu", "CUDAExecutionProvider": "cuda", "DmlExecutionProvider": "dml",
    "WebGpuExecutionProvider": "webgpu", "NvTensorRTRTXExecutionProvider": "NvTensorRtRtx",
}
KNOWN_EPS = tuple(dict.fromkeys(ORT_EPS + tuple(GENAI_PROVIDERS)))


class UnknownEpError(ValueError):
    """An execution provider name that onnxruntime does not know (a typo, most likely)."""


def normalize_ep(name: str) -> str:
    """The full EP name for `name`; short forms are accepted case-insensitively (cpu, cuda, qnn, dml)."""
    if name in KNOWN_EPS:
        return name
    short = name.strip().lower().removesuffix("executionprovider")
    for ep in KNOWN_EPS:
        if ep.lower().removesuffix("executionprovider") == short:
            return ep
    raise UnknownEpError(f"unknown execution provider {name!r}; known: {', '.join(KNOWN_EPS)}")


def resolve_ep(profile=None, override: str | None = None) -> str:
    if override:
        return normalize_ep(override)
    listed = tuple(getattr(profile, "onnxruntime_eps", ()) or ())
    return normalize_ep(listed[0]) if listed else CPU_EP


def available_eps() -> tuple[str, ...]:
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def ep_reason(ep: str) -> str | None:
    """Why `ep` cannot run on this machine, or None. The CPU EP always runs."""
    if ep == CPU_EP:
        return None
    if ep not in available_eps():
        return f"{ep} not available on this machine"
    if ep not in GENAI_PROVIDERS:
        return f"{ep}: onnxruntime-genai has no provider for it (it runs {', '.join(GENAI_PROVIDERS)})"
    return None
