"""GemLite's Triton kernels as `int4-wo[gemlite]` / `fp8-wo[gemlite]` (harness/variants/gpu_kernels.py has the
kernel axis), and their prefill path: a GemLite linear called on more than PREFILL_MIN_ROWS rows unpacks its
weights to bf16 in one inductor kernel and calls cuBLAS (DequantPrefill); decode rows stay on GemLite's
GEMV / split-K kernels. Nothing is stored twice. The split is checked on the device at apply time against
GemLite's own output and left out (the record says why) where they disagree.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from harness.variants.catalog import GEMLITE_PREFILL_MIN_ROWS
from harness.variants.inspect import swap_linears
from harness.variants.int4_cpu import GROUP_SIZE as GROUP   # int4 group: the same 128 as tinygemm's
# Where dequantize + cuBLAS beats GemLite's own GEMM, estimated from the H200 kernel table: unpacking moves
# about 4.5 bytes per weight (read 0.5, write and re-read 2 + 2) at ~4 TB/s, 1.1 ps per weight; per row,
# GemLite's GEMM costs 2 flops per weight at 255 TFLOP/s and cuBLAS at 779 TFLOP/s, 5.2 fs per weight
# more: equal at M ~ 215 rows. Decode (M = batch <= 256 rows) never takes the dequantized path.
PREFILL_MIN_ROWS = GEMLITE_PREFILL_MIN_ROWS


def gemlite_configs() -> str:
    """GemLite ships tuned kernel configs per GPU and loads the one matching the GPU's name; it has none
    for the H200, whose SMs are the H100's (sm_90): use the H100 file there instead of autotuning every
    shape (minutes per shape and M). Returns which configs are in use."""
    import os

    import gemlite
    from gemlite.core import GemLiteLinear, get_default_cache_config

    own = get_default_cache_config()
    if own:
        return os.path.basename(own)
    name = torch.cuda.get_device_name()
    if "H200" in name or "H20" in name:
        GemLiteLinear.load_config(os.path.join(os.path.dirname(gemlite.__file__), "configs", "h100.json"))
        return f"h100.json (GemLite ships no {name} configs)"
    return f"none (GemLite autotunes on {name})"


def int4_gemlite_linear(lin: nn.Linear) -> nn.Module:
    """Round-to-nearest asymmetric int4, group 128 (as tinygemm's), packed by GemLite."""
    from gemlite.helper import A16W4_HQQ_INT

    w = lin.weight.detach().float()
    N, K = w.shape
    g = w.view(N, K // GROUP, GROUP)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-8)
    zero = (-lo / scale).round()
    q = (g / scale + zero).round().clamp(0, 15).to(torch.uint8).view(N, K)
    dev = str(w.device)
    out = A16W4_HQQ_INT(device=dev, dtype=lin.weight.dtype).from_weights(
        q, scale.view(N, -1).to(lin.weight.dtype), zero.view(N, -1).to(lin.weight.dtype),
        bias=lin.bias)
    return out


def fp8_gemlite_linear(lin: nn.Linear) -> nn.Module:
    from gemlite.helper import A16W8_FP8

    return A16W8_FP8(device=str(lin.weight.device), dtype=lin.weight.dtype).from_linear(lin, del_orig=False)


def _layout(m: nn.Module) -> tuple:
    """(n, k, codes per int, bits, W_group_mode, per-channel) of a GemLiteLinearTriton, or ValueError.
    Per-channel: one scale per output applied after the GEMM (channel_scale_mode 1). Grouped: scales
    (K / g, N) applied inside it, W_group_mode 2 (q * s), 3 ((q - z) * s) or 4 (q * s + z); A16W8_FP8's
    default (pre-scaling: W_group_mode 2, scales (1, N)) is one group of the whole K."""
    n, k = int(m.out_features), int(m.in_features)
    s, mode, csm = m.scales, int(m.W_group_mode), int(getattr(m, "channel_scale_mode", 0))
    channel = s is not None and csm == 1 and s.numel() == n and mode in (0, 2)
    grouped = (s is not None and csm == 0 and mode in (2, 3, 4) and s.dim() == 2 and s.shape[1] == n
               and k % s.shape[0] == 0)
    if not (channel or grouped):
        raise ValueError(f"GemLite layout not known here (W_group_mode {mode}, channel_scale_mode {csm}, "
                         f"scales {None if s is None else tuple(s.shape)})")
    return n, k, int(m.elements_per_sample), int(m.W_nbits), mode, channel


def _dequant(w_q, s, z, n: int, k: int, e: int, bits: int, mode: int, channel: bool, dtype: torch.dtype):
    w = w_q.t()
    if e > 1:
        shifts = torch.arange(e, device=w.device, dtype=w.dtype) * bits
        w = ((w.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(n, k)
    w = w.float()
    if channel:
        return (w * s.reshape(n, 1).float()).to(dtype)
    g = k // s.shape[0]
    w = w.view(n, k // g, g)
    st = s.t().float().unsqueeze(-1)
    if mode == 2:
        return (w * st).reshape(n, k).to(dtype)
    zt = z.t().float().unsqueeze(-1)
    w = (w - zt) * st if mode == 3 else w * st + zt
    return w.reshape(n, k).to(dtype)


def gemlite_dequantized(m: nn.Module, dtype: torch.dtype = torch.bfloat16, compiled: bool = False,
                        layout: tuple | None = None) -> torch.Tensor:
    """The (N, K) weights a GemLiteLinearTriton holds, in `dtype`: its packed codes unpacked (GemLite packs
    `elements_per_sample` codes of W_nbits along K into each int32, transposed to (K / e, N)) and scaled
    as its W_group_mode says (3: (q - z) * s, 4: q * s + z, per group of K), or by a per-channel scale
    (its fp8 weights). Raises ValueError for a layout it does not know."""
    fn = _compiled_dequant() if compiled else _dequant
    return fn(m.W_q, m.scales, m.zeros, *(layout or _layout(m)), dtype)


class DequantPrefill(nn.Module):
    """A GemLite linear whose large calls (prefill: more than `min_rows` rows) dequantize its weights to
    the compute dtype in one compiled kernel and run cuBLAS; decode rows go to GemLite's own kernels.
    Nothing is stored twice: the bf16 weights exist only during the call."""

    def __init__(self, inner: nn.Module, min_rows: int):
        super().__init__()
        self.inner, self.min_rows = inner, min_rows
        self.in_features, self.out_features = inner.in_features, inner.out_features
        self.layout = _layout(inner)   # python ints, read once: the prefill call does no attribute walking

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.shape[-1] <= self.min_rows:
            return self.inner(x)
        w = gemlite_dequantized(self.inner, x.dtype, compiled=True, layout=self.layout)
        return nn.functional.linear(x, w, getattr(self.inner, "bias", None))


@functools.lru_cache(maxsize=None)
def _compiled_dequant():
    # one inductor kernel per weight shape (unpack, scale, cast fused): eager would run five passes
    return torch.compile(_dequant, dynamic=False)


_PREFILL_REFUSED: dict[str, str] = {}   # format -> why its GemLite prefill is not dequantized (this process)


def _split_prefill(model: nn.Module, fmt: str) -> int:
    """Wrap every GemLite linear of `model` in DequantPrefill after checking the dequantized path against
    GemLite's own GEMM on one of them (relative error under 1%); returns how many were wrapped."""
    found = [(f, m) for f, m in model.named_modules() if type(m).__name__.startswith("GemLite")]
    if not found:
        return 0
    _, first = found[0]
    try:
        x = torch.randn(PREFILL_MIN_ROWS + 1, first.in_features, device=first.W_q.device, dtype=torch.bfloat16)
        with torch.inference_mode():
            ref = first(x).float()
            got = nn.functional.linear(x, gemlite_dequantized(first, x.dtype, compiled=True), first.bias).float()
        err = ((got - ref).norm() / ref.norm().clamp_min(1e-12)).item()
        if not err < 0.01:
            raise ValueError(f"dequantized weights disagree with GemLite's own output (relative error {err:.3g})")
    except Exception as e:  # noqa: BLE001  (the split is an optimization: without it GemLite runs both phases)
        _PREFILL_REFUSED[fmt] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
        return 0
    _PREFILL_REFUSED.pop(fmt, None)
    for fqn, m in found:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, DequantPrefill(m, PREFILL_MIN_ROWS))
    return len(found)


def gemlite_kernel(make: Callable[[nn.Linear], nn.Module], fmt: str):
    """The apply function of a GemLite kernel: every targeted linear with K a multiple of 128 swapped for
    make(linear), then the prefill split."""
    def decode_only(model, ctx) -> int:
        gemlite_configs()
        # GemLite packs groups of 128 input features: a linear whose K is not a multiple stays as it is
        return swap_linears(model, lambda m, fqn: ctx.linear_filter(m, fqn) and m.in_features % GROUP == 0, make)

    def apply(model, ctx) -> int:
        n = decode_only(model, ctx)
        _split_prefill(model, fmt)
        return n
    apply.decode_only = decode_only   # what measure() times: the decode kernels, without the prefill check
    return apply


def phases(model: nn.Module, fmt: str) -> str:
    """What runs prefill where it differs from decode (the record's kernel names both phases)."""
    split = sum(isinstance(m, DequantPrefill) for m in model.modules())
    if split:
        return (f"; prefill (calls over {PREFILL_MIN_ROWS} rows) x{split}: GemLite weights dequantized to bf16 "
                "(inductor) + cuBLAS mm")
    if fmt in _PREFILL_REFUSED and any(type(m).__name__.startswith("GemLite") for m in model.modules()):
        return f"; prefill: GemLite's own GEMM (dequantized prefill not used: {_PREFILL_REFUSED[fmt]})"
    return ""
