"""Sparsity variants: 2:4 semi-structured on the GPU's sparse kernels, alone and with fp8 / int8
dynamic quantization, and 50% unstructured pruning on dense kernels. The entries (names, requirements,
layouts) are in catalog.py; the registry imports the apply and probe functions here on first use.

Kernels (probed on the installed stack before any model is loaded):
- sparse-2:4, sparse-2:4-wanda: torch.sparse semi-structured tensors. cuSPARSELt where torch was built
  with it (SparseSemiStructuredTensorCUSPARSELT), else torch's CUTLASS kernel, which only runs on
  compute capability 8.x (the lab saw "Supported only on GPUs with compute capability 8.x" on sm_90).
  The backend class is chosen explicitly instead of through the process-wide
  SparseSemiStructuredTensor._FORCE_CUTLASS flag (its default, False, also means cuSPARSELt).
- sparse-2:4+fp8-dq: torchao 0.18 Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(),
  packing_format=Float8PackingFormat.SPARSE_2D_DATA_2D_METADATA) (alias SPARSE_CUTLASS; the older
  Float8DynamicActivationFloat8SemiSparseWeightConfig was removed in pytorch/ao#3883): the CUTLASS
  sm_90a op torchao::rowwise_scaled_linear_sparse_cutlass_f8f8 from torchao's compiled extension.
- sparse-2:4+int8-dq: cuSPARSELt int8 through torch._cslt_sparse_mm (sparse_int8.py), since
  torchao 0.18 has no int8 2:4 path.
The packers compress an already-2:4 tensor and do not choose the mask: every variant prunes first.
"""
from __future__ import annotations

import functools
import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.variants.inspect import linear_weight_types
from harness.variants.registry import ApplyContext, ApplyResult
from harness.variants.wanda import (LayerPlan, apply_24_mask_dense, magnitude_24_mask, mask_24_,  # noqa: F401
                                    mask_unstructured_, select_linears, unstructured_mask, wanda_24_mask)

UNSTRUCTURED_SPARSITY = 0.5
# Shapes the fp8 2:4 CUTLASS op takes, from its errors on the H100 (torchao 0.18, torch 2.11):
# in_features divisible by 32 ("Xq argument must have number of columns divisible by 32"); out_features
# 80, 96, 112, 160 failed ("Expected Wq meta argument to have 80 rows, got 128 rows"), multiples of 64
# up to 14336 ran. Other layers stay dense and unpruned.
FP8_24_MULTIPLE = (64, 32)


def _on_cuda(probe: Callable[[tuple[int, int] | None], str | None]):
    """These probes need the GPU's compute capability; the static requirements already refuse CPUs."""
    return lambda device_type, cc: probe(cc) if device_type == "cuda" else None


# -- kernels ---------------------------------------------------------------------------------------
def semi_structured_backend(cc: tuple[int, int] | None) -> tuple[type | None, str]:
    """torch's semi-structured subclass for this GPU and its kernel name, or (None, why none)."""
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    if torch.backends.cusparselt.is_available():
        return SparseSemiStructuredTensorCUSPARSELT, f"cuSPARSELt {torch.backends.cusparselt.version()}"
    if cc is not None and cc[0] == 8:
        return SparseSemiStructuredTensorCUTLASS, "torch CUTLASS"
    return None, (f"torch {torch.__version__} has no cuSPARSELt, and its CUTLASS 2:4 kernel runs on "
                  f"compute capability 8.x only (this GPU: {cc})")


def _fits_semi_structured(cls: type) -> Callable[[nn.Linear], str | None]:
    def qualifies(mod: nn.Linear) -> str | None:
        c = cls._DTYPE_SHAPE_CONSTRAINTS.get(mod.weight.dtype)
        if c is None:
            return f"{mod.weight.dtype} weights have no {cls.BACKEND} kernel"
        return _multiples(mod, (c.sparse_min_rows, c.sparse_min_cols))
    return qualifies


def _multiples(mod: nn.Linear, rc: tuple[int, int]) -> str | None:
    rows, cols = mod.weight.shape
    if rows % rc[0] or cols % rc[1] or mod.in_features % 4:
        return f"weight (out, in) not multiples of {rc}"
    return None


def _to_semi_structured(mod: nn.Linear, cls: type) -> None:
    mod.weight = nn.Parameter(cls.from_dense(mod.weight.detach().contiguous()), requires_grad=False)


def _fp8_24_config():
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow
    from torchao.quantization.quantize_.workflows import Float8PackingFormat

    # set_inductor_config=False: nothing here compiles, and it would change inductor flags process-wide
    return Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), packing_format=Float8PackingFormat.SPARSE_2D_DATA_2D_METADATA,
        set_inductor_config=False)


def _to_fp8_24(model: nn.Module, layers: dict[str, nn.Linear]) -> None:
    from torchao.quantization import quantize_

    quantize_(model, _fp8_24_config(), filter_fn=lambda _m, fqn: fqn in layers)
    for mod in layers.values():
        mod.forward = types.MethodType(_linear_2d, mod)


def _linear_2d(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Linear on a (tokens, in) view of x. torchao 0.18's fp8 2:4 linear hands the CUTLASS op a 3-D
    activation scale for a 3-D input, which the op rejects ("Expected Xq scale argument to be 2D
    tensor, got 3 dims", seen on the H100); a 2-D view of the same memory avoids it."""
    y = F.linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _to_int8_24(mod: nn.Linear) -> None:
    from harness.variants.sparse_int8 import Int8Sparse2x4CuSparseLtTensor

    mod.weight = nn.Parameter(Int8Sparse2x4CuSparseLtTensor.from_hp(mod.weight.detach().contiguous()),
                              requires_grad=False)


# -- probes (cached per compute capability: one tiny layer per process) ---------------------------
def _smoke(convert: Callable[[nn.Linear], None], features: int = 128) -> str | None:
    """Convert one 2:4-pruned linear on the GPU, run it, and compare with the masked dense output."""
    try:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        lin = nn.Linear(features, features, device="cuda", dtype=dtype).requires_grad_(False)
        lin.weight.mul_(magnitude_24_mask(lin.weight))
        # shaped as the model calls it, (batch, tokens, features): prefill with and without padding
        # to the kernels' token steps, and decode
        xs = [torch.randn(1, t, features, device="cuda", dtype=dtype) for t in (16, 3, 1)]
        refs = [F.linear(x, lin.weight, lin.bias).float() for x in xs]
        convert(lin)
        err = max(((lin(x).float() - r).norm() / r.norm()).item() for x, r in zip(xs, refs))
    except Exception as e:  # noqa: BLE001 -- any failure is the reason the variant is unsupported
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"probe of one {features}x{features} layer failed: {type(e).__name__}: {first}"
    if not err < 0.1:  # fp8 / int8 quantization stays well under 10% on random data
        return f"probe of one {features}x{features} layer: output off by {err:.3g} (relative) from masked dense"
    return None


@functools.lru_cache(maxsize=None)
def _probe_24(cc: tuple[int, int] | None) -> str | None:
    cls, why = semi_structured_backend(cc)
    return why if cls is None else _smoke(lambda lin: _to_semi_structured(lin, cls))


@functools.lru_cache(maxsize=None)
def _probe_fp8_24(cc: tuple[int, int] | None) -> str | None:
    import torchao

    try:
        _fp8_24_config()
    except (ImportError, AttributeError, TypeError) as e:
        return f"torchao {torchao.__version__} offers no fp8 2:4 config: {type(e).__name__}: {e}"
    op = "torchao::rowwise_scaled_linear_sparse_cutlass_f8f8"
    try:
        has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    except RuntimeError:
        has_kernel = False
    if not has_kernel:
        return (f"{op} has no CUDA kernel: torchao {torchao.__version__}'s compiled extension "
                f"(_C_cutlass_90a) did not load under torch {torch.__version__}")
    def convert(lin: nn.Linear) -> None:
        _to_fp8_24(lin, {"": lin})  # "" is the fqn quantize_ gives the root module
        _check_types(LayerPlan({"": lin}), "Float8Sparse2x4_2DData2DMetadataTensor")
    return _smoke(convert)


@functools.lru_cache(maxsize=None)
def _probe_int8_24(cc: tuple[int, int] | None) -> str | None:
    if not torch.backends.cusparselt.is_available():
        return (f"torch {torch.__version__} was built without cuSPARSELt, the only int8 2:4 kernel on "
                "this stack (torchao 0.18 removed its int8 SemiSparseLayout)")
    return _smoke(_to_int8_24)


# -- apply -----------------------------------------------------------------------------------------
def _device_cc(model: nn.Module) -> tuple[int, int] | None:
    dev = next(model.parameters()).device
    return torch.cuda.get_device_capability(dev) if dev.type == "cuda" else None


def _apply_semi_structured(method: str):
    def apply(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
        cls, name = semi_structured_backend(_device_cc(model))
        if cls is None:
            raise RuntimeError(name)  # unsupported_reason() reports this before loading
        plan = select_linears(model, ctx, _fits_semi_structured(cls))
        calib_s = mask_24_(model, plan.selected, method, ctx.calibration_ids)
        for mod in plan.selected.values():
            _to_semi_structured(mod, cls)
        return ApplyResult(kernel=f"{name} 2:4 via torch.sparse ({cls.__name__}), {method} mask, on "
                                  f"{plan.summary()}", layers_changed=len(plan.selected), calibration_s=calib_s)
    return apply


def apply_unstructured(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    plan = select_linears(model, ctx)
    mask_unstructured_(plan.selected, UNSTRUCTURED_SPARSITY)
    return ApplyResult(kernel=f"dense aten.linear, {UNSTRUCTURED_SPARSITY:.0%} zeros (magnitude, threshold "
                              f"per output row) on {plan.summary()}", layers_changed=len(plan.selected),
                       notes="no sparse kernel: the zeros cost the same time as the weights they replace")


def apply_fp8_24(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    plan = select_linears(model, ctx, lambda m: _multiples(m, FP8_24_MULTIPLE))
    mask_24_(model, plan.selected, "magnitude")
    _to_fp8_24(model, plan.selected)
    _check_types(plan, "Float8Sparse2x4_2DData2DMetadataTensor")
    return ApplyResult(kernel="torchao Float8DynamicActivationFloat8WeightConfig(PerRow, SPARSE_2D_DATA_2D_METADATA)"
                              f" -> rowwise_scaled_linear_sparse_cutlass_f8f8 (CUTLASS sm_90a), magnitude mask, on "
                              f"{plan.summary()} [{linear_weight_types(model)}]", layers_changed=len(plan.selected))


def apply_int8_24(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    from harness.variants.sparse_int8 import SPARSE_MIN

    plan = select_linears(model, ctx, lambda m: _multiples(m, (SPARSE_MIN, SPARSE_MIN)))
    mask_24_(model, plan.selected, "magnitude")
    for mod in plan.selected.values():
        _to_int8_24(mod)
    return ApplyResult(kernel=f"cuSPARSELt {torch.backends.cusparselt.version()} int8 2:4 via torch._cslt_sparse_mm "
                              "(int8 per-row weights, int8 per-token dynamic activations), magnitude mask, on "
                              f"{plan.summary()} [{linear_weight_types(model)}]", layers_changed=len(plan.selected))


def _check_types(plan: LayerPlan, type_name: str) -> None:
    """torchao may leave a layer dense without raising; a pruned-but-dense layer would be a silent lie."""
    off = [fqn for fqn, m in plan.selected.items() if type(m.weight).__name__ != type_name]
    if off:
        raise RuntimeError(f"{len(off)} pruned layers did not become {type_name} (first: {off[0]}, "
                           f"{type(plan.selected[off[0]].weight).__name__})")


apply_24_magnitude = _apply_semi_structured("magnitude")
apply_24_wanda = _apply_semi_structured("wanda")
# probe(device_type, compute_capability), as the registry calls them (catalog.py names these)
probe_24 = _on_cuda(_probe_24)
probe_fp8_24 = _on_cuda(_probe_fp8_24)
probe_int8_24 = _on_cuda(_probe_int8_24)
