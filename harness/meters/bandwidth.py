"""Bandwidth and FLOP utilization: a measured copy ceiling, and the arithmetic that turns a decode or
prefill rate into bytes/s and FLOP/s.

MBU = achieved decode bandwidth / reference bandwidth. The reference is the device-to-device copy
bandwidth measured in the same run (bytes read + written; lab H100: 3.02 TB/s, anchors.md), or the
profile's peak where stated; the caller picks and labels it. MFU = achieved prefill FLOP/s / the
profile's peak for the format.

FLOP counts (a multiply-add is 2 FLOPs; norms, activations, softmax, RoPE and the embedding gather
are ignored, under 1% at these shapes):
  matmul params  N_mm = layers x (q,k,v,o,gate,up,down in x out) + vocab x hidden (lm_head)
  decode, per token at context c:   2 N_mm + 4 x layers x heads x head_dim x c
      (QK^T and attention-weights x V: 2 x heads x head_dim x c each)
  prefill, per sequence of P tokens: 2 x layers x block_params x P + 2 x vocab x hidden x (1 or P)
      + 2 x layers x heads x head_dim x P (P + 1)      (causal: token i attends to i keys)
Bytes per decode step: all weight bytes once (shared by the batch) + batch x c x KV bytes per token.
The embedding table is counted in weight bytes though only B rows of it are read; this matches the
lab's 188 tok/s ceiling (3.02 TB/s / 16.06 GB) and overstates bytes by vocab x hidden x bytes.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class Throughput:
    value_per_s: float              # bytes/s for a copy, FLOP/s for a matmul
    samples_per_s: tuple[float, ...]
    method: str


def _device(device):
    import torch

    return torch.device(device)


def _time_repeats(fn, dev, iters: int, repeats: int, warmup: int) -> list[float]:
    """Seconds for `iters` calls of fn, per repeat: CUDA events on a GPU, perf_counter on CPU."""
    import torch

    for _ in range(warmup):
        fn()
    out = []
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(iters):
                fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            out.append(time.perf_counter() - t0)
    return out


def measure_copy_bandwidth(device="cuda", buffer_bytes: int = 2 * GIB, iters: int = 10, repeats: int = 5,
                           warmup: int = 2) -> Throughput:
    """Median bytes/s of dst.copy_(src) on one device, counting bytes read + written (2 x buffer).
    Needs 2 x buffer_bytes free on the device."""
    import torch

    dev = _device(device)
    n = buffer_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    moved = 2 * n * 4 * iters
    secs = _time_repeats(lambda: dst.copy_(src), dev, iters, repeats, warmup)
    samples = tuple(moved / s for s in secs if s > 0)
    timing = "CUDA events" if dev.type == "cuda" else "perf_counter"
    del src, dst
    return Throughput(statistics.median(samples), samples,
                      f"{dev} copy of {buffer_bytes / GIB:.3g} GiB, bytes read + written, {timing}, "
                      f"median of {repeats} x {iters} copies")


def measure_matmul_flops(device="cuda", n: int = 8192, dtype: str = "bfloat16", iters: int = 20,
                         repeats: int = 3, warmup: int = 3) -> Throughput:
    """Median FLOP/s of an n x n x n matmul (2 n^3 FLOPs): a measured compute ceiling beside the
    profile's datasheet peak."""
    import torch

    dev = _device(device)
    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    secs = _time_repeats(lambda: a @ b, dev, iters, repeats, warmup)
    samples = tuple(2 * n**3 * iters / s for s in secs if s > 0)
    return Throughput(statistics.median(samples), samples,
                      f"{dev} {dtype} matmul {n}^3, median of {repeats} x {iters}")


def mean_decode_context(prompt_tokens: int, new_tokens: int) -> float:
    """Mean keys attended over decode steps k = 1..new_tokens-1 (context prompt + k): prompt + new/2."""
    return prompt_tokens + new_tokens / 2


def decode_bytes_per_step(weight_bytes: int, kv_bytes_per_token: float, context_len: float, batch: int) -> float:
    """Bytes a decode step must read: weights once + each sequence's KV cache up to `context_len`."""
    return weight_bytes + batch * context_len * kv_bytes_per_token


def achieved_bandwidth(bytes_per_step: float, steps_per_s: float | None) -> float | None:
    """Bytes/s. A step produces `batch` tokens: steps_per_s = decode_tok_s / batch."""
    return None if steps_per_s is None else bytes_per_step * steps_per_s


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b or b <= 0 else a / b


def mbu(achieved_bytes_per_s: float | None, reference_bytes_per_s: float | None) -> float | None:
    """Share of a reference bandwidth (measured copy, or the profile's peak): a fraction, not %."""
    return _ratio(achieved_bytes_per_s, reference_bytes_per_s)


def achieved_flops(flops: float, seconds: float | None) -> float | None:
    return None if seconds is None or seconds <= 0 else flops / seconds


def mfu(achieved_flops_per_s: float | None, peak_flops_per_s: float | None) -> float | None:
    return _ratio(achieved_flops_per_s, peak_flops_per_s)


def matmul_params(shape) -> int:
    """N_mm for a harness.models.presets.ArchShape: every block's linears plus the lm_head."""
    return shape.num_hidden_layers * shape.block_linear_params() + shape.lm_head_params()


def _attn_width(shape) -> int:
    return shape.num_hidden_layers * shape.num_attention_heads * shape.head_dim_


def decode_flops_per_token(shape, context_len: float) -> float:
    return 2 * matmul_params(shape) + 4 * _attn_width(shape) * context_len


def prefill_flops(shape, batch: int, prompt_tokens: int, logits_for_all: bool = False) -> float:
    """FLOPs of one prefill forward. `logits_for_all`: lm_head on every position (a plain HF forward)
    rather than the last one only (a generation engine)."""
    p = prompt_tokens
    blocks = 2 * shape.num_hidden_layers * shape.block_linear_params() * p
    head = 2 * shape.lm_head_params() * (p if logits_for_all else 1)
    attn = 2 * _attn_width(shape) * p * (p + 1)
    return batch * (blocks + head + attn)
