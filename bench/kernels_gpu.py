"""Weight-only kernels at the linear shapes of one decoder block of a preset (default Llama-3.1-8B), timed
per call inside a CUDA graph of `--calls` back-to-back calls (CUDA events; the graph removes Python
launch time, as the engine does).

    python3 bench/kernels_gpu.py [--model llama-3.1-70b] [--m 1,8,32,2048] [--kernels "bf16,int4"] [--out F.json]

The block's linears as the lean decoder runs them: q/k/v fused (qkv), o, gate/up fused (gate_up), down.
The first line printed names the preset (`shapes of <preset>: ...`), so a log says which block it timed.

Kernels: bf16 cuBLAS (F.linear), torchao Int4WeightOnlyConfig with tile_packed_to_4d (tinygemm) and
preshuffled (mslk CUTLASS) packings, torchao Float8WeightOnlyConfig, torchao's w4a8
(Float8DynamicActivationInt4WeightConfig: mslk's fp8 x int4 CUTLASS GEMM with the activation quantized per
call), GemLite's Triton kernels (A16W4 group 128, A16W8 fp8 and int8 channel-wise). GB/s is weight bytes read per call / time.
A kernel that fails prints its error and is recorded with it (no figure).
"""
from __future__ import annotations

import argparse
import json
import traceback

import torch
from torch import nn


def torchao_linear(lin: nn.Linear, cfg) -> nn.Module:
    from torchao.quantization import quantize_
    m = nn.Sequential(lin)
    quantize_(m, cfg)
    return m


def gemlite_int4(lin: nn.Linear) -> nn.Module:
    from harness.variants.gpu_kernels import int4_gemlite_linear
    return int4_gemlite_linear(lin)


def gemlite_w8(lin: nn.Linear, fp8: bool) -> nn.Module:
    from gemlite.helper import A16W8_INT8

    from harness.variants.gpu_kernels import fp8_gemlite_linear
    return fp8_gemlite_linear(lin) if fp8 else A16W8_INT8(device="cuda", dtype=torch.bfloat16).from_linear(
        lin, del_orig=False)


def gemlite_dequant(inner: nn.Module) -> nn.Module:
    from harness.variants.gemlite import DequantPrefill
    return DequantPrefill(inner, 0)


def min_rows(kname: str) -> int:
    """The smallest M a kernel runs at in the harness: GemLite's dequantized path only above its threshold."""
    from harness.plan.kernel_names import DEQUANT_PREFIX
    from harness.variants.catalog import GEMLITE_PREFILL_MIN_ROWS
    return GEMLITE_PREFILL_MIN_ROWS if kname.startswith(DEQUANT_PREFIX) else 1


def weight_bytes(mod: nn.Module) -> int:
    seen, n = set(), 0
    for t in list(mod.parameters()) + list(mod.buffers()):
        inner = [t]
        if hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            inner = [getattr(t, a) for a in names]
        for x in inner:
            if isinstance(x, torch.Tensor) and x.data_ptr() not in seen:
                seen.add(x.data_ptr())
                n += x.numel() * x.element_size()
    return n


def time_call(fn, x, calls: int) -> float:
    from harness.variants.gpu_kernels import time_call as timed
    return timed(fn, x, calls)


def kernels():
    from torchao.quantization import Float8DynamicActivationInt4WeightConfig, Float8WeightOnlyConfig, Int4WeightOnlyConfig
    # the CUTLASS kernels before GemLite's (whose Triton autotuning at large blocks can take minutes), so a
    # timed-out call still holds them
    return {
        "bf16 cuBLAS": lambda lin: lin,
        "int4 tinygemm (torchao tile_packed_to_4d)": lambda lin: torchao_linear(
            lin, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")),
        "int4 CUTLASS (torchao preshuffled, mslk)": lambda lin: torchao_linear(
            lin, Int4WeightOnlyConfig(group_size=128, int4_packing_format="preshuffled")),
        # w4a8: the activation's dynamic fp8 quantization (mslk Triton) + mslk's fp8 x int4 CUTLASS GEMM, as
        # the registry's w4a8 variant runs them (harness/variants/quant.py)
        "w4a8 CUTLASS (torchao Float8DynamicActivationInt4WeightConfig, mslk)": lambda lin: torchao_linear(
            lin, Float8DynamicActivationInt4WeightConfig()),
        "fp8 GemLite A16W8": lambda lin: gemlite_w8(lin, fp8=True),
        "int4 GemLite A16W4 g128": gemlite_int4,
        # GemLite's prefill path in the harness (harness/variants/gemlite.py DequantPrefill): above
        # GEMLITE_PREFILL_MIN_ROWS rows the weights are unpacked to bf16 in one compiled kernel and cuBLAS runs;
        # timed from that many rows up (min_rows 0 here: the path at every M timed)
        "dequantized prefill: int4 GemLite A16W4 g128 (unpack + cuBLAS)": lambda lin: gemlite_dequant(gemlite_int4(lin)),
        "dequantized prefill: fp8 GemLite A16W8 (unpack + cuBLAS)": lambda lin: gemlite_dequant(gemlite_w8(lin, fp8=True)),
        "fp8 torchao Float8WeightOnlyConfig": lambda lin: torchao_linear(lin, Float8WeightOnlyConfig()),
        "int8 GemLite A16W8": lambda lin: gemlite_w8(lin, fp8=False),
    }


def compile_check() -> str:
    """GemLite under torch.compile(fullgraph) inside a CUDA graph, as the engine runs a step."""
    try:
        lin = nn.Linear(4096, 4096, bias=False, device="cuda", dtype=torch.bfloat16)
        ref = lin(torch.ones(1, 4096, device="cuda", dtype=torch.bfloat16))
        mod = gemlite_int4(lin)
        f = torch.compile(lambda x: mod(x) * 2, fullgraph=True)
        x = torch.ones(1, 4096, device="cuda", dtype=torch.bfloat16)
        us = time_call(f, x, 10)
        err = ((f(x) / 2 - ref).abs().max() / ref.abs().max()).item()
        return f"ok: compiled+graph {us:.1f} us/call, max rel err vs bf16 {err:.3f}"
    except Exception as e:  # noqa: BLE001
        return f"failed: {type(e).__name__}: {str(e)[:300]}"


def gemlite_configs() -> str:
    from harness.variants.gpu_kernels import gemlite_configs as configs
    return configs()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3.1-8b", help="preset whose block shapes are timed")
    ap.add_argument("--m", default="1,8,32,2048")
    ap.add_argument("--kernels", default="", help="comma-separated prefixes of the kernel names to time (default all)")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from harness.plan.kernel_log import block_shapes
    try:
        shapes = block_shapes(args.model)
    except ValueError as e:
        ap.error(f"--model {e}")
    wanted = [k.strip() for k in args.kernels.split(",") if k.strip()]
    print(f"shapes of {args.model}: " + ", ".join(f"{n} {a}x{b}" for n, (a, b) in shapes.items()), flush=True)
    torch.manual_seed(0)
    try:
        cfg_note = gemlite_configs()
    except Exception as e:  # noqa: BLE001
        cfg_note = f"gemlite not importable: {type(e).__name__}: {e}"
    print(cfg_note, flush=True)
    rows = []
    for kname, make in kernels().items():
        if wanted and not any(kname.startswith(w) for w in wanted):
            continue
        for sname, (N, K) in shapes.items():
            lin = nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16)
            try:
                mod = make(lin)
                wb = weight_bytes(mod)
            except Exception as e:  # noqa: BLE001
                rows.append({"kernel": kname, "shape": sname, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                print(kname, sname, "build failed:", rows[-1]["error"], flush=True)
                continue
            for M in [int(m) for m in args.m.split(",") if int(m) >= min_rows(kname)]:
                x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
                try:
                    with torch.inference_mode():
                        # fewer calls per graph at large M: a graph of 20 calls at M = 65,536 runs seconds,
                        # long enough to reach the board's power cap (bench/power_gpu.py)
                        us = time_call(mod, x, args.calls if M < 1024 else 5 if M < 16384 else 1)
                    rows.append({"kernel": kname, "shape": sname, "N": N, "K": K, "M": M, "us": us,
                                 "weight_bytes": wb, "weight_GBps": wb / us / 1e3,
                                 "tflops": 2 * M * N * K / us / 1e6})
                    print(f"{kname:45s} {sname:8s} M={M:5d} {us:9.1f} us {wb / us / 1e3:8.0f} GB/s "
                          f"{2 * M * N * K / us / 1e6:7.1f} TFLOP/s", flush=True)
                except Exception as e:  # noqa: BLE001
                    rows.append({"kernel": kname, "shape": sname, "M": M, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                    print(kname, sname, M, "failed:", rows[-1]["error"], flush=True)
                    traceback.print_exc(limit=2)
            del mod, lin
            torch.cuda.empty_cache()
    chk = compile_check()
    print("gemlite under torch.compile + CUDA graph:", chk)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "model": args.model, "rows": rows, "gemlite_compile": chk,
           "gemlite_configs": cfg_note}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
