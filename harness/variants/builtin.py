"""Built-in variants. Each apply() uses a real kernel path (torch or torchao), never a Python
dequantize-then-matmul stand-in, and reports the tensor type that now holds the weights."""
from __future__ import annotations

from torch import nn

from harness.variants.registry import ApplyContext, ApplyResult, Requirements, Variant, register
from harness.variants.inspect import linear_weight_types


def _apply_baseline(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    dtype = str(ctx.dtype).replace("torch.", "")
    return ApplyResult(kernel=f"aten.linear {dtype} (dense)")


def _apply_int8_wo(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=ctx.linear_filter)
    return ApplyResult(kernel=f"torchao Int8WeightOnlyConfig -> {linear_weight_types(model)}")


register(Variant("baseline", "unquantized: bf16 on GPU (fp16 where bf16 is absent), fp32 on CPU",
                 Requirements(), _apply_baseline))
register(Variant("int8-wo", "int8 weight-only, per-channel scales (torchao Int8WeightOnlyConfig)",
                 Requirements(needs_torchao=True), _apply_int8_wo))
