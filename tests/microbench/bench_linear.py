"""One linear layer per variant at the decode (M=1) and prefill (M=512) shapes of the presets.

Run by `make microbench` (pytest tests/microbench --benchmark-only --benchmark-json=...);
`harness import-microbench` turns the JSON into Records (harness/microbench.py documents the mapping).

CPU: the tiny and llama-3.2-1b shapes, the layer called eagerly, timed by pytest-benchmark's
perf_counter. GPU: the llama-3.1-8b shapes; eager calls at M=1 time Python and tensor-subclass
dispatch, not the kernel (40-600 us per call on the lab H100), so CALLS_PER_GRAPH calls are captured
in one CUDA graph and each round replays it, timed by CUDA events around the replay (per-call
figures in extra_info) and by pytest-benchmark's wall clock around replay + synchronize.
"""
from __future__ import annotations

import importlib.metadata as md
import time

import pytest
import torch
from torch import nn

from harness.backends.pytorch.device import compute_dtype
from harness.models.presets import PRESETS
from harness.variants import get_variant
from harness.variants.inspect import tensor_bytes
from harness.variants.registry import ApplyContext

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = compute_dtype(DEVICE)
# int4-awq runs the same kernels as int4-wo (its scales are folded into neighbouring ops), and needs
# a whole model to calibrate, so it is not timed here.
VARIANTS = ("baseline", "int8-wo", "int8-dq", "int4-wo", "fp8-wo", "fp8-dq", "w4a8")
PRESET_NAMES = ("llama-3.1-8b",) if DEVICE.type == "cuda" else ("tiny", "llama-3.2-1b")
LAYERS = ("up_proj", "down_proj")          # hidden -> intermediate and back: the largest matmuls
M_VALUES = (1, 512)                        # decode step at batch 1; a 512-token prefill
CALLS_PER_GRAPH = 20
GPU_ROUNDS, GPU_WARMUP = 30, 3
# CPU rounds: at least 1 ms each (several calls per round where one is shorter), about 1 s in all,
# 5 to 200 of them, so a record's per-round samples stay few and each is above timer noise.
CPU_MIN_ROUND_S, CPU_TARGET_S, CPU_ROUNDS = 1e-3, 1.0, (5, 200)


def _shapes():
    for preset in PRESET_NAMES:
        dims = {name: (k, n) for name, k, n in PRESETS[preset].linear_shapes()}
        for layer in LAYERS:
            yield preset, layer, *dims[layer]


SHAPES = list(_shapes())


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _device_name() -> str:
    if DEVICE.type == "cuda":
        return f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
    return "cpu"


def _time_cuda_graph(benchmark, layer: nn.Module, x: torch.Tensor) -> dict:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):            # warm-up off the capture stream (torch.cuda.graphs docs)
        for _ in range(3):
            layer(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS_PER_GRAPH):
            layer(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per_call_s: list[float] = []

    def replay():
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        per_call_s.append(start.elapsed_time(end) / 1e3 / CALLS_PER_GRAPH)   # elapsed_time is in ms

    benchmark.pedantic(replay, rounds=GPU_ROUNDS, warmup_rounds=GPU_WARMUP, iterations=1)
    return {"calls_per_round": CALLS_PER_GRAPH, "timing_source": "cuda_events", "decode_path": "cuda-graph",
            "event_s_per_call": per_call_s[GPU_WARMUP:]}


def _time_eager(benchmark, layer: nn.Module, x: torch.Tensor) -> dict:
    layer(x)
    t0 = time.perf_counter()
    layer(x)
    one = max(time.perf_counter() - t0, 1e-7)
    iterations = max(1, int(CPU_MIN_ROUND_S / one))
    rounds = min(CPU_ROUNDS[1], max(CPU_ROUNDS[0], int(CPU_TARGET_S / (one * iterations))))
    benchmark.pedantic(layer, args=(x,), rounds=rounds, iterations=iterations, warmup_rounds=1)
    # pytest-benchmark stores per-iteration seconds, so one round's figure is already one call
    return {"calls_per_round": 1, "timing_source": "perf_counter", "decode_path": "eager"}


@pytest.mark.parametrize("m", M_VALUES, ids=lambda m: f"M{m}")
@pytest.mark.parametrize("preset, layer_name, k, n", SHAPES, ids=[f"{p}:{l}" for p, l, _, _ in SHAPES])
@pytest.mark.parametrize("variant", VARIANTS)
def test_linear(benchmark, variant, preset, layer_name, k, n, m):
    v = get_variant(variant)
    cc = torch.cuda.get_device_capability(DEVICE) if DEVICE.type == "cuda" else None
    why = v.unsupported_reason(DEVICE.type, cc)
    if why:
        pytest.skip(why)
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(k, n, bias=False, device=DEVICE, dtype=DTYPE)).requires_grad_(False)
    nn.init.normal_(dense[0].weight, std=0.02)
    layer = nn.Sequential(nn.Linear(k, n, bias=False, device=DEVICE, dtype=DTYPE)).requires_grad_(False)
    layer[0].weight.copy_(dense[0].weight)
    applied = v.apply(layer, ApplyContext(DEVICE.type, DTYPE))
    x = torch.randn(m, k, device=DEVICE, dtype=DTYPE)
    with torch.inference_mode():
        ref = dense(x).float()
        rel_err = ((layer(x).float() - ref).norm() / ref.norm()).item()
        timing = (_time_cuda_graph if DEVICE.type == "cuda" else _time_eager)(benchmark, layer, x)
    benchmark.extra_info.update({
        "variant": variant, "shape": f"{preset}:{layer_name}", "preset": preset, "layer": layer_name,
        "in_features": k, "out_features": n, "m": m, "kernel": applied.kernel, "device": _device_name(),
        "dtype": str(DTYPE).replace("torch.", ""), "weight_bytes": tensor_bytes(layer),
        "rel_err_vs_dense": rel_err, "threads": torch.get_num_threads(),
        "versions": {p: _version(p) for p in ("torch", "torchao")}, **timing,
    })
