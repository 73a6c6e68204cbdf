"""GPU generation engine: static KV cache, prefill as one forward, and the decode step (forward +
greedy argmax + cache/position update) captured as one CUDA graph, optionally compiled first with
inductor. Timing with CUDA events recorded between graph replays: no host synchronization inside
the timed decode loop; one synchronize at the end of the pass reads all events.

Set-up (compilation, capture, warm-up) happens in __init__ and is reported as setup_s, outside the
timed region.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from harness.backends.base import PassResult
from harness.backends.pytorch.lean import LeanDecoder

# Prefill is captured as a graph only while small: for large B x T the launch overhead is
# negligible next to the math, and a captured graph would pin its activations in a private pool.
PREFILL_GRAPH_MAX_TOKENS = 8192


def mean_replay_s(fn, n: int, device) -> float:
    """Mean seconds of `n` back-to-back calls of `fn` (a graph replay), timed by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1e3 / n


def _inductor_settings(tune: bool) -> None:
    import torch._dynamo.config as dc
    import torch._inductor.config as ic

    # Each cell compiles its own step (shapes differ); dynamo is reset between cells, so this limit
    # is only a guard against silently falling back to eager after many recompiles.
    dc.cache_size_limit = max(dc.cache_size_limit, 64)
    # Coordinate-descent tuning of the generated kernels. Lab H100, 8B bf16 batch 1 (2026-11-22): 159
    # tok/s untuned; 158.5-174.2 tuned over five runs; torchao int8 weight-only 14.9 untuned, 220-240
    # tuned. 40-60 s more compile time per cell.
    ic.coordinate_descent_tuning = tune


# Tuning pays at batch 1, where decode is memory-bound with tiny GEMVs; above it, matmuls go to cuBLAS
# and tuning costs compile time for little gain.
TUNE_MAX_BATCH = 1
# default: inductor's defaults. max-autotune: benchmark Triton GEMM templates against cuBLAS and fuse
# pointwise prologues (e.g. a weight's dequantization) into them; minutes of compilation per cell.
COMPILE_MODES = ("default", "max-autotune")


class CudaGraphEngine:
    timing_source = "cuda_events"

    def __init__(self, model: nn.Module, device: torch.device, batch: int, prompt_tokens: int, new_tokens: int,
                 compile_step: bool = True, tune: bool | None = None,
                 compile_mode: str = "default", decode_attention: str = "sdpa"):
        t0 = time.perf_counter()
        self.device, self.B, self.P, self.N = device, batch, prompt_tokens, new_tokens
        # FlexAttention only inside the compiled step (lean.DECODE_ATTENTION)
        self.decode_attention = decode_attention if compile_step else "sdpa"
        self.dec = LeanDecoder(model, batch, prompt_tokens + new_tokens, decode_attention=self.decode_attention)
        self.name = "compiled+cuda-graph" if compile_step else "cuda-graph"
        self.tuned = compile_step and (tune if tune is not None else batch <= TUNE_MAX_BATCH)
        if compile_step:
            _inductor_settings(self.tuned)
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
        self.compile_mode = compile_mode if compile_step else None
        # max-autotune without inductor's own CUDA graphs: the step is captured in ours
        mode = "max-autotune-no-cudagraphs" if compile_mode == "max-autotune" else None
        self.step = torch.compile(self.dec, fullgraph=True, dynamic=False, mode=mode) if compile_step else self.dec
        z = dict(device=device, dtype=torch.long)
        self.prompt = torch.zeros((batch, prompt_tokens), **z)
        self.prompt_pos = torch.arange(prompt_tokens, device=device)
        self.tok = torch.zeros((batch, 1), **z)
        self.pos = torch.zeros((1,), **z)
        self.idx = torch.zeros((1,), **z)
        self.out = torch.zeros((batch, new_tokens), **z)
        self.g_prefill = None
        self.g_decode = None
        self.prefill_fn = self.dec        # the eager prefill; choose_prefill may put the compiled one here
        self.prefill = {"chosen": "eager", "source": "not compared"}
        with torch.inference_mode():
            self._capture()
        self.setup_s = time.perf_counter() - t0

    # graph bodies: only tensor ops on static buffers
    def _prefill_body(self) -> None:
        nxt = self.prefill_fn(self.prompt, self.prompt_pos).argmax(-1)
        self.out[:, 0] = nxt
        self.tok.copy_(nxt[:, None])
        self.pos.fill_(self.P)
        self.idx.fill_(1)

    def _decode_body(self) -> None:
        nxt = self.step(self.tok, self.pos).argmax(-1)
        self.out.index_copy_(1, self.idx, nxt[:, None])
        self.tok.copy_(nxt[:, None])
        self.pos.add_(1)
        self.idx.add_(1)

    def _capture(self) -> None:
        # warm-up: compilation, cuBLAS/cuSPARSELt handles, autotuning
        self._warm(lambda: (self._prefill_body(), self._decode_body()), 3)
        if self.N > 1:
            self.g_decode = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.g_decode):
                self._decode_body()
        self.g_prefill = self._prefill_graph()
        torch.cuda.synchronize(self.device)

    def _warm(self, fn, n: int) -> None:
        """`n` calls of `fn` on a side stream before a graph capture (as CUDA graphs require), synchronized."""
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(n):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(s)
        torch.cuda.synchronize(self.device)

    def _prefill_graph(self) -> "torch.cuda.CUDAGraph | None":
        """The prefill captured as a graph (None above PREFILL_GRAPH_MAX_TOKENS: run as calls)."""
        if self.B * self.P > PREFILL_GRAPH_MAX_TOKENS:
            return None
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._prefill_body()
        return g

    def _prefill_s(self, n: int = 3) -> float:
        """Mean seconds of `n` prefills as the pass runs them (graph replays, or calls), CUDA events."""
        return mean_replay_s(self.g_prefill.replay if self.g_prefill is not None else self._prefill_body, n,
                             self.device)

    @torch.inference_mode()
    def choose_prefill(self) -> dict:
        """With a compiled decode step: the prefill through the same compiled module (inductor fuses the
        norms, rotary, adds and activation that an eager prefill runs as about 40 aten kernels a layer)
        against the eager one, each timed as the pass runs it (its own graph's replays, or calls above
        PREFILL_GRAPH_MAX_TOKENS); the faster is kept and the other released. A compiled prefill that
        fails (out of memory included: the eager one ran in that memory) keeps the eager one, with the
        reason. Returns (and keeps in self.prefill) what was chosen, both times and the set-up seconds it
        took; the time is added to setup_s."""
        if self.step is self.dec:
            self.prefill = {"chosen": "eager", "source": "the decode step is not compiled"}
            return self.prefill
        t0 = time.perf_counter()
        _inductor_settings(self.tuned)   # the decode step's settings (a compile choice may have left others)
        eager_s = self._prefill_s()
        keep_fn, keep_graph = self.prefill_fn, self.g_prefill
        try:
            self.prefill_fn, self.g_prefill = self.step, None
            self._warm(self._prefill_body, 2)   # compilation for the prompt's shape, then a warm call
            self.g_prefill = self._prefill_graph()
            compiled_s = self._prefill_s()
        except Exception as e:  # noqa: BLE001  (the eager prefill stays; the record says why)
            if "CUDA error" in str(e) and not isinstance(e, torch.OutOfMemoryError):
                raise   # a poisoned context: nothing else can run here
            # out of memory too: the eager prefill ran in this memory before the compiled one was tried
            self.prefill_fn, self.g_prefill = keep_fn, keep_graph
            torch.cuda.empty_cache()
            self.prefill = {"chosen": "eager", "eager_s": eager_s, "source": "measured in this run",
                            "compiled": f"failed: {type(e).__name__}: {str(e)[:200]}"}
        else:
            if compiled_s < eager_s:
                del keep_graph
                chosen = "compiled"
            else:
                self.prefill_fn, self.g_prefill = keep_fn, keep_graph
                chosen = "eager"
            self.prefill = {"chosen": chosen, "eager_s": eager_s, "compiled_s": compiled_s,
                            "source": "measured in this run"}
        torch.cuda.synchronize(self.device)
        self.prefill["setup_s"] = time.perf_counter() - t0
        self.setup_s += self.prefill["setup_s"]
        return self.prefill

    @torch.inference_mode()
    def run_pass(self, ids: torch.Tensor, new_tokens: int) -> PassResult:
        if ids.shape != (self.B, self.P) or new_tokens != self.N:
            raise ValueError(f"engine captured for batch {self.B}, prompt {self.P}, new {self.N}; got "
                             f"{tuple(ids.shape)}, new {new_tokens}")
        self.prompt.copy_(ids, non_blocking=True)
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(self.N + 1)]
        torch.cuda.synchronize(self.device)
        ev[0].record()
        if self.g_prefill is not None:
            self.g_prefill.replay()
        else:
            self._prefill_body()
        ev[1].record()
        for i in range(2, self.N + 1):
            self.g_decode.replay()
            ev[i].record()
        torch.cuda.synchronize(self.device)
        ms = [ev[i].elapsed_time(ev[i + 1]) for i in range(self.N)]
        return PassResult(prefill_s=ms[0] / 1e3, step_s=[x / 1e3 for x in ms[1:]], tokens=self.out.cpu())

    @torch.inference_mode()
    def run_prefill(self, ids: torch.Tensor) -> None:
        """Prompt forward + first token, no decode (the prefill loop of the two-loop energy method).
        No synchronization here: the energy window synchronizes at its edges."""
        self.prompt.copy_(ids, non_blocking=True)
        if self.g_prefill is not None:
            self.g_prefill.replay()
        else:
            self._prefill_body()

    @torch.inference_mode()
    def decode_step_s(self, n: int) -> float:
        """Mean seconds of up to `n` back-to-back decode-graph replays after a prefill (CUDA events),
        for comparing compile configurations on the same replays."""
        if self.g_decode is None:
            raise ValueError("no decode graph (new_tokens = 1)")
        n = max(1, min(n, self.N - 1))
        self._prefill_body()
        return mean_replay_s(self.g_decode.replay, n, self.device)

    def kv_cache_bytes(self) -> int:
        return self.dec.kv_cache_bytes()
