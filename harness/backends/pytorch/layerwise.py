"""Big models on one card: a synthetic model built and quantized one decoder layer at a time on the
device, so that peak memory is the variant's weights plus about one full-precision layer and the
temporaries of quantizing its largest linear, not the bf16 instance the whole-model path quantizes
(Llama-3.1-70B: 141 GB in bf16, about 40 GB at int4, a measured build peak of 44.5 GB).

The model's structure is built on the meta device (no memory); embeddings, final norm and rotary tables
are materialized on the device; then each decoder layer is materialized with random weights (normal,
std = the config's initializer_range, as transformers initializes a new model; norms at 1, biases at
0), its projections fused where the engine fuses them, and the variant applied to it alone, with the
policy seeing the layer's full module names (`model.layers.7.self_attn.q_proj`), before the next layer
exists. lm_head goes first (the largest linear: its quantization's temporaries should not sit on top of
every quantized layer). The weights are random as in the whole-model path, but not the same random
values (a different order of draws): speed, memory and energy only, as for every synthetic model.

Only variants whose apply needs nothing but the linears take this path (no calibration pass through
the whole model): LAYERWISE below. The pipeline uses it for synthetic models on CUDA when the bf16
instance does not fit but the build's estimated peak does (need_bytes below: the variant's planned bytes
plus one bf16 layer and its quantization's temporaries, or the lm_head stage if larger; backend.py).
"""
from __future__ import annotations

import dataclasses
import gc
import time

import torch
from torch import nn

from harness.variants.registry import ApplyContext, ApplyResult, NothingApplied

LAYERWISE = ("int8-wo", "int8-dq", "int4-wo", "fp8-wo", "fp8-dq", "w4a8")


def eligible(variant) -> bool:
    """`variant`: a VariantSpec. Explicit kernels of an eligible format (`int4-wo[cutlass]`) are too."""
    e = variant.entry
    return e.changes_weights and (e.name in LAYERWISE or e.kernel_of in LAYERWISE)


@dataclasses.dataclass(frozen=True)
class PrefixedContext(ApplyContext):
    """The cell's ApplyContext for one submodule: the policy sees `prefix + fqn`, the name the module has
    in the whole model."""
    prefix: str = ""

    def keeps(self, fqn: str) -> bool:
        return super().keeps(self.prefix + fqn)


def _materialize(module: nn.Module, device: torch.device, std: float) -> None:
    module.to_empty(device=device, recurse=True)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            else:
                w = getattr(m, "weight", None)
                if isinstance(w, nn.Parameter) and not list(m.children()):
                    w.fill_(1.0)       # RMSNorm / LayerNorm scales
                b = getattr(m, "bias", None)
                if isinstance(b, nn.Parameter) and not list(m.children()):
                    b.zero_()


def _resident_bytes(model: nn.Module) -> int:
    from harness.variants.inspect import tensor_bytes

    return tensor_bytes(model)     # meta tensors count 0


@dataclasses.dataclass
class LayerwiseBuild:
    model: nn.Module
    result: ApplyResult
    peak_bytes: int          # measured: the CUDA allocator's peak over the build, or (CPU) the resident tensor bytes
    peak_source: str
    seconds: float


def build(config, device: torch.device, dtype: torch.dtype, variant, ctx: ApplyContext, fuse: bool,
          seed: int = 0) -> LayerwiseBuild:
    """The model of `config` with `variant` applied, one decoder layer at a time (see the module doc)."""
    from transformers import AutoModelForCausalLM

    from harness.backends.pytorch import lean

    t0 = time.perf_counter()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval().requires_grad_(False)
    if fuse:
        lean.fuse_projections(model)
    torch.manual_seed(seed)
    std = float(getattr(config, "initializer_range", 0.02))
    inner = model.model
    _materialize(inner.embed_tokens, device, std)
    _materialize(inner.norm, device, std)
    with torch.device(device):   # its inv_freq buffer is computed at construction, not a weight
        inner.rotary_emb = type(inner.rotary_emb)(config=config)
    peak_cpu = _resident_bytes(model)
    results: list[ApplyResult] = []

    def apply_to(module: nn.Module, prefix: str) -> None:
        sub = PrefixedContext(ctx.device_type, ctx.dtype, ctx.calibration_ids, ctx.policy, ctx.decode_rows,
                              prefix=prefix)
        try:
            results.append(variant.apply(module, sub))
        except NothingApplied:
            pass  # the policy keeps this module; the whole model is checked below

    # lm_head first, while only the embeddings are resident: it is the largest linear (Llama-3.1-70B:
    # 128256 x 8192), and quantizing it holds several full-precision temporaries of its size. Built last, on
    # top of every quantized layer, it set the build's peak (lab H200, 2026-12-03: 51.1 GB for
    # int4-wo[tinygemm] and 60.8 GB for int4-wo choosing CUTLASS, against 39 GB of weights)
    if not getattr(config, "tie_word_embeddings", False):
        _materialize(model.lm_head, device, std)
        peak_cpu = max(peak_cpu, _resident_bytes(model))
        holder = nn.Module()
        holder.lm_head = model.lm_head
        apply_to(holder, "")
        model.lm_head = holder.lm_head
        gc.collect()
    for i, layer in enumerate(inner.layers):
        _materialize(layer, device, std)
        peak_cpu = max(peak_cpu, _resident_bytes(model))
        apply_to(layer, f"model.layers.{i}.")
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    if getattr(config, "tie_word_embeddings", False):
        model.lm_head.weight = inner.embed_tokens.weight
    changed = sum(r.layers_changed for r in results)
    if changed == 0:
        raise NothingApplied(f"{variant.name} transformed no layer of the layer-by-layer build")
    peak_cpu = max(peak_cpu, _resident_bytes(model))
    if cuda:
        torch.cuda.synchronize(device)
        peak, source = torch.cuda.max_memory_allocated(device), "CUDA allocator peak over the build"
    else:
        peak, source = peak_cpu, "largest resident tensor bytes after each layer was materialized"
    from harness.variants.gpu_kernels import whole_model_kernel

    first = results[0]
    res = ApplyResult(kernel=whole_model_kernel(first.kernel, model), layers_changed=changed,
                      notes=((first.notes + "; ") if first.notes else "")
                      + f"built layer by layer on {device}: peak {peak / 1e9:.2f} GB ({source})")
    return LayerwiseBuild(model, res, peak, source, time.perf_counter() - t0)


# Bytes per element of a linear that quantizing it holds beyond its full-precision weight (torchao's
# float32 working copy plus the integer codes). An estimate, fitted to one measurement on the lab H200,
# 2026-12-03: Llama-3.1-70B int4-wo built layer by layer, CUDA allocator build peak 44.46 GB (batch 1,
# tinygemm) and 44.07 GB (batch 8, CUTLASS) against 39.03 GB of quantized weights (records in
# results/reference/h200/session7-20261203/llama70b-int4-b1 and -b8): 5.4 GB above the weights = one
# bf16 layer (~1.71 GB) + ~3.7 GB, about 8 bytes per element of the 470M-element fused gate_up.
QUANT_TEMP_BYTES_PER_ELEMENT = 8


def need_bytes(shape, planned_bytes: int, dtype_bytes: int) -> int:
    """The build's estimated peak, for the fit check: the larger of the lm_head stage and the last layer's
    stage (the variant's weights as planned, `planned_bytes`, under the layer being quantized)."""
    return max(lm_head_stage_bytes(shape, dtype_bytes), planned_bytes + layer_stage_bytes(shape, dtype_bytes))


def lm_head_stage_bytes(shape, dtype_bytes: int) -> int:
    """Resident while the lm_head is quantized, before any layer exists: the full-precision embeddings and
    lm_head and the quantization's temporaries. 0 when tied (the lm_head is the embedding, not quantized)."""
    if shape.tie_word_embeddings:
        return 0
    head = shape.lm_head_params()
    return shape.embedding_params() * dtype_bytes + head * (dtype_bytes + QUANT_TEMP_BYTES_PER_ELEMENT)


def layer_stage_bytes(shape, dtype_bytes: int) -> int:
    """Held beyond the quantized weights while a decoder layer is quantized: the layer in full precision and
    the temporaries of its largest linear, fused as the build fuses them (the larger case when it does not)."""
    largest = max(i * o for _, i, o in shape.fused_linear_shapes())
    return shape.block_params() * dtype_bytes + largest * QUANT_TEMP_BYTES_PER_ELEMENT
