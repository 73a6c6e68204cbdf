"""Generation engines: one pass = prefill (prompt -> first token) + greedy decode steps.

The eager engine is the CPU path: a plain loop over the model's forward with a dynamic KV cache,
timed with perf_counter (CPU work is synchronous, so host clocks see the real compute).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from harness.backends.base import PassResult


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EagerEngine:
    """Plain forward loop with transformers' DynamicCache. On CUDA each step is synchronized for
    timing, so at batch 1 this measures launch and interpreter overhead as much as the GPU."""

    name = "eager"
    timing_source = "perf_counter"
    setup_s = 0.0

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model, device

    @torch.inference_mode()
    def run_pass(self, ids: torch.Tensor, new_tokens: int) -> PassResult:
        from transformers import DynamicCache

        if new_tokens < 1:
            raise ValueError("new_tokens must be >= 1")
        ids = ids.to(self.device)
        cache = DynamicCache()
        out_tokens = torch.empty((ids.shape[0], new_tokens), dtype=torch.long, device=self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        nxt = logits[:, -1].argmax(-1)
        out_tokens[:, 0] = nxt
        _sync(self.device)
        prefill_s = time.perf_counter() - t0
        steps: list[float] = []
        for i in range(1, new_tokens):
            ts = time.perf_counter()
            logits = self.model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True).logits
            nxt = logits[:, -1].argmax(-1)
            out_tokens[:, i] = nxt
            _sync(self.device)
            steps.append(time.perf_counter() - ts)
        return PassResult(prefill_s, steps, out_tokens.cpu())

    def run_prefill(self, ids: torch.Tensor) -> None:
        """Prompt forward + first token only (the prefill loop of the two-loop energy method)."""
        self.run_pass(ids, 1)
