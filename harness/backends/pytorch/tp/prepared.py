"""The Prepared (harness.backends.base) of a tensor-parallel group: the model is built by the ranks,
not by the pipeline's process, so nothing is loaded on a device here; this holds the model's shape
and prompt source, decides what cannot run, and builds a TensorParallelEngine per cell geometry.

What is refused, with the reason: a variant that cannot be applied per shard (tp.variants: int8-wo
and int4-wo are, by each rank after sharding), a shape whose heads do not split, fewer GPUs than
asked, a backend other than the lean-engine one.
"""
from __future__ import annotations

import time

import torch

from harness import quality
from harness.backends.base import CellSkip, EngineChoice
from harness.backends.pytorch.tp.shard import tp_unsupported
from harness.backends.pytorch.tp.variants import tp_variant_unsupported

OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)


def gpus_unsupported(gpus: int, device_type: str) -> str | None:
    """None if this machine can run `gpus` CUDA ranks (CPU ranks: always)."""
    if device_type != "cuda":
        return None
    have = torch.cuda.device_count()
    return None if have >= gpus else f"needs {gpus} GPUs, this machine has {have}"


class TensorParallelPrepared:
    def __init__(self, backend, model_spec: str, variant, settings, profile, cache: dict):
        from harness.backends.pytorch.device import dtype_name
        from harness.backends.pytorch.device import compute_dtype, resolve_device
        from harness.corpus import load_corpus
        t0 = time.perf_counter()
        self.gpus, self.model_spec, self.variant_name, self.settings = settings.gpus, model_spec, variant.name, settings
        dev = resolve_device(settings.device)
        self.device_type = dev.type
        self.torch_dtype = compute_dtype(dev)
        self.dtype = dtype_name(self.torch_dtype)
        self.dtype_bytes = torch.empty((), dtype=self.torch_dtype).element_size()
        # a torch device string (the pipeline moves prompts to it): rank 0's; the engine's name says
        # how many ranks ran
        self.device = "cuda:0" if dev.type == "cuda" else "cpu"
        self.oom_errors = OOM_ERRORS
        self._live = None
        cc = torch.cuda.get_device_capability(0) if dev.type == "cuda" and torch.cuda.is_available() else None
        why = (gpus_unsupported(self.gpus, dev.type)
               or (None if backend.lean_engine else f"backend {backend.name} has no tensor-parallel engine")
               or variant.unsupported_reason(dev.type, cc, profile))
        if why:
            raise CellSkip("unsupported", why)
        self.loaded = self._load(cache, model_spec, settings.trust_remote_code)
        self.shape = self.loaded.shape
        why = ("the model's shape is unknown: its heads cannot be split" if self.shape is None
               else tp_unsupported(self.shape_config(), self.gpus)
               or tp_variant_unsupported(variant.name, self.shape, self.gpus))
        if why:
            raise CellSkip("unsupported", why)
        self.corpus_name, self.corpus_text = load_corpus(settings.corpus)
        self.weight_bytes = None   # from the ranks once built
        self._tp_kernel = f"Megatron tensor-parallel over {self.gpus} ranks (all-reduce after o_proj, down_proj)"
        self.kernel = f"{self.dtype} dense linears, {self._tp_kernel}"
        self.facts = {"load_s": self.loaded.load_s, "weights_note": self.loaded.weights_note,
                      "fused_projections": False, "tensor_parallel": self.gpus}
        self.prepare_s = time.perf_counter() - t0

    @staticmethod
    def _load(cache: dict, model_spec: str, trust_remote_code: bool):
        """A checkpoint folder: its shape and tokenizer only (each rank reads its own slices of the
        weights); anything else through the process's model cache."""
        from harness.models.loader import cached_model
        from harness.models.spec import parse_spec

        spec = parse_spec(model_spec)
        if spec.kind != "hf-dir":
            return cached_model(cache, model_spec, trust_remote_code)
        from harness.backends.pytorch.tp.checkpoint import light_model

        key = ("tp-light", model_spec)
        if key not in cache:
            cache[key] = light_model(spec, trust_remote_code)
        return cache[key]

    def shape_config(self):
        from types import SimpleNamespace

        s = self.shape
        return SimpleNamespace(num_attention_heads=s.num_attention_heads, num_key_value_heads=s.num_key_value_heads,
                               intermediate_size=s.intermediate_size)

    def check_cell(self, cell) -> int | None:
        return int(self.shape.kv_bytes_per_token(self.dtype_bytes) * cell.batch_size
                   * (cell.prompt_tokens + cell.new_tokens))

    def prompt(self, cell):
        return self.loaded.prompt_ids(self.corpus_name, self.corpus_text, cell.batch_size, cell.prompt_tokens)

    def engine(self, cell) -> EngineChoice:
        from harness.backends.pytorch.tp.engine import TensorParallelEngine
        from harness.backends.pytorch.tp.launch import RankError
        from harness.backends.pytorch.tp.rank import RankJob

        if self._live is not None and self._live[0] == cell.geometry:
            c = self._live[1]
            return EngineChoice(c.engine, c.notes, False, c.facts)
        self.release_engine()
        s = self.settings
        tune = {"auto": None, "on": True, "off": False}[s.tune]
        job = RankJob(self.model_spec, self.device_type, self.dtype, cell.batch_size, cell.prompt_tokens,
                      cell.new_tokens, compile_step=s.compile, tune=tune, compile_mode=s.compile_mode,
                      trust_remote_code=s.trust_remote_code, variant=self.variant_name)
        try:
            eng = TensorParallelEngine(job, self.gpus)
        except RankError as e:
            if "out of memory" in str(e).lower():
                raise torch.OutOfMemoryError(str(e)) from None
            raise
        self.weight_bytes = sum(r["weight_bytes"] for r in eng.ranks)
        if eng.ranks[0].get("kernel"):   # the variant each rank applied to its shard
            self.kernel = f"{eng.ranks[0]['kernel']} on each rank's shard; {self._tp_kernel}"
            self.facts.update(layers_changed=sum(r["layers_changed"] for r in eng.ranks),
                              apply_s=max(r["apply_s"] for r in eng.ranks))
        facts = {"static_cache": True, "compile_mode": s.compile_mode if s.compile else None,
                 "coordinate_descent_tuning": eng.tuned,
                 "compile_choice": {"source": f"--tune {s.tune} (per rank; auto is not measured for ranks)"},
                 **eng.facts()}
        choice = EngineChoice(eng, (), facts=facts)
        self._live = (cell.geometry, choice)
        return choice

    def reset_peaks(self) -> None:
        pass                       # the ranks' allocators are in their own processes

    def allocator_peak_bytes(self) -> int | None:
        return None

    def quality(self):
        return quality.skipped("tensor-parallel cells do not evaluate quality (the same weights' one-GPU cell does)")

    def release_engine(self) -> None:
        if self._live is not None:
            self._live[1].engine.close()
            self._live = None

    def close(self) -> None:
        self.release_engine()
