"""Device resolution and the compute dtype of the unquantized parts."""
from __future__ import annotations

import psutil
import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    return dev


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it, fp16 on older ones, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


ALLOCATOR_SETTING = "expandable_segments:True"


def configure_cuda_allocator() -> str:
    """Expandable segments for the caching allocator, before the first CUDA allocation, unless the user
    configured the allocator through the environment. Applying a variant replaces each full-precision
    weight by a smaller one; with fixed segments the freed blocks stay reserved around the new ones
    (the lab H100 held 13.5 GB for 8.6 GB of int8 weights), and NVML's per-process figure, the VRAM
    headline, counts that as the variant's footprint. Expandable segments return freed pages on
    empty_cache(). Returns the setting in force, for run.json."""
    import os

    for var in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        if os.environ.get(var):
            return f"{var}={os.environ[var]} (from the environment)"
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if setter is None:
        setter = torch.cuda.memory._set_allocator_settings
    setter(ALLOCATOR_SETTING)
    return f"{ALLOCATOR_SETTING} (set by harness)"
