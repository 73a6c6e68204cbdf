"""Running a GGUF file through llama-cpp-python: the token loop, and full-sequence logits for quality.

Timed region of `LlamaCppEngine.run_pass`, matching the torch EagerEngine's: prefill_s = Llama.eval of
the prompt (llama_decode over it in n_batch chunks, logits of the last position only) + the greedy pick
from those logits; each later step = Llama.eval of the one new token (llama_decode with the KV cache)
+ the greedy pick. The pick is numpy's argmax over the context's last logits row (llama_get_logits_ith),
not a llama.cpp sampler, so EOS is never special and every pass runs exactly `new_tokens` steps.
Llama.reset() (the KV cache is cleared at the next eval) is outside the region. llama.cpp on the CPU
returns from llama_decode with the work done, so perf_counter brackets finished work.

Llama.generate also yields token by token, but through the sampler chain (top-k/p, temperature,
repetition penalty), which would time llama-cpp-python's sampling defaults, not the model.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.backends.base import PassResult

LOGGER = "llama-cpp-python"


def open_llama(path: Path, n_ctx: int, threads: int, logits_all: bool):
    """A llama_cpp.Llama on `path` (CPU, mmap), quiet; n_batch = n_ubatch = n_ctx so that a prompt or
    a quality window is one llama_decode."""
    from llama_cpp import Llama

    logging.getLogger(LOGGER).setLevel(logging.ERROR)
    return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                 n_threads_batch=threads, n_gpu_layers=0, logits_all=logits_all, use_mmap=True,
                 verbose=False)


class LlamaCppEngine:
    """Greedy generation on one llama.cpp context of `n_ctx` tokens, one sequence."""

    name = "llama-cpp-python"
    timing_source = "perf_counter"
    setup_s = 0.0

    def __init__(self, path: Path, n_ctx: int, threads: int):
        t0 = time.perf_counter()
        self.path, self.n_ctx, self.threads = Path(path), n_ctx, threads
        self.llm = open_llama(self.path, n_ctx, threads, logits_all=False)
        self.n_vocab = self.llm.n_vocab()
        self.setup_s = time.perf_counter() - t0

    def _next(self) -> int:
        import llama_cpp

        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        return int(row.argmax())

    def run_pass(self, ids: torch.Tensor, new_tokens: int) -> PassResult:
        if new_tokens < 1:
            raise ValueError("new_tokens must be >= 1")
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise ValueError(f"ids must be (1, prompt): llama.cpp runs one sequence here; got {tuple(ids.shape)}")
        prompt = ids[0].tolist()
        if len(prompt) + new_tokens > self.n_ctx:
            raise ValueError(f"{len(prompt)} + {new_tokens} tokens exceed the context of {self.n_ctx}")
        out = np.empty((1, new_tokens), dtype=np.int64)
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = self._next()
        prefill_s = time.perf_counter() - t0
        out[0, 0] = tok
        steps: list[float] = []
        for i in range(1, new_tokens):
            ts = time.perf_counter()
            llm.eval([tok])
            tok = self._next()
            steps.append(time.perf_counter() - ts)
            out[0, i] = tok
        return PassResult(prefill_s, steps, torch.from_numpy(out))

    def run_prefill(self, ids: torch.Tensor) -> None:
        """Prompt forward + first token only (the prefill loop of the two-loop energy method)."""
        self.run_pass(ids, 1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()


class LlamaLogits:
    """float32 logits at every position (logits_all=True), from an empty KV cache per call."""

    def __init__(self, path: Path, n_ctx: int, threads: int):
        self.n_ctx = n_ctx
        self.llm = open_llama(Path(path), n_ctx, threads, logits_all=True)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """(seq, vocab) for ids (seq,); (1, seq, vocab) for (1, seq)."""
        squeeze = ids.dim() == 1
        rows = ids.reshape(1, -1) if squeeze else ids
        if rows.shape[0] != 1:
            raise ValueError(f"one sequence at a time, got shape {tuple(ids.shape)}")
        toks = rows[0].tolist()
        if len(toks) > self.n_ctx:
            raise ValueError(f"{len(toks)} tokens exceed the logits context of {self.n_ctx}")
        self.llm.reset()
        self.llm.eval(toks)
        out = torch.from_numpy(np.array(self.llm.scores[:len(toks)], dtype=np.float32))
        return out if squeeze else out.unsqueeze(0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()


class LogitsModule(nn.Module):
    """LlamaLogits behind nn.Module's call, for harness.quality.evaluate(module, reference), which calls
    model(input_ids=(1, seq), logits_to_keep=k); no parameters, so evaluate keeps the ids on the CPU."""

    def __init__(self, logits: LlamaLogits):
        super().__init__()
        self._logits = logits

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int | None = None) -> torch.Tensor:
        out = self._logits(input_ids)
        return out[..., -logits_to_keep:, :] if logits_to_keep else out
