"""PyTorch backend: one (model, variant) group prepared on a device, and the engine for each cell.

Engine choice: on CUDA the lean decoder with a static cache, its decode step compiled and captured
as a CUDA graph (falling back to an uncompiled graph, then to eager, with the reason on the record);
on CPU the eager loop. The transformers-generate backend (../generate) reuses this preparation and
swaps the engine.
"""
from __future__ import annotations

import gc
import time

import torch

from harness import quality
from harness.backends.base import CellSkip, EngineChoice
from harness.backends.pytorch import lean
from harness.backends.pytorch.device import compute_dtype, dtype_name, free_memory_bytes, resolve_device
from harness.backends.pytorch.engine import EagerEngine
from harness.corpus import load_corpus
from harness.phases import phase
from harness.models.loader import cached_model
from harness.variants import NothingApplied
from harness.variants.inspect import ops_that_ran, tensor_bytes

# Calibration data for AWQ, Wanda and static scales: a fixed number of corpus tokens from the tail
# of the corpus (evaluation reads the head), seeded for synthetic models.
CALIBRATION_SEQS, CALIBRATION_TOKENS, CALIBRATION_SEED = 8, 256, 1234
OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)


class PytorchBackend:
    name = "pytorch"
    lean_engine = True        # the GPU fast path; transformers-generate turns it off
    evaluates_quality = True

    def prepare(self, model_spec: str, variant, settings, profile, model_cache: dict) -> "TorchPrepared":
        if getattr(settings, "gpus", 1) > 1:
            # ranks build their own shards (harness.backends.pytorch.tp); nothing is loaded here
            from harness.backends.pytorch.tp.prepared import TensorParallelPrepared

            return TensorParallelPrepared(self, model_spec, variant, settings, profile, model_cache)
        return TorchPrepared(self, model_spec, variant, settings, profile, model_cache)

    def make_engine(self, prepared: "TorchPrepared", cell) -> EngineChoice:
        """The fastest path that works here, and why a faster one was not used."""
        dev = prepared.torch_device
        if dev.type != "cuda":
            return EngineChoice(EagerEngine(prepared.model, dev))
        if not prepared.use_lean:
            return EngineChoice(EagerEngine(prepared.model, dev), (f"eager: {lean.supports(prepared.model)}",))
        s, notes = prepared.settings, []
        for comp in ((True, False) if s.compile else (False,)):
            try:
                return self._graph_engine(prepared, cell, comp, notes)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001  (record why the faster path failed, try the next)
                if "CUDA error" in str(e):
                    raise  # a poisoned context: no fallback can run here
                notes.append(f"{'compiled' if comp else 'uncompiled'} CUDA graph failed: {type(e).__name__}: {str(e)[:300]}")
                torch._dynamo.reset()
        return EngineChoice(EagerEngine(prepared.model, dev), tuple(notes))

    @staticmethod
    def _graph_engine(prepared: "TorchPrepared", cell, compile_step: bool, notes: list) -> EngineChoice:
        """A CUDA-graph engine; with --tune auto and compilation, the compile configuration is chosen
        by measurement (harness.backends.pytorch.compile_choice)."""
        from harness.backends.pytorch import compile_choice as cc
        from harness.backends.pytorch.cuda_engine import CudaGraphEngine

        s, dev = prepared.settings, prepared.torch_device

        def build(tune, decode_attention="sdpa"):
            return CudaGraphEngine(prepared.model, dev, cell.batch_size, cell.prompt_tokens, cell.new_tokens,
                                   compile_step=compile_step, tune=tune, compile_mode=s.compile_mode,
                                   decode_attention=decode_attention)

        facts = {"static_cache": True, "compile_mode": s.compile_mode if compile_step else None}
        if not compile_step or s.tune != "auto" or cell.new_tokens < 2:
            eng = build({"auto": None, "on": True, "off": False}[s.tune] if compile_step else False)
            facts["coordinate_descent_tuning"] = eng.tuned
            facts["decode_attention"] = eng.decode_attention
            facts["compile_choice"] = {"source": f"--tune {s.tune}" if compile_step else "not compiled"}
            facts["prefill"] = eng.choose_prefill()
            return EngineChoice(eng, tuple(notes), facts=facts)
        key = cc.choice_key(torch.cuda.get_device_name(dev), prepared.model_spec, prepared.variant_name,
                            cell.batch_size, cell.prompt_tokens, cell.new_tokens, s.compile_mode, cc.versions())
        setup = []

        def build_named(name):
            eng = build(**cc.CANDIDATES[name])
            setup.append(eng.setup_s)
            return eng

        def release(eng):
            del eng
            torch._dynamo.reset()
            gc.collect()
            torch.cuda.empty_cache()

        eng, choice = cc.choose(key, build_named, cc.median_step_s, release, cc.ChoiceCache())
        eng.setup_s = sum(setup)   # every candidate compiled here is set-up of this cell
        facts["prefill"] = eng.choose_prefill()   # after the decode choice: one prefill compile, not one per candidate
        facts["coordinate_descent_tuning"] = eng.tuned
        facts["decode_attention"] = eng.decode_attention
        facts["compile_choice"] = {"chosen": choice.name, "step_s": choice.step_s, "source": choice.source,
                                   "candidates": list(cc.CANDIDATES)}
        return EngineChoice(eng, tuple(notes), facts=facts)


class TorchPrepared:
    """Load (once per spec), fit check, fuse, calibrate, apply, quality: everything outside the timed
    region, done once per group."""

    def __init__(self, backend: PytorchBackend, model_spec: str, variant, settings, profile, cache: dict):
        """`variant`: the cell's harness.variants.VariantSpec (parsed once, by the pipeline)."""
        t0 = time.perf_counter()
        self.backend, self.model_spec, self.variant, self.variant_name = backend, model_spec, variant, variant.name
        self.settings, self.profile = settings, profile
        self.torch_device = resolve_device(settings.device)
        self.torch_dtype = compute_dtype(self.torch_device)
        self.device, self.device_type = str(self.torch_device), self.torch_device.type
        self.dtype = dtype_name(self.torch_dtype)
        self.dtype_bytes = torch.empty((), dtype=self.torch_dtype).element_size()
        self.oom_errors = OOM_ERRORS
        self.model, self.fused, self._live = None, False, None
        cc = torch.cuda.get_device_capability(self.torch_device) if self.device_type == "cuda" else None
        why = variant.unsupported_reason(self.device_type, cc, profile)
        if why:
            raise CellSkip("unsupported", why)
        try:
            self._load_and_apply(variant, cache)
        except OOM_ERRORS as e:
            self.close()
            raise CellSkip("does-not-fit", f"out of memory while loading/applying: {e}") from None
        except NothingApplied as e:
            # a variant that changed no layer is not that variant: never `ok` under its name
            self.close()
            raise CellSkip("unsupported", e.reason) from None
        self.prepare_s = time.perf_counter() - t0

    def _load_and_apply(self, variant, cache: dict) -> None:
        self.loaded = cached_model(cache, self.model_spec, self.settings.trust_remote_code)
        self.shape = self.loaded.shape
        self.layerwise, self._weights_need = False, None
        self.build_peak_bytes = None   # the layer-by-layer build's CUDA allocator peak (before the timed window)
        try:
            self._check_fit()
        except CellSkip:
            if not self._layerwise_possible(variant):
                raise
            # the bf16 instance does not fit; the layer-by-layer build's estimated peak may
            from harness.backends.pytorch import layerwise
            from harness.pipeline.assemble import planned_weight_bytes

            planned = planned_weight_bytes(self.shape, variant.name, self.dtype)
            if planned is None:
                raise
            self._weights_need = layerwise.need_bytes(self.shape, planned, self.dtype_bytes)
            self._fit_what = (f"building layer by layer: {variant.name} weights as planned + one {self.torch_dtype} "
                              f"layer + the quantization's estimated temporaries, or the lm_head stage, "
                              f"whichever is larger")
            self._check_fit()
            self.layerwise = True
        self.corpus_name, self.corpus_text = load_corpus(self.settings.corpus)
        calib, _ = self.loaded.prompt_ids(self.corpus_name, self.corpus_text, CALIBRATION_SEQS,
                                          CALIBRATION_TOKENS, seed=CALIBRATION_SEED, from_end=True)
        ctx = variant.context(self.device_type, self.torch_dtype, calib.to(self.torch_device),
                              self.shape.num_hidden_layers if self.shape else None)
        phase("apply")
        t_apply = time.perf_counter()
        applied = self._build_layerwise(variant, ctx) if self.layerwise else self._instantiate_and_apply(variant, ctx)
        apply_s = time.perf_counter() - t_apply
        if self.device_type == "cuda":
            # the unquantized weights a variant replaced sit in the caching allocator; NVML's
            # per-process figure (the VRAM headline) would count them as the variant's footprint
            gc.collect()
            torch.cuda.empty_cache()
        self.weight_bytes = tensor_bytes(self.model)
        if self.layerwise:
            self._weights_need = self.weight_bytes   # the cells' fit checks use what is resident now
        ops = ops_that_ran(self.model, self.torch_dtype)
        self.kernel = f"{applied.kernel}; aten ops: {ops}" if ops else applied.kernel
        self.facts = {"apply_s": apply_s, "load_s": self.loaded.load_s, "calibration_s": applied.calibration_s,
                      "layers_changed": applied.layers_changed, "variant_notes": applied.notes or None,
                      "calibration_tokens": CALIBRATION_SEQS * CALIBRATION_TOKENS, "fused_projections": self.fused,
                      "weights_note": self.loaded.weights_note,
                      "build_peak_bytes": self.build_peak_bytes}
        self._quality = self._evaluate_quality() if self.backend.evaluates_quality else None

    def _layerwise_possible(self, variant) -> bool:
        from harness.backends.pytorch import layerwise

        return (self.device_type == "cuda" and self.loaded.spec.kind == "synthetic" and self.shape is not None
                and self.backend.lean_engine and layerwise.eligible(variant))

    def _instantiate_and_apply(self, variant, ctx):
        self.model = self.loaded.instantiate(self.torch_device, self.torch_dtype)
        self.use_lean = (self.backend.lean_engine and self.device_type == "cuda"
                         and lean.supports(self.model) is None)
        if self.use_lean and variant.entry.fusable:
            lean.fuse_projections(self.model)   # before the variant: per-row numerics unchanged
            self.fused = True
        return variant.apply(self.model, ctx)

    def _build_layerwise(self, variant, ctx):
        """Big models on one card (layerwise.py): built and quantized one decoder layer at a time."""
        from transformers import AutoConfig

        from harness.backends.pytorch import layerwise

        cfg_dict = self.shape.to_hf_config_dict()
        cfg = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        self.use_lean = lean.supports(type("M", (), {"config": cfg})()) is None
        self.fused = self.use_lean and variant.entry.fusable
        built = layerwise.build(cfg, self.torch_device, self.torch_dtype, variant, ctx, fuse=self.fused)
        self.model = built.model
        self.build_peak_bytes = built.peak_bytes if self.torch_device.type == "cuda" else None
        return built.result

    def _evaluate_quality(self):
        """Quality of this variant instance against the baseline reference (built once per model),
        outside every timed region. Synthetic weights: not meaningful, not computed."""
        q = self.settings.quality
        if not q.enabled:
            return quality.skipped()
        phase("quality")
        ref = quality.cached_reference(self.loaded, self.corpus_name, self.corpus_text, self.torch_device,
                                       self.torch_dtype, q)
        if ref is None:
            return quality.not_meaningful()
        try:
            return quality.evaluate(lean.LeanLM(self.model) if self.fused else self.model, ref)
        except (RuntimeError, ValueError, NotImplementedError) as e:
            # the speed figures are still worth keeping; the record says quality was not measured and why
            return quality.skipped(f"quality evaluation failed: {type(e).__name__}: {str(e)[:300]}")

    def quality(self):
        return self._quality

    def _check_fit(self, extra_bytes: int = 0, what: str = "") -> None:
        if self.shape is None:
            return
        weights = self._weights_need if getattr(self, "_weights_need", None) is not None else \
            self.shape.param_count() * self.dtype_bytes
        need = weights + extra_bytes
        free = free_memory_bytes(self.torch_device) + (tensor_bytes(self.model) if self.model is not None else 0)
        headroom = self.settings.memory_headroom
        if need > free * (1 - headroom):
            raise CellSkip("does-not-fit",
                           f"{self.model_spec} needs {need / 1e9:.2f} GB ({self._fit_basis()}{what}); "
                           f"{self.torch_device} has {free / 1e9:.2f} GB ({headroom:.0%} kept as headroom)")

    def _fit_basis(self) -> str:
        if getattr(self, "_weights_need", None) is None:
            return f"{self.torch_dtype} weights; variants are applied to a full-precision instance"
        if self.model is not None:
            return "the variant's weights, as resident"
        return self._fit_what

    def check_cell(self, cell) -> int | None:
        if self.shape is None:
            return None
        tokens = cell.prompt_tokens + cell.new_tokens
        kv = int(self.shape.kv_bytes_per_token(self.dtype_bytes) * cell.batch_size * tokens)
        try:
            self._check_fit(kv, f" + {kv / 1e9:.2f} GB KV cache for batch {cell.batch_size} x {tokens} tokens")
        except CellSkip as s:
            s.fields.update(weight_bytes=self.weight_bytes, kv_cache_bytes=kv)
            raise
        return kv

    def prompt(self, cell):
        return self.loaded.prompt_ids(self.corpus_name, self.corpus_text, cell.batch_size, cell.prompt_tokens)

    def engine(self, cell) -> EngineChoice:
        """The engine built for this cell's geometry, reused by the following repetitions of the same
        cell (compiling and capturing again would only add noise)."""
        if self._live is not None and self._live[0] == cell.geometry:
            c = self._live[1]
            return EngineChoice(c.engine, c.notes, False, c.facts)
        self.release_engine()
        choice = self.backend.make_engine(self, cell)
        self._live = (cell.geometry, choice)
        if self.device_type == "cuda":
            # what compilation, autotuning and warm-up left in the allocator's cache is set-up, not the
            # cell's footprint (torch's peak over set-up stays on the record as torch_max_reserved_bytes)
            gc.collect()
            torch.cuda.empty_cache()
        return choice

    def reset_peaks(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.torch_device)

    def allocator_peak_bytes(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.torch_device) if self.device_type == "cuda" else None

    def release_engine(self) -> None:
        if self._live is None:
            return
        self._live = None
        if self.device_type == "cuda":
            torch._dynamo.reset()
            gc.collect()
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.release_engine()
        self.model = None
        gc.collect()
        if self.device_type == "cuda":
            torch.cuda.empty_cache()
