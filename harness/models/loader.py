"""Load a model source once; hand out fresh instances (one per variant) on the target device."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from harness.models.presets import PRESETS, ArchShape
# EMBEDDED_GGUF and embedded_gguf_path moved to spec (torch-free); still importable from here
from harness.models.spec import (EMBEDDED_GGUF, ModelSpec, ModelSpecError, embedded_gguf_path, parse_spec,  # noqa: F401
                                 norms_per_block, remote_code, shape_of)

SYNTHETIC_SEED = 0


@dataclass
class LoadedModel:
    """A model source, loaded once. `instantiate` returns a new module for each variant, so a
    variant that rewrites weights in place never leaks into the next one."""

    spec: ModelSpec
    shape: ArchShape | None
    tokenizer: Any | None
    weights_note: str
    load_s: float
    _factory: Callable[[torch.device, torch.dtype], nn.Module]
    _token_cache: dict[str, torch.Tensor] = field(default_factory=dict)
    quality_refs: dict = field(default_factory=dict)   # the baseline's quality reference, per device/dtype

    @property
    def real_weights(self) -> bool:
        return self.spec.real_weights

    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    def instantiate(self, device: torch.device, dtype: torch.dtype) -> nn.Module:
        model = self._factory(device, dtype)
        model.eval()
        model.requires_grad_(False)
        return model

    def prompt_ids(self, corpus_name: str, corpus_text: str, batch: int, tokens: int,
                   seed: int = 0, from_end: bool = False) -> tuple[torch.Tensor, str]:
        """Token ids of shape (batch, tokens) and where they came from.

        Real models read consecutive windows of the tokenized corpus (row i starts at i * tokens);
        `from_end` takes them from the corpus tail instead (calibration data, kept apart from the
        evaluation text at the head).
        Synthetic models have no tokenizer: seeded uniform random ids (fine for speed, not quality).
        """
        if self.tokenizer is None:
            g = torch.Generator().manual_seed(seed)
            ids = torch.randint(0, self.vocab_size, (batch, tokens), generator=g)
            return ids, f"random token ids (seed {seed})"
        if corpus_name not in self._token_cache:
            enc = self.tokenizer(corpus_text, return_tensors="pt", add_special_tokens=False)
            self._token_cache[corpus_name] = enc.input_ids[0]
        all_ids = self._token_cache[corpus_name]
        need = batch * tokens
        if all_ids.numel() < need:
            reps = need // all_ids.numel() + 1
            all_ids = all_ids.repeat(reps)
        window = all_ids[-need:] if from_end else all_ids[:need]
        return window.reshape(batch, tokens).clone(), f"corpus {corpus_name} tokens" + (" (tail)" if from_end else "")

    def token_ids(self, corpus_name: str, corpus_text: str) -> torch.Tensor | None:
        """The whole tokenized corpus (1-D), or None for models without a tokenizer."""
        if self.tokenizer is None:
            return None
        self.prompt_ids(corpus_name, corpus_text, 1, 1)
        return self._token_cache[corpus_name]


def _synthetic_factory(shape: ArchShape) -> Callable[[torch.device, torch.dtype], nn.Module]:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = shape.to_hf_config_dict()
    model_type = cfg_dict.pop("model_type")

    def build(device: torch.device, dtype: torch.dtype) -> nn.Module:
        cfg = AutoConfig.for_model(model_type, **cfg_dict)
        torch.manual_seed(SYNTHETIC_SEED)
        # Built directly on the target device in the target dtype: no fp32 copy on the host.
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, trust_remote_code=False)
        finally:
            torch.set_default_dtype(prev)
        return model

    return build


def _pristine_factory(pristine: nn.Module) -> Callable[[torch.device, torch.dtype], nn.Module]:
    def build(device: torch.device, dtype: torch.dtype) -> nn.Module:
        return copy.deepcopy(pristine).to(device=device, dtype=dtype)

    return build


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_model(spec: str | ModelSpec, trust_remote_code: bool = False) -> LoadedModel:
    """`trust_remote_code` is passed to transformers explicitly on every call: left unset, transformers
    asks on stdin whether to run a checkpoint's own code (and a piped "y" would say yes)."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    why = remote_code(s)
    if why and not trust_remote_code:
        raise ModelSpecError(f"{s.text}: needs trust_remote_code ({why}); pass --trust-remote-code to allow "
                             "running its code")
    t0 = time.perf_counter()
    if s.kind == "synthetic":
        shape = PRESETS[s.preset]
        return LoadedModel(s, shape, None, "random weights (synthetic, seed 0): speed/memory/energy only",
                           time.perf_counter() - t0, _synthetic_factory(shape))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    if s.kind in ("embedded", "gguf"):
        path = embedded_gguf_path() if s.kind == "embedded" else s.path
        kw = {"gguf_file": path.name}
        folder = str(path.parent)
        note = (f"dequantized to fp32 from GGUF ({path.name})"
                + ("; the embedded weights were Q4_1 before dequantization" if s.kind == "embedded" else ""))
    else:
        folder, kw = str(s.path), {"use_safetensors": True}
        note = f"safetensors checkpoint {s.path}"
    kw["trust_remote_code"] = trust_remote_code
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
        pristine = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw)
    except (OSError, ValueError) as e:
        raise ModelSpecError(f"{s.text}: could not load: {e}") from e
    pristine.eval().requires_grad_(False)
    try:
        shape = shape_of(s)
    except ModelSpecError:
        c = pristine.config
        shape = ArchShape(s.text, c.model_type, c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
                          getattr(c, "num_key_value_heads", c.num_attention_heads), c.intermediate_size,
                          c.vocab_size, tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
                          head_dim=getattr(c, "head_dim", None), norms_per_block=norms_per_block(c.model_type))
    return LoadedModel(s, shape, tokenizer, note, time.perf_counter() - t0, _pristine_factory(pristine))


def cached_model(cache: dict, spec: str, trust_remote_code: bool = False) -> LoadedModel:
    """The model of `spec` from a per-process cache (one load per spec, shared by every backend's
    groups in that process)."""
    if spec not in cache:
        cache[spec] = load_model(spec, trust_remote_code)
    return cache[spec]
