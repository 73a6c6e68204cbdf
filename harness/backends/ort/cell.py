"""The ONNX Runtime backend behind the cell pipeline's protocol (harness.backends.base): `ort` in the
backend registry. Loading goes through the same model cache as the PyTorch backend (one load per spec
and process); the export or cache hit happens in prepare(), outside every timed region; quality is
scored against the torch fp32 baseline's reference on the same positions, so an ORT row and a torch
row of the same variant line up in one table."""
from __future__ import annotations

import time

from harness.backends.base import CellSkip, EngineChoice
from harness.backends.ort.backend import OrtBackend, OrtUnsupported
from harness.phases import phase

CPU_EP = "CPUExecutionProvider"


class OrtCellBackend:
    name = "ort"

    def prepare(self, model_spec: str, variant, settings, profile, model_cache: dict) -> "OrtCellPrepared":
        return OrtCellPrepared(model_spec, variant, settings, profile, model_cache)


class OrtCellPrepared:
    dtype, dtype_bytes = "float32", 4
    oom_errors = (MemoryError,)

    def __init__(self, model_spec: str, variant, settings, profile, cache: dict):
        t0 = time.perf_counter()
        self.model_spec, self.variant, self.settings = model_spec, variant, settings
        self.builder = OrtBackend()
        why = self.builder.unsupported_reason(variant.name, profile)
        if why:
            raise CellSkip("unsupported", why)
        from harness.models.loader import cached_model

        self.loaded = cached_model(cache, model_spec, settings.trust_remote_code)
        self.shape = self.loaded.shape
        phase("apply")   # the export and quantization (or a cache hit)
        try:
            self.ort = self.builder.prepare(self.loaded, variant.name, profile)
        except OrtUnsupported as e:
            raise CellSkip("unsupported", e.reason) from None
        self.device = "cpu" if self.ort.ep == CPU_EP else self.ort.ep
        self.device_type = "cpu" if self.ort.ep == CPU_EP else "accelerator"
        self.kernel, self.weight_bytes = self.ort.kernel, self.ort.weight_bytes
        self.facts = {"load_s": self.loaded.load_s, "apply_s": self.ort.prepare_s, "weights_note":
                      self.loaded.weights_note + f"; exported with onnxruntime-genai's model builder "
                      f"({'cache hit' if self.ort.cache_hit else 'built'})", "notes": list(self.ort.notes)}
        from harness.corpus import load_corpus

        self.corpus_name, self.corpus_text = load_corpus(settings.corpus)
        self._quality = self._evaluate_quality()
        self.prepare_s = time.perf_counter() - t0

    def _evaluate_quality(self):
        import torch

        from harness import quality

        q = self.settings.quality
        if not q.enabled:
            return quality.skipped()
        phase("quality")
        # the torch CPU backend's fp32 reference of the model, shared with its rows
        ref = quality.cached_reference(self.loaded, self.corpus_name, self.corpus_text, torch.device("cpu"),
                                       torch.float32, q)
        if ref is None:
            return quality.not_meaningful()
        try:
            return quality.evaluate(self.ort.quality_module(), ref)
        except (RuntimeError, ValueError) as e:
            return quality.skipped(f"quality evaluation failed: {type(e).__name__}: {str(e)[:300]}")

    def quality(self):
        return self._quality

    def check_cell(self, cell):
        return None     # no fit check here: the ORT CPU EP allocates from host memory as it goes

    def prompt(self, cell):
        return self.loaded.prompt_ids(self.corpus_name, self.corpus_text, cell.batch_size, cell.prompt_tokens)

    def engine(self, cell) -> EngineChoice:
        # the export's notes (a cache entry rebuilt, a variant's caveat) go to the record's engine.notes
        return EngineChoice(self.ort.engine(), notes=tuple(self.ort.notes),
                            facts={"ort_ep": self.ort.ep, "ort_kernel": self.ort.kernel_name})

    def reset_peaks(self) -> None:
        pass

    def allocator_peak_bytes(self):
        return None

    def release_engine(self) -> None:
        pass

    def close(self) -> None:
        self.ort.close()
