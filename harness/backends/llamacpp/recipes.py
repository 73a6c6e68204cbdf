"""What each llama.cpp variant is, as data (no llama_cpp import): the GGUF file it runs and how it
is made. See the package docstring for how the names line up with the torch and ORT rows."""
from __future__ import annotations

from dataclasses import dataclass

# ggml's CPU dot products quantize the activation row to the weight type's `vec_dot_type`
# (ggml-cpu.c type_traits_cpu): this is what each weight type is multiplied with.
ACTIVATION_TYPE = {"F32": "F32", "F16": "F16", "BF16": "BF16", "Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0",
                   "Q4_1": "Q8_1", "Q5_1": "Q8_1", "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K",
                   "Q5_K": "Q8_K", "Q6_K": "Q8_K", "IQ4_NL": "Q8_0"}


@dataclass(frozen=True)
class Recipe:
    variant: str
    source: str            # "native": the model's own GGUF; "f32": dequantized copy; "quantize": from the f32 copy
    ftype: str | None      # llama_cpp.LLAMA_FTYPE_* name given to llama_model_quantize
    label: str


RECIPES: dict[str, Recipe] = {r.variant: r for r in [
    Recipe("baseline", "f32", None, "F32 GGUF dequantized from the source (the torch baseline's fp32 values)"),
    Recipe("gguf-native", "native", None, "the source GGUF run natively, in its own tensor types"),
    Recipe("q8_0", "quantize", "LLAMA_FTYPE_MOSTLY_Q8_0", "Q8_0 (llama_model_quantize from the F32 GGUF)"),
    Recipe("q4_0", "quantize", "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_0 (llama_model_quantize from the F32 GGUF)"),
    Recipe("q4_k_m", "quantize", "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q4_K_M (llama_model_quantize from the F32 GGUF)"),
]}

# torch/ORT names with no llama.cpp row of that name, and the llama.cpp variant nearest to each
NEAREST = {"int8-wo": "q8_0", "int8-dq": "q8_0", "int8-static": "q8_0", "int4-wo": "q4_0 or q4_k_m",
           "int4-awq": "q4_k_m"}


def unsupported_reason(name: str) -> str | None:
    """Why `name` has no llama.cpp recipe, or None."""
    if name in RECIPES:
        return None
    near = NEAREST.get(name)
    if near:
        return (f"{name}: not a llama.cpp variant: llama.cpp's CPU matmuls quantize activations to 8 bits for "
                f"every quantized weight type, so no row here is weight-only; the nearest is {near} "
                f"(llama.cpp variants: {', '.join(RECIPES)})")
    return f"{name}: no llama.cpp recipe (llama.cpp variants: {', '.join(RECIPES)})"


def kernel_label(census: dict[str, int], device: str = "CPU") -> str:
    """'llama.cpp ggml mul_mat (CPU): Q5_0 x120 (x Q8_0 act), Q4_K x90 (x Q8_K act), F32 x61' from a
    census. The counts are of every tensor in the file (norms and embedding included), not of matmuls."""
    parts = []
    for t, n in census.items():
        act = ACTIVATION_TYPE.get(t)
        parts.append(f"{t} x{n}" + (f" (x {act} act)" if act and not t.startswith(("F", "BF")) else ""))
    return f"llama.cpp ggml mul_mat ({device}): " + ", ".join(parts)
