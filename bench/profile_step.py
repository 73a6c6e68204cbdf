"""Where one decode step's (or one prefill's) GPU time goes: torch.profiler (CUPTI kernel records) over
replays of the harness's own graphs (the CudaGraphEngine a cell runs), kernels grouped by what they do.

    python3 bench/profile_step.py --model synthetic:llama-3.1-8b --batch 1 [--variant baseline]
        [--decode-attention sdpa|flex|sdpa-packed] [--phase decode|prefill] [--prompt 2048] [--out F.json] [--layerwise]

--phase prefill profiles the prefill of the whole prompt (its graph where the engine captured one, else
the eager prefill the cell runs) instead of decode steps: the "step" figures are then per prefill.

Prints kernels per step, the summed kernel time per step, the step's wall time (CUDA events over the
same replays) and the difference (time the GPU is idle between kernels inside the graph), then the
groups and the top kernels. Measured, not estimated: every figure comes from CUPTI or CUDA events.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import torch

GROUPS = [  # first match wins; patterns over CUPTI kernel names
    # attention first: cuDNN's Hopper SDPA kernel is named ..._sdpa_sm90_flash_fprop_wgmma_..., which the
    # GEMM patterns (sm90, wgmma) would take (profiles written before 2026-12-03 have it in the GEMM group;
    # harness/plan/step_cost.py moves it back when it is among their top kernels). FlexAttention's kernels
    # are inductor templates named ..._flex_attention_...
    ("attention", r"flash|fmha|sdpa|attention|softmax"),
    ("gemm (cuBLAS/CUTLASS/nvjet)", r"gemm|gemv|nvjet|cutlass|xmma|sm90|sm100|splitk|Kernel2|wgmma"),
    ("int4/fp8 kernels (tinygemm, mslk, gemlite)", r"int4|tinygemm|_weight_int4|f8i4|bf16i4|gemlite|matmul_kernel"),
    # fused by inductor (rsqrt / mean_mul_pow) or, in an uncompiled prefill, aten's mean and pow
    ("norm (fused rmsnorm)", r"rsqrt|mean_mul_pow|norm|meanops|pow_tensor"),
    ("rotary + kv-cache write", r"cat|neg|index_copy|index_put|rotate|sin|cos"),
    ("argmax / sampling", r"argmax|max_|reduce"),
    ("activation (silu x up)", r"silu|sigmoid"),
    # the residual adds and the norm's multiplies of an uncompiled prefill are aten elementwise kernels too
    ("copy / fill / elementwise", r"copy|fill|memcpy|memset|elementwise"),
]


def group_of(name: str) -> str:
    low = name.lower()
    for g, pat in GROUPS:
        if re.search(pat, low):
            return g
    return "other"


def build_engine(args):
    from harness.backends.pytorch import lean
    from harness.backends.pytorch.cuda_engine import CudaGraphEngine
    from harness.models.loader import load_model
    from harness.variants.spec import parse_variant

    dev = torch.device("cuda")
    lm = load_model(args.model)
    spec = parse_variant(args.variant).for_batch(args.batch)   # the kernel a cell at this batch chooses
    ctx = spec.context("cuda", torch.bfloat16, None, lm.shape.num_hidden_layers)
    if args.layerwise:
        # big models on one card: built and quantized one decoder layer at a time, as the cell pipeline
        # builds a model whose bf16 instance does not fit (harness/backends/pytorch/layerwise.py)
        from transformers import AutoConfig

        from harness.backends.pytorch import layerwise

        cfg_dict = lm.shape.to_hf_config_dict()
        cfg = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        built = layerwise.build(cfg, dev, torch.bfloat16, spec, ctx, fuse=spec.entry.fusable)
        model, applied = built.model, built.result
    else:
        model = lm.instantiate(dev, torch.bfloat16)
        if spec.entry.fusable:
            lean.fuse_projections(model)
        applied = spec.apply(model, ctx)
    eng = CudaGraphEngine(model, dev, args.batch, args.prompt, args.new, compile_step=True,
                          tune=args.tune, compile_mode=args.compile_mode,
                          decode_attention=args.decode_attention)
    if args.phase == "prefill":
        eng.choose_prefill()   # the prefill the cell runs: compiled or eager, by measurement (engine.prefill)
    # (a decode profile only needs the cache filled: the eager prefill does that without a second compile)
    return eng, applied.kernel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="synthetic:llama-3.1-8b")
    ap.add_argument("--variant", default="baseline")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--compile-mode", default="default")
    ap.add_argument("--decode-attention", default="sdpa", choices=("sdpa", "flex", "sdpa-packed"))
    ap.add_argument("--phase", default="decode", choices=("decode", "prefill"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--layerwise", action="store_true",
                    help="build layer by layer (a synthetic model whose bf16 instance does not fit the GPU)")
    args = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from harness.backends.pytorch.cuda_engine import mean_replay_s

    eng, kernel = build_engine(args)
    with torch.inference_mode():
        if args.phase == "decode":
            n = min(args.steps, args.new - 1)
            wall_s = eng.decode_step_s(n)                 # CUDA events, no profiler attached
            eng._prefill_body()
            one = eng.g_decode.replay
        else:
            n = args.steps
            one = eng.g_prefill.replay if eng.g_prefill is not None else eng._prefill_body
            one()
            wall_s = mean_replay_s(one, n, eng.device)     # CUDA events, no profiler attached
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                one()
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    busy, cur_s, cur_e = 0.0, None, None                   # union of kernel intervals (us)
    for s, e in spans:
        if cur_e is None or s > cur_e:
            busy += (cur_e - cur_s) if cur_e is not None else 0.0
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += (cur_e - cur_s) if cur_e is not None else 0.0
    span_us = (spans[-1][1] - spans[0][0]) if spans else 0.0
    by_group: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in kernels:
        d = e.time_range.end - e.time_range.start
        by_group[group_of(e.name)][0] += 1
        by_group[group_of(e.name)][1] += d
        by_name[e.name][0] += 1
        by_name[e.name][1] += d
    out = {
        "model": args.model, "variant": args.variant, "batch": args.batch, "prompt": args.prompt, "new": args.new, "kernel": kernel,
        "engine": eng.name, "phase": args.phase, "layerwise": args.layerwise,
        "prefill_in_graph": eng.g_prefill is not None, "prefill_choice": eng.prefill, "tuned": eng.tuned, "decode_attention": eng.decode_attention, "steps_profiled": n,
        "step_wall_ms_cuda_events": wall_s * 1e3,
        "kernels_per_step": len(kernels) / n,
        "kernel_time_per_step_ms": sum(v[1] for v in by_group.values()) / n / 1e3,
        "busy_per_step_ms": busy / n / 1e3,
        "profiled_span_per_step_ms": span_us / n / 1e3,
        "idle_between_kernels_per_step_ms": (span_us - busy) / n / 1e3,
        "groups": {g: {"kernels_per_step": c / n, "ms_per_step": t / n / 1e3} for g, (c, t) in
                   sorted(by_group.items(), key=lambda kv: -kv[1][1])},
        "top_kernels": [{"name": k[:160], "calls_per_step": c / n, "ms_per_step": t / n / 1e3, "group": group_of(k)}
                        for k, (c, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:25]],
    }
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
