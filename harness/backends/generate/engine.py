"""transformers' own `generate()` (eager, dynamic cache, greedy): what users get by default.

Timing: a LogitsProcessor is called once per generated token, right after the forward that produced
its logits; it synchronizes the device and stamps perf_counter. The first stamp closes prefill (TTFT),
each later interval is one decode step. generate() already synchronizes every step (its stopping
check reads a device tensor), so the stamps add no synchronization of their own to speak of.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from harness.backends.base import PassResult
from harness.backends.pytorch.engine import _sync


class _Stamps:
    def __init__(self, device: torch.device):
        self.device, self.t = device, []

    def __call__(self, input_ids, scores):
        _sync(self.device)
        self.t.append(time.perf_counter())
        return scores


class GenerateEngine:
    name = "hf-generate"
    timing_source = "perf_counter"
    setup_s = 0.0

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model, device

    @torch.inference_mode()
    def run_pass(self, ids: torch.Tensor, new_tokens: int) -> PassResult:
        from transformers import LogitsProcessorList

        ids = ids.to(self.device)
        stamps = _Stamps(self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                                  logits_processor=LogitsProcessorList([stamps]),
                                  pad_token_id=self.model.config.eos_token_id or 0)
        _sync(self.device)
        t = [t0] + stamps.t
        steps = [b - a for a, b in zip(t[1:], t[2:])]
        return PassResult(prefill_s=t[1] - t[0], step_s=steps, tokens=out[:, ids.shape[1]:].cpu())

    def run_prefill(self, ids: torch.Tensor) -> None:
        self.run_pass(ids, 1)
