"""Quantization variants: support matrix, bytes, numerics, kernels actually called, AWQ, policies.

CPU tests use the `tiny` synthetic model (4 layers, hidden 256, 4 heads / 2 KV heads) and small
nn.Linear layers; CUDA tests are marked `gpu` and skip without a GPU.
"""
import importlib.util

import pytest
import torch
from torch import nn

from harness.variants import REGISTRY, get_variant, policy_for
from harness.variants.inspect import tensor_bytes
from harness.variants.int4_cpu import Int4PackedLinearCPU
from harness.variants.registry import ApplyContext, Requirements

CPU = torch.device("cpu")
QUANT = ("int8-wo", "int8-dq", "int4-wo", "int4-awq", "fp8-wo", "fp8-dq", "w4a8")
CPU_OK = ("baseline", "int8-wo", "int8-dq", "int4-wo", "int4-awq")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _calib(n: int = 2, tokens: int = 64, vocab: int = 8192) -> torch.Tensor:
    return torch.randint(0, vocab, (n, tokens), generator=torch.Generator().manual_seed(1234))


@pytest.fixture
def coarse_awq_grid(monkeypatch):
    """A 5-step alpha grid keeps the model-level AWQ tests quick on 2 cores (the search is the cost)."""
    import harness.variants.awq as awq

    monkeypatch.setitem(awq.GRID, "cpu", 5)


@pytest.fixture(scope="module")
def tiny_ref(tiny_loaded):
    ids = torch.randint(0, 8192, (1, 12), generator=torch.Generator().manual_seed(0))
    base = tiny_loaded.instantiate(CPU, torch.float32)
    with torch.no_grad():
        return ids, base(ids).logits, tensor_bytes(base)


def _linear_params(shape) -> int:
    return shape.block_linear_params() * shape.num_hidden_layers + shape.lm_head_params()


# -- support matrix -----------------------------------------------------------------------------------
def test_registry_names_and_cpu_support():
    assert [n for n in REGISTRY if n in QUANT] == list(QUANT)
    for name in CPU_OK:
        assert get_variant(name).unsupported_reason("cpu", None) is None, name
    for name in ("fp8-wo", "fp8-dq", "w4a8"):
        assert "no kernel on cpu" in get_variant(name).unsupported_reason("cpu", None)
    assert "compute capability >= 8.9" in get_variant("fp8-dq").unsupported_reason("cuda", (8, 0))
    assert "compute capability >= 8.0" in get_variant("int4-wo").unsupported_reason("cuda", (7, 5))


@pytest.mark.skipif(importlib.util.find_spec("mslk") is not None, reason="mslk is installed here")
def test_w4a8_probe_reports_missing_mslk():
    from harness.variants.quant import _probe_w4a8

    why = _probe_w4a8("cpu")   # torchao fails at the mslk import before touching the device
    assert "mslk" in why and "Float8DynamicActivationInt4WeightConfig" in why


def test_probe_failure_makes_a_cell_unsupported():
    from harness.variants import Variant

    v = Variant("x", "", Requirements(), lambda m, c: None, probe=lambda dev, cc: f"nothing on {dev}")
    assert v.unsupported_reason("cpu", None) == "x: nothing on cpu"
    assert "no kernel on mps" in v.unsupported_reason("mps", None)   # static requirements come first


# -- whole-model application on CPU -------------------------------------------------------------------
# (variant, bytes saved per fp32 linear weight, max relative logits error on the random tiny model)
# int4 g128: 0.5 B of codes + bf16 scale and zero per 128 weights = 0.53125 B; error compounds over
# 4 random layers and the lm_head (one layer alone: ~0.1, see the module test below).
@pytest.mark.parametrize("name, saved, max_err, kernel", [
    ("int8-wo", 3.0, 0.05, "torchao Int8WeightOnlyConfig -> Int8Tensor x29"),
    ("int8-dq", 3.0, 0.06, "torchao Int8DynamicActivationInt8WeightConfig -> Int8Tensor x29"),
    ("int4-wo", 4 - 0.53125, 0.4, "aten._weight_int4pack_mm_for_cpu g128 bf16-activations (Int4PackedLinearCPU x29)"),
])
def test_cpu_variant_bytes_error_and_kernel(tiny_loaded, tiny_ref, name, saved, max_err, kernel):
    ids, ref, base_bytes = tiny_ref
    m = tiny_loaded.instantiate(CPU, torch.float32)
    res = get_variant(name).apply(m, ApplyContext("cpu", torch.float32))
    assert res.kernel == kernel
    assert base_bytes - tensor_bytes(m) == pytest.approx(saved * _linear_params(tiny_loaded.shape), rel=0.02)
    with torch.no_grad():
        assert _rel(m(ids).logits, ref) < max_err


def test_policy_keeps_layers_for_int4(tiny_loaded):
    m = tiny_loaded.instantiate(CPU, torch.float32)
    res = get_variant("int4-wo").apply(m, ApplyContext("cpu", torch.float32, policy=policy_for("int4-wo@keep-attn", 4)))
    layer = m.model.layers[1]
    assert type(layer.self_attn.q_proj) is nn.Linear and type(layer.self_attn.o_proj) is nn.Linear
    assert isinstance(layer.mlp.up_proj, Int4PackedLinearCPU) and isinstance(m.lm_head, Int4PackedLinearCPU)
    assert "Int4PackedLinearCPU x13" in res.kernel and "Tensor[torch.float32] x16" in res.kernel


# -- the int4 CPU module ------------------------------------------------------------------------------
def _tinygemm_reference(w: torch.Tensor, group: int = 128) -> torch.Tensor:
    """Dequantized weight under the tinygemm scheme, written independently of the harness code."""
    n, k = w.shape
    kp = -(-k // group) * group
    wp = torch.zeros(n, kp)
    wp[:, :k] = w
    g = wp.reshape(n, kp // group, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-6).bfloat16().float()
    zero = (lo + 8 * scale).bfloat16().float()
    q = ((g - (zero - 8 * scale)) / scale).round().clamp(0, 15)
    return ((q - 8) * scale + zero).reshape(n, kp)[:, :k]


def test_int4_module_matches_reference_and_calls_the_kernel():
    torch.manual_seed(0)
    lin = nn.Linear(200, 40)   # K not a multiple of the group, N not a multiple of 16: both padded
    mod = Int4PackedLinearCPU.from_linear(lin)
    x = torch.randn(3, 5, 200)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = mod(x)
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_weight_int4pack_mm_for_cpu" in ops and not ops & {"aten::mm", "aten::addmm", "aten::linear"}
    ref = x.bfloat16().float() @ _tinygemm_reference(lin.weight.detach()).T + lin.bias.detach()
    assert y.shape == (3, 5, 40) and y.dtype == torch.float32
    assert _rel(y, ref) < 0.01                      # bf16 activations and output rounding only
    assert 0.02 < _rel(y, lin(x).detach()) < 0.15   # int4 g128 vs fp32: ~0.05-0.1 is normal
    # packed codes (N padded to 48, K to 256) + bf16 scales/zeros + fp32 bias, all buffers
    assert tensor_bytes(mod) == 48 * 128 + 2 * 48 * 2 * 2 + 40 * 4


# -- AWQ -----------------------------------------------------------------------------------------------
def test_awq_beats_rtn_on_a_layer_with_outlier_channels():
    from harness.variants.awq import search_scale

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 512, generator=g)
    x[:, torch.randperm(512, generator=g)[:8]] *= 30      # a few salient input channels
    lin = nn.Linear(512, 256, bias=False)
    nn.init.normal_(lin.weight, std=0.02, generator=g)
    res = search_scale(x, x.abs().mean(0), [lin.weight.detach()])
    scaled = nn.Linear(512, 256, bias=False)
    scaled.weight.data = lin.weight.detach() * res.scale
    with torch.no_grad():
        ref = lin(x)
        rtn = _rel(Int4PackedLinearCPU.from_linear(lin)(x), ref)
        awq = _rel(Int4PackedLinearCPU.from_linear(scaled)(x / res.scale), ref)
    assert 0 < res.alpha and res.loss < res.loss_rtn
    assert awq < 0.7 * rtn


def _with_outliers(model: nn.Module) -> nn.Module:
    """Make a few channels of every RMSNorm output large, as real LLM activations are."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for norm in [n for layer in model.model.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]:
            norm.weight[torch.randperm(norm.weight.numel(), generator=g)[:4]] *= 20
    return model


def test_awq_folding_is_exact_before_quantization(tiny_loaded, coarse_awq_grid):
    from harness.variants.awq import awq_scale_

    m = _with_outliers(tiny_loaded.instantiate(CPU, torch.float32))
    ids = torch.randint(0, 8192, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = m(ids).logits
        rep = awq_scale_(m, ApplyContext("cpu", torch.float32, _calib()))
        after = m(ids).logits
    assert _rel(after, before) < 1e-4
    assert rep.scaled_linears == 29 and rep.unscaled_linears == 0
    assert "model.layers.0.v->o_proj" in rep.results          # GQA: 4 query heads share 2 KV heads
    assert any(r.alpha > 0 for r in rep.results.values())


def test_int4_awq_reduces_error_vs_rtn(tiny_loaded, coarse_awq_grid):
    ids = torch.randint(0, 8192, (1, 12), generator=torch.Generator().manual_seed(0))
    ctx = ApplyContext("cpu", torch.float32, _calib())
    ref_m, rtn_m, awq_m = (_with_outliers(tiny_loaded.instantiate(CPU, torch.float32)) for _ in range(3))
    get_variant("int4-wo").apply(rtn_m, ctx)
    res = get_variant("int4-awq").apply(awq_m, ctx)
    with torch.no_grad():
        ref = ref_m(ids).logits
        assert _rel(awq_m(ids).logits, ref) < _rel(rtn_m(ids).logits, ref)
    assert res.calibration_s > 0 and res.kernel.startswith("AWQ-scaled (29 linears) + aten._weight_int4pack_mm_for_cpu")
    assert tensor_bytes(awq_m) == tensor_bytes(rtn_m) < tensor_bytes(ref_m) / 2.5   # scales folded: no extra bytes


def test_int4_awq_respects_policy_and_needs_calibration(tiny_loaded, coarse_awq_grid):
    m = tiny_loaded.instantiate(CPU, torch.float32)
    with pytest.raises(ValueError, match="calibration"):
        get_variant("int4-awq").apply(m, ApplyContext("cpu", torch.float32))
    res = get_variant("int4-awq").apply(m, ApplyContext("cpu", torch.float32, _calib(1, 32),
                                                        policy_for("int4-awq@keep-ends", 4)))
    assert type(m.lm_head) is nn.Linear and type(m.model.layers[0].mlp.down_proj) is nn.Linear
    assert isinstance(m.model.layers[1].mlp.down_proj, Int4PackedLinearCPU)
    assert "Int4PackedLinearCPU x14" in res.kernel and "AWQ-scaled (14 linears)" in res.kernel


# -- CUDA paths (run on a GPU machine; skipped here) ----------------------------------------------------
def _stack(device: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1024, 2048, bias=False), nn.Linear(2048, 1024, bias=False)).to(device, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("name, kernel, max_err", [
    ("int8-wo", "Int8Tensor x2", 0.02), ("int8-dq", "Int8Tensor x2", 0.03),
    # int4-wo and fp8-wo choose their kernel by measurement (GemLite can win): the torchao ones named here
    ("int4-wo[tinygemm]", "Int4TilePackedTo4dTensor x2", 0.15),
    ("fp8-wo[torchao]", "Float8Tensor x2", 0.06), ("fp8-dq", "Float8Tensor x2", 0.08),
])
def test_cuda_variant_on_linear_stack(name, kernel, max_err):
    cc = torch.cuda.get_device_capability()
    why = get_variant(name).unsupported_reason("cuda", cc)
    if name.startswith("fp8") and cc < (8, 9):
        assert why and "compute capability" in why
        return
    assert why is None, why
    ref_m, m = _stack("cuda", torch.bfloat16), _stack("cuda", torch.bfloat16)
    res = get_variant(name).apply(m, ApplyContext("cuda", torch.bfloat16))
    assert kernel in res.kernel
    assert tensor_bytes(m) < tensor_bytes(ref_m)
    x = torch.randn(4, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert _rel(m(x), ref_m(x)) < max_err


@pytest.mark.gpu
def test_cuda_w4a8_is_unsupported_without_mslk():
    if importlib.util.find_spec("mslk") is not None:
        pytest.skip("mslk is installed here")
    why = get_variant("w4a8").unsupported_reason("cuda", torch.cuda.get_device_capability())
    assert why and ("mslk" in why or "compute capability" in why)


@pytest.mark.gpu
def test_cuda_int4_awq_on_tiny(tiny_loaded):
    dev = torch.device("cuda")
    ids = torch.randint(0, 8192, (1, 12), device=dev)
    ref_m = tiny_loaded.instantiate(dev, torch.bfloat16)
    m = tiny_loaded.instantiate(dev, torch.bfloat16)
    res = get_variant("int4-awq").apply(m, ApplyContext("cuda", torch.bfloat16, _calib(4, 128).to(dev)))
    assert "Int4TilePackedTo4dTensor x29" in res.kernel and res.calibration_s > 0
    with torch.no_grad():
        assert _rel(m(ids).logits, ref_m(ids).logits) < 0.5   # random tiny model: RTN alone gives ~0.25-0.35


def test_awq_on_fused_projections_folds_exactly(tiny_loaded, coarse_awq_grid):
    """The CUDA path fuses q/k/v and gate/up (harness.backends.pytorch.lean) before apply(); AWQ keeps the
    fused linears as consumers and calibrates through temporary row views."""
    from harness.backends.pytorch.lean import LeanDecoder, fuse_projections
    from harness.variants.awq import awq_scale_

    m = _with_outliers(tiny_loaded.instantiate(CPU, torch.float32))
    fuse_projections(m)
    ids = torch.randint(0, 8192, (1, 12), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(12)
    with torch.no_grad():
        before = LeanDecoder(m, 1, 16)(ids, pos)
        rep = awq_scale_(m, ApplyContext("cpu", torch.float32, _calib()))
        after = LeanDecoder(m, 1, 16)(ids, pos)
    assert _rel(after, before) < 1e-4
    assert rep.scaled_linears == 4 * 4 + 1 and rep.unscaled_linears == 0     # qkv, o, gate_up, down; lm_head
    assert not hasattr(m.model.layers[0].self_attn, "q_proj")                 # the views are gone
    assert any(r.alpha > 0 for r in rep.results.values())
