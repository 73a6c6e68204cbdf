"""The kernel axis of the CUDA weight-only formats: which real kernel runs a format's linears.

    int4-wo[tinygemm]  torchao Int4WeightOnlyConfig(tile_packed_to_4d): aten._weight_int4pack_mm
    int4-wo[cutlass]   torchao Int4WeightOnlyConfig(preshuffled): mslk's CUTLASS bf16 x int4 kernel (mslk-cuda)
    int4-wo[gemlite]   GemLite A16W4 group 128 (Triton: GEMV at M <= 4, split-K GEMM below 64, GEMM above)
    fp8-wo[torchao]    torchao Float8WeightOnlyConfig (dequantizes to bf16, then mm)
    fp8-wo[gemlite]    GemLite A16W8 fp8 e4m3, per-channel scales (Triton; reads the fp8 bytes)

`int4-wo` and `fp8-wo` on CUDA run the fastest available kernel for the model's own linear shapes at
the cell's batch, measured at apply time: every candidate quantizes one linear of each distinct shape,
each is timed at M = the cell's batch inside a CUDA graph (CUDA events), and the candidate with the
least summed time (one decode step, weighted by how many linears have each shape) wins; the pipeline
prepares the model once per batch for these variants. Every candidate's times (at every M timed so far)
are in the record. The times are cached on disk per GPU, shapes and library versions, so a second
process chooses without re-measuring.

Prefill and decode may run different kernels. GemLite's weights are dequantized for prefill: a linear
called on more than PREFILL_MIN_ROWS rows unpacks its GemLite weights to bf16 (one fused inductor kernel)
and calls cuBLAS, the usual prefill path of weight-only formats (GemLite's own GEMM runs a third of
cuBLAS's rate at M = 2048 on the H200). The split is checked on the device at apply time against
GemLite's own output; the record names the kernel of each phase. tinygemm and CUTLASS run both phases
(their packings have no dequantize kernel short of a second copy of the weights).

Lab H200, 8B shapes, GB/s of weight bytes at M = 1 / 8 / 32 (bench/kernels_gpu.py, results/reference/h200):
tinygemm 1,789 / 774 / 236 (gate_up), CUTLASS 1,067 / 1,067 / 1,039, GemLite int4 1,624 / 979 / 822;
GemLite fp8 3,974 / 3,262 / 2,550 against torchao fp8 weight-only's 129 / 129 / 129.
"""
from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Callable

import torch
from torch import nn

from harness.variants.gemlite import (PREFILL_MIN_ROWS, DequantPrefill, fp8_gemlite_linear,  # noqa: F401
                                      gemlite_configs, gemlite_dequantized, gemlite_kernel, int4_gemlite_linear,
                                      phases)
from harness.variants.inspect import count_converted, linear_weight_types, targeted_linears
from harness.variants.int4_cpu import GROUP_SIZE
from harness.variants.registry import ApplyContext, ApplyResult

GROUP = GROUP_SIZE   # the int4 group of every kernel here (128, as int4_cpu and GemLite)
TIMED_M = (1, 8, 32)   # the M values bench/kernels_gpu.py reports; a cell's choice times only its own M
CACHE_FILE = "kernel_choices.json"
# aten._weight_int4pack_mm indexes its output with 32-bit integers: M x N above 2**31 - 1 writes out of
# bounds (qwen2.5-7b int4 prefill, batch 32 x 2048 tokens x 37,888 fused gate/up outputs, on the H200:
# "CUDA error: an illegal memory access"). Larger inputs go through the kernel in row chunks.
TINYGEMM_MAX_OUTPUT = 2 ** 31 - 1


class RowChunked(nn.Module):
    """A quantized linear called on at most `max_rows` rows at a time (the tinygemm output limit)."""

    def __init__(self, inner: nn.Module, out_features: int, in_features: int):
        super().__init__()
        self.inner, self.in_features, self.out_features = inner, in_features, out_features
        self.max_rows = max(1, TINYGEMM_MAX_OUTPUT // out_features)

    @property
    def weight(self):
        return self.inner.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows <= self.max_rows:
            return self.inner(x)
        flat = x.reshape(rows, x.shape[-1])
        out = torch.cat([self.inner(c) for c in flat.split(self.max_rows)])
        return out.reshape(*x.shape[:-1], self.out_features)


# -- the candidates: (module fqn filter, model) -> how many linears changed (GemLite's: gemlite.py) ---------
def _torchao(model: nn.Module, ctx: ApplyContext, cfg) -> int:
    from torchao.quantization import quantize_

    targets = targeted_linears(model, ctx.linear_filter)
    quantize_(model, cfg, filter_fn=ctx.linear_filter)
    return count_converted(model, targets)


def _tinygemm(model, ctx) -> int:
    from torchao.quantization import Int4WeightOnlyConfig

    n = _torchao(model, ctx, Int4WeightOnlyConfig(group_size=GROUP, int4_packing_format="tile_packed_to_4d"))
    wide = [(f, m) for f, m in model.named_modules()
            if isinstance(m, nn.Linear) and type(m.weight).__name__ == "Int4TilePackedTo4dTensor"]
    for fqn, m in wide:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, RowChunked(m, m.out_features, m.in_features))
    return n


def bf16i4bf16_shuffled_shape(x: torch.Tensor, w: torch.Tensor, w_scale_group: torch.Tensor,
                              w_zero_group: torch.Tensor) -> torch.Tensor:
    """The output mslk's bf16 x int4 CUTLASS GEMM allocates, as a fake (meta) tensor: bf16 [M, N], M the
    rows of X (all but its last dimension), N the rows of the packed W ([..., N, K/2] int8), as its
    bf16i4bf16_dispatch does (`at::empty({M, N}, bf16)`)."""
    m = x.numel() // x.shape[-1] if x.shape[-1] else 0
    n = w.numel() // w.shape[-1] if w.shape[-1] else 0
    return x.new_empty((m, n), dtype=torch.bfloat16)


@functools.lru_cache(maxsize=None)
def register_mslk_fake() -> str:
    """mslk-cuda 1.1.0 registers Meta kernels for its other int4 GEMMs (f8i4bf16_shuffled, the batched and
    rowwise ones) but not for `mslk::bf16i4bf16_shuffled`, the one torchao's preshuffled bf16 int4
    linear calls, so torch.compile cannot trace it ("Operator does not support running with fake
    tensors") and the engine falls back to an uncompiled CUDA graph. This registers the output shape as
    its fake kernel where mslk has none. Returns what it did."""
    op = "mslk::bf16i4bf16_shuffled"
    try:
        import mslk  # noqa: F401  (loads the library that defines the op)
        if torch._C._dispatch_has_kernel_for_dispatch_key(op, "Meta"):
            return "mslk has its own Meta kernel"
        torch.library.register_fake(op)(bf16i4bf16_shuffled_shape)
        return "fake kernel registered by the harness"
    except Exception as e:  # noqa: BLE001  (no mslk, or an op by another schema: compile falls back as before)
        return f"not registered: {type(e).__name__}: {str(e)[:120]}"


def _cutlass(model, ctx) -> int:
    from torchao.quantization import Int4WeightOnlyConfig

    register_mslk_fake()
    return _torchao(model, ctx, Int4WeightOnlyConfig(group_size=GROUP, int4_packing_format="preshuffled"))


def _fp8_torchao(model, ctx) -> int:
    from torchao.quantization import Float8WeightOnlyConfig

    return _torchao(model, ctx, Float8WeightOnlyConfig())


# format -> kernel -> (apply, what it is, the package it needs)
KERNELS: dict[str, dict[str, tuple[Callable, str, str]]] = {
    "int4-wo": {
        "tinygemm": (_tinygemm, "torchao Int4WeightOnlyConfig(group_size=128, tile_packed_to_4d): "
                                "aten._weight_int4pack_mm (tinygemm)", "torchao"),
        "cutlass": (_cutlass, "torchao Int4WeightOnlyConfig(group_size=128, preshuffled): mslk CUTLASS "
                              "bf16 x int4", "mslk"),
        "gemlite": (gemlite_kernel(int4_gemlite_linear, "int4-wo"), "GemLite A16W4 group 128 (Triton GEMV / split-K / GEMM by M)",
                    "gemlite"),
    },
    "fp8-wo": {
        "torchao": (_fp8_torchao, "torchao Float8WeightOnlyConfig (dequantize to bf16, then mm)", "torchao"),
        "gemlite": (gemlite_kernel(fp8_gemlite_linear, "fp8-wo"), "GemLite A16W8 fp8 e4m3 per-channel (Triton, reads fp8 bytes)",
                    "gemlite"),
    },
}


def kernel_names(fmt: str) -> list[str]:
    return list(KERNELS[fmt])


def _has(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


@functools.lru_cache(maxsize=None)
def probe(fmt: str, kernel: str, device_type: str) -> str | None:
    """None if `fmt[kernel]` quantizes and runs a 256 x 256 linear on the device, else why not."""
    if device_type != "cuda":
        return f"{fmt}[{kernel}] is a CUDA kernel"
    apply, what, package = KERNELS[fmt][kernel]
    if not _has(package):
        extra = " (pip install mslk-cuda, or pip install .[gpu])" if package == "mslk" else (
            " (pip install gemlite, or pip install .[gpu])" if package == "gemlite" else "")
        return f"{fmt}[{kernel}] needs the {package} package, which is not installed{extra}"
    try:
        m = nn.Sequential(nn.Linear(256, 256, bias=False, device="cuda", dtype=torch.bfloat16))
        ctx = ApplyContext("cuda", torch.bfloat16)
        if apply(m, ctx) != 1:
            return f"{fmt}[{kernel}]: {what} left a 256 x 256 linear unchanged"
        m(torch.randn(2, 256, device="cuda", dtype=torch.bfloat16))
    except Exception as e:  # noqa: BLE001  (any failure means this kernel is not usable here)
        return f"{fmt}[{kernel}] does not run here: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
    return None


def time_call(fn, x: torch.Tensor, calls: int = 20) -> float:
    """Microseconds per call of fn(x): best of 5 replays of a CUDA graph of `calls` back-to-back calls
    (CUDA events), after 3 warm-up calls on a side stream (autotuning, workspace allocation)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.inference_mode():
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.inference_mode():
        for _ in range(calls):
            fn(x)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) * 1e3 / calls)
    return best


def _time_us(mod: nn.Module, m: int, k: int, calls: int = 20) -> float:
    return time_call(mod, torch.randn(m, k, device="cuda", dtype=torch.bfloat16), calls)


def measure(fmt: str, kernel: str, shapes: Counter, ms: tuple[int, ...] = TIMED_M) -> dict[str, float]:
    """Summed microseconds per decode step at each M of `ms`: every distinct (N, K) shape timed on a
    random bf16 linear quantized by `kernel`, weighted by how many linears have it."""
    apply = KERNELS[fmt][kernel][0]
    apply = getattr(apply, "decode_only", apply)
    out = {f"M={m}": 0.0 for m in ms}
    for (n, k), count in shapes.items():
        holder = nn.Sequential(nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16))
        apply(holder, ApplyContext("cuda", torch.bfloat16))
        for m in ms:
            out[f"M={m}"] += count * _time_us(holder, m, k)
        del holder
    torch.cuda.empty_cache()
    return out


def _cache_path():
    from harness.backends.pytorch.compile_choice import cache_dir

    return cache_dir() / CACHE_FILE


def gpu_name() -> str:
    return torch.cuda.get_device_name()


def _key(fmt: str, shapes: Counter) -> str:
    from harness.backends.pytorch.compile_choice import versions

    libs = dict(versions())
    for p in ("gemlite", "mslk"):
        libs[p] = "present" if _has(p) else "absent"
    shp = ",".join(f"{n}x{k}*{c}" for (n, k), c in sorted(shapes.items()))
    return f"{gpu_name()}|{fmt}|{shp}|" + ",".join(f"{a}={b}" for a, b in sorted(libs.items()))


def choose(fmt: str, model: nn.Module, ctx: ApplyContext) -> tuple[str, dict, str]:
    """(kernel, {kernel: {M=..: us}} or reasons, source) for the fastest available kernel of `fmt` at
    M = ctx.decode_rows. Only that M is timed (each M costs every candidate its Triton compilations and
    CUDA-graph replays: minutes for GemLite at the 8B shapes); times of other M from earlier runs stay
    in the cache and in the record."""
    from harness.atomic import atomic_write_text

    rows = max(1, int(ctx.decode_rows))
    at = f"M={rows}"
    shapes = Counter((m.out_features, m.in_features) for f, m in model.named_modules()
                     if f in set(targeted_linears(model, ctx.linear_filter)))
    key, path = _key(fmt, shapes), _cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    cached = data.get(key)
    times = cached.get("times_us") if isinstance(cached, dict) else None
    times = dict(times) if isinstance(times, dict) and set(times) == set(KERNELS[fmt]) else None
    if times is not None and all(not isinstance(v, dict) or at in v for v in times.values()):
        source = f"cached from an earlier run ({path})"
    else:
        source, old = "measured in this run", times or {}
        times = {}
        for kernel in KERNELS[fmt]:
            why = probe(fmt, kernel, "cuda")
            prev = old.get(kernel) if isinstance(old.get(kernel), dict) else {}
            times[kernel] = why if why else {**prev, **measure(fmt, kernel, shapes, (rows,))}
    timed = {k: v for k, v in times.items() if isinstance(v, dict)}
    if not timed:
        raise RuntimeError(f"no {fmt} kernel runs here: " + "; ".join(str(v) for v in times.values()))
    best = min(timed, key=lambda k: timed[k][at])
    if source == "measured in this run":
        try:
            data[key] = {"kernel_at": {**(cached.get("kernel_at", {}) if isinstance(cached, dict) else {}), at: best},
                         "times_us": times}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # a read-only cache costs the next process a re-measurement, nothing else
    return best, times, source


def kernel_summary(model: nn.Module) -> str:
    """'GemLiteLinearTriton x129, Int4TilePackedTo4dTensor x2' over the whole model."""
    gl = sum(type(m).__name__.startswith("GemLite") for m in model.modules())
    held = linear_weight_types(model)
    return f"GemLiteLinearTriton x{gl}" + (f", {held}" if held else "") if gl else held


def whole_model_kernel(kernel: str, model: nn.Module) -> str:
    """`kernel` (one part's "<what> -> <summary>") with the summary taken over the whole `model` (the
    layer-by-layer build applies a variant to one layer at a time)."""
    head, sep, _ = kernel.partition(" -> ")
    return _described(head, model) if sep else kernel


def _described(head: str, model: nn.Module) -> str:
    """'<head> -> <the model's linear types>[; the prefill kernel where it differs]'."""
    fmt = head.split("[")[0]
    return f"{head} -> {kernel_summary(model)}{phases(model, fmt) if fmt in KERNELS else ''}"


def apply_kernel(fmt: str, kernel: str, model: nn.Module, ctx: ApplyContext, notes: str = "") -> ApplyResult:
    apply, what, _ = KERNELS[fmt][kernel]
    n = apply(model, ctx)
    return ApplyResult(kernel=_described(f"{fmt}[{kernel}]: {what}", model), layers_changed=n, notes=notes)


def apply_auto(fmt: str, model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    kernel, times, source = choose(fmt, model, ctx)
    parts = []
    for k, v in times.items():
        parts.append(f"{k} " + (" / ".join(f"{m} {t:.0f} us" for m, t in v.items()) if isinstance(v, dict) else
                                f"unavailable ({v})"))
    note = (f"{fmt} kernel chosen by measurement at M={max(1, int(ctx.decode_rows))} (the cell's batch; {source}); "
            "summed linear time per step: "
            + "; ".join(parts))
    return apply_kernel(fmt, kernel, model, ctx, notes=note)
