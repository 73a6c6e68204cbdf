"""Built-in variants that need no quantization library. Quantization variants live in
harness.variants.quant (int8, int4, AWQ, fp8); each apply() uses a real kernel path, never a Python
dequantize-then-matmul stand-in, and reports the tensor type that now holds the weights."""
from __future__ import annotations

from torch import nn

from harness.variants.registry import ApplyContext, ApplyResult, Requirements, Variant, register


def _apply_baseline(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    dtype = str(ctx.dtype).replace("torch.", "")
    return ApplyResult(kernel=f"aten.linear {dtype} (dense)")


register(Variant("baseline", "unquantized: bf16 on GPU (fp16 where bf16 is absent), fp32 on CPU",
                 Requirements(), _apply_baseline))
