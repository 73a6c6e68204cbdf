"""What a kernel string names: the explicit kernel a record's `kernel` shows (tinygemm, cutlass, gemlite,
torchao), the kernel family a power load stands for, and a kernel's identity without its per-model counts.
Kernel strings come from records (the variant's own description, harness/variants) and from
bench/kernels_gpu.py's kernel names."""
from __future__ import annotations

import re

DEQUANT_PREFIX = "dequantized prefill:"   # bench/kernels_gpu.py's names of GemLite's dequantized prefill path

# explicit kernel name (harness/variants/gpu_kernels.py) -> what a record's kernel string says when that
# kernel ran it (torchao's packing format names, GemLite's module class)
KERNEL_MARKS = {
    "tinygemm": ("tile_packed_to_4d", "tinygemm"),
    "cutlass": ("preshuffled", "CUTLASS"),
    "gemlite": ("GemLite",),
    "torchao": ("Float8WeightOnlyConfig",),
}


def kernel_named(text: str | None) -> str | None:
    """The explicit kernel name ("tinygemm", "gemlite", ...) a record's kernel string shows, or None."""
    if not text:
        return None
    head = text.split(" -> ")[0]
    if "[" in head.split(":")[0]:                       # "int4-wo[gemlite]: GemLite ..." names it outright
        return head.split("[", 1)[1].split("]", 1)[0]
    return next((k for k, marks in KERNEL_MARKS.items() if any(m in text for m in marks)), None)


def curve_is_kernel(cv, kernel: str) -> bool:
    """Whether curve `cv` (a harness.plan.curves.Curve) was measured with explicit kernel `kernel` (its
    variant names it, or its kernel string shows that kernel's marks)."""
    return cv.variant.endswith(f"[{kernel}]") or any(m in cv.kernel for m in KERNEL_MARKS.get(kernel, ()))


def kernel_id(kernel: str) -> str:
    """The kernel without the per-model module count (' x129') and the aten op list after ';'."""
    return re.sub(r" x\d+\b", "", kernel.split(";")[0]).strip() or "unknown"


def family(kernel: str | None) -> str:
    """The kernel family a power load or a projection's kernel belongs to: bf16 (cuBLAS, GemLite's
    dequantized prefill path), tinygemm, cutlass, gemlite, torchao, with "-fp8" where fp8 is in play."""
    if not kernel:
        return "unknown"
    if kernel.startswith(DEQUANT_PREFIX):
        return "bf16"
    low = kernel.lower()
    named = kernel_named(kernel)
    if named is None:
        return "bf16" if ("bf16" in low or "bfloat16" in low) else "unknown"
    return named + ("-fp8" if ("fp8" in low or "float8" in low) else "")
