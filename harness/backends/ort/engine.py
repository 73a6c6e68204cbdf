"""Running an exported model: the onnxruntime-genai token loop, and full-sequence logits for quality.

Timed region of `OrtGenaiEngine.run_pass`, matching EagerEngine's: prefill_s = append_tokens (the
prompt forward) + the first generate_next_token (greedy pick from the prompt's last logits) + reading
that token back; each later step = one generate_next_token (a one-token forward with the KV cache, then
the greedy pick) + get_next_tokens. Creating the Generator (KV buffers of max_length) is outside it.
All EPs here hand tokens back to the host at every step, so perf_counter brackets finished work.

EOS: onnxruntime-genai ends a sequence at EOS; with min_length = max_length it masks EOS instead (its
MinLength logits processor), so every pass runs exactly `new_tokens` steps like the torch engine. The
tokens equal the torch engine's greedy ids up to the first position where EOS would have been the top
token (there torch emits EOS and goes on); the work per step is the same either way.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.backends.base import PassResult
from harness.backends.ort.eps import GENAI_PROVIDERS
from harness.backends.ort.export import empty_feed, input_names, kv_layout


def genai_config(model_dir: Path, ep: str, threads: int | None):
    """An og.Config for `model_dir` on `ep`, with `threads` intra-op threads (None: ORT's default)."""
    import onnxruntime_genai as og

    cfg = og.Config(str(model_dir))
    cfg.clear_providers()
    provider = GENAI_PROVIDERS[ep]
    if provider is not None:
        cfg.append_provider(provider)
    if threads:
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    return cfg


class OrtGenaiEngine:
    """Greedy generation through og.Generator, one timed entry per generate_next_token."""

    name = "ort-genai"
    timing_source = "perf_counter"
    setup_s = 0.0

    def __init__(self, model_dir: Path, ep: str, threads: int | None = None):
        import onnxruntime_genai as og

        self.model_dir, self.ep = Path(model_dir), ep
        self._og = og
        self.model = og.Model(genai_config(self.model_dir, ep, threads))

    def _generator(self, batch: int, total: int):
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=batch)
        return self._og.Generator(self.model, params)

    def run_pass(self, ids: torch.Tensor, new_tokens: int) -> PassResult:
        if new_tokens < 1:
            raise ValueError("new_tokens must be >= 1")
        if ids.dim() != 2:
            raise ValueError(f"ids must be (batch, prompt), got shape {tuple(ids.shape)}")
        prompt = ids.detach().cpu().numpy().astype(np.int32)
        batch = prompt.shape[0]
        gen = self._generator(batch, prompt.shape[1] + new_tokens)
        out = np.empty((batch, new_tokens), dtype=np.int64)
        t0 = time.perf_counter()
        gen.append_tokens(prompt)
        gen.generate_next_token()
        out[:, 0] = gen.get_next_tokens()
        prefill_s = time.perf_counter() - t0
        steps: list[float] = []
        for i in range(1, new_tokens):
            ts = time.perf_counter()
            gen.generate_next_token()
            out[:, i] = gen.get_next_tokens()
            steps.append(time.perf_counter() - ts)
        del gen
        return PassResult(prefill_s, steps, torch.from_numpy(out))

    def run_prefill(self, ids: torch.Tensor) -> None:
        """Prompt forward + first token only (the prefill loop of the two-loop energy method)."""
        self.run_pass(ids, 1)


class OrtLogits:
    """Full-sequence logits from an InferenceSession on the exported model.onnx with an empty KV cache
    (onnxruntime-genai hands back the last position's logits only)."""

    def __init__(self, model_dir: Path, ep: str, threads: int | None = None):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        path = model_dir / "model.onnx"
        self.session = ort.InferenceSession(str(path), opts, providers=[ep])
        self.kv, self.names = kv_layout(model_dir), input_names(path)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 logits (batch, seq, vocab) for int ids (batch, seq) or (seq,)."""
        x = ids.detach().cpu().numpy()
        squeeze = x.ndim == 1
        x = x[None, :] if squeeze else x
        logits = self.session.run(["logits"], empty_feed(x, self.kv, self.names))[0]
        out = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        return out[0] if squeeze else out


class LogitsModule(nn.Module):
    """OrtLogits behind nn.Module's call, for harness.quality.evaluate(module, reference): it calls
    model(input_ids=..., logits_to_keep=k) and reads the last k rows; it has no parameters, so
    evaluate places the ids on the CPU."""

    def __init__(self, logits: OrtLogits):
        super().__init__()
        self._logits = logits

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int | None = None) -> torch.Tensor:
        out = self._logits(input_ids)
        return out[..., -logits_to_keep:, :] if logits_to_keep else out
