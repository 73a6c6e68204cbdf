"""The llama.cpp backend behind the cell pipeline's protocol (harness.backends.base): `llama.cpp` in
the backend registry. The torch model is loaded through the shared model cache as for every backend
(its tokenizer makes the prompt ids, so every backend decodes the same tokens; its fp32 baseline is the
quality reference); the GGUF file is built or found in prepare(), outside every timed region."""
from __future__ import annotations

import time

from harness.backends.base import CellSkip, EngineChoice

NOT_INSTALLED = "llama-cpp-python not installed (pip install .[llama])"
KV_BYTES_PER_VALUE = 2      # llama.cpp's default KV cache type is f16 (type_k = type_v = GGML_TYPE_F16)


def unsupported_reason(model_spec: str, variant_name: str) -> str | None:
    """Why a (model, variant) group cannot run on llama.cpp, before anything is loaded."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return NOT_INSTALLED
    from harness.backends.llamacpp import recipes
    from harness.models.spec import ModelSpecError, parse_spec
    from harness.variants.spec import split_policy

    base, policy = split_policy(variant_name)
    if policy:
        return f"{variant_name}: mixed-precision policies are not implemented on the llama.cpp backend"
    why = recipes.unsupported_reason(base)
    if why:
        return why
    from harness.backends.llamacpp.files import SourceUnsupported, source_gguf

    try:
        source_gguf(parse_spec(model_spec))
    except ModelSpecError as e:
        return str(e)
    except SourceUnsupported as e:
        return e.reason
    return None


def default_threads() -> int:
    """The torch backend's intra-op thread count, so that the CPU rows compare like with like."""
    import torch

    return torch.get_num_threads()


class LlamaCppCellBackend:
    name = "llama.cpp"

    def prepare(self, model_spec: str, variant, settings, profile, model_cache: dict) -> "LlamaCppPrepared":
        return LlamaCppPrepared(model_spec, variant, settings, model_cache)


class LlamaCppPrepared:
    device = device_type = "cpu"
    dtype, dtype_bytes = "float32", 4      # unquantized tensors (norms) and activations between matmuls
    oom_errors = (MemoryError,)

    def __init__(self, model_spec: str, variant, settings, cache: dict, root=None, threads: int | None = None):
        t0 = time.perf_counter()
        why = unsupported_reason(model_spec, variant.name)
        if why:
            raise CellSkip("unsupported", why)
        from harness.backends.llamacpp import gguf_io
        from harness.backends.llamacpp.files import GgufCache
        from harness.backends.llamacpp.recipes import RECIPES, kernel_label
        from harness.corpus import load_corpus
        from harness.models.loader import cached_model

        self.settings, self.threads = settings, threads or default_threads()
        self.recipe = RECIPES[variant.name]
        self.loaded = cached_model(cache, model_spec, settings.trust_remote_code)
        self.shape = self.loaded.shape
        t_file = time.perf_counter()
        self.file = GgufCache(root, self.threads).ensure(self.loaded, self.recipe)
        apply_s = time.perf_counter() - t_file
        census = gguf_io.census_text(self.file.census)
        self.kernel = kernel_label(self.file.census)
        self.weight_bytes = gguf_io.tensor_bytes(self.file.path)
        origin = ("not dequantized: llama.cpp runs the file's own types" if self.recipe.source == "native"
                  else f"made from: {self.loaded.weights_note}")
        hit = {None: "the source file", True: "cache hit", False: "built"}[self.file.cache_hit]
        self.facts = {"load_s": self.loaded.load_s, "apply_s": apply_s,
                      "weights_note": f"{self.recipe.label}: {self.file.path.name} ({hit}) holds {census}; {origin}"}
        self.notes = [*self.file.notes, f"llama.cpp threads: {self.threads}"]
        self.corpus_name, self.corpus_text = load_corpus(settings.corpus)
        self._engine = None
        self._quality = self._evaluate_quality()
        self.prepare_s = time.perf_counter() - t0

    def _evaluate_quality(self):
        import torch

        from harness import quality
        from harness.backends.llamacpp.engine import LlamaLogits, LogitsModule

        q = self.settings.quality
        if not q.enabled:
            return quality.skipped()
        # the torch CPU backend's fp32 reference of the model, shared with its rows
        ref = quality.cached_reference(self.loaded, self.corpus_name, self.corpus_text, torch.device("cpu"),
                                       torch.float32, q)
        if ref is None:
            return quality.not_meaningful()
        logits = LlamaLogits(self.file.path, q.window, self.threads)
        try:
            return quality.evaluate(LogitsModule(logits), ref)
        except (RuntimeError, ValueError) as e:
            return quality.skipped(f"quality evaluation failed: {type(e).__name__}: {str(e)[:300]}")
        finally:
            logits.close()

    def quality(self):
        return self._quality

    def check_cell(self, cell) -> int | None:
        if cell.batch_size != 1:
            raise CellSkip("unsupported", f"batch {cell.batch_size}: the llama.cpp backend runs one sequence per "
                                          "pass (llama-cpp-python's Llama decodes a single sequence)",
                           weight_bytes=self.weight_bytes)
        if self.shape is None:
            return None
        return int(self.shape.kv_bytes_per_token(KV_BYTES_PER_VALUE) * (cell.prompt_tokens + cell.new_tokens))

    def prompt(self, cell):
        return self.loaded.prompt_ids(self.corpus_name, self.corpus_text, cell.batch_size, cell.prompt_tokens)

    def engine(self, cell) -> EngineChoice:
        """One llama.cpp context per cell geometry (n_ctx = prompt + new tokens), reused by the cell's
        repetitions."""
        from harness.backends.llamacpp.engine import LlamaCppEngine

        n_ctx = cell.prompt_tokens + cell.new_tokens
        fresh = self._engine is None or self._engine.n_ctx != n_ctx
        if fresh:
            self.release_engine()
            self._engine = LlamaCppEngine(self.file.path, n_ctx, self.threads)
        notes, self.notes = tuple(self.notes), [f"llama.cpp threads: {self.threads}"]
        return EngineChoice(self._engine, notes, fresh, facts={"llama_threads": self.threads})

    def reset_peaks(self) -> None:
        pass

    def allocator_peak_bytes(self):
        return None

    def release_engine(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def close(self) -> None:
        self.release_engine()
