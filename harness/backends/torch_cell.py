"""PyTorch backend: prepares one (model, variant, backend) group on a device and measures its cells.

Engine choice for backend `pytorch`: on CUDA the lean decoder with a static cache, its decode step
compiled and captured as a CUDA graph (falling back to an uncompiled graph, then to eager, with the
reason on the record); on CPU the eager loop. Backend `transformers-generate` always runs generate().
"""
from __future__ import annotations

import gc
import time

import torch

from harness.backends import lean
from harness.backends.engine import EagerEngine
from harness.backends.generate_engine import GenerateEngine
from harness.backends.gpu_meters import GpuRunMeters, bandwidth_fields, energy_fields
from harness.meters.bandwidth import mean_decode_context
from harness.backends.measure import measure
from harness.backends.records_fill import measured_fields, planned_weight_bytes
from harness.backends.device import compute_dtype, free_memory_bytes, resolve_device
from harness import quality
from harness.corpus import load_corpus
from harness.meters.cpu_energy import open_cpu_energy_reader
from harness.models import load_model
from harness.records import Record
from harness.variants import get_variant, policy_for
from harness.variants.inspect import ops_that_ran, tensor_bytes
from harness.variants.registry import ApplyContext

# Calibration data for AWQ, Wanda and static scales: a fixed number of corpus tokens from the tail
# of the corpus (evaluation reads the head), seeded for synthetic models.
CALIBRATION_SEQS, CALIBRATION_TOKENS, CALIBRATION_SEED = 8, 256, 1234


class _Skip(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class GroupRunner:
    def __init__(self, model_spec: str, variant: str, backend: str, settings, ctx, model_cache: dict):
        self.model_spec, self.variant_name, self.backend = model_spec, variant, backend
        self.settings, self.ctx, self.cache = settings, ctx, model_cache
        self.device = resolve_device(settings.device)
        self.dtype = compute_dtype(self.device)
        self._prepared = False
        self._skip: _Skip | None = None
        self.model = None
        self.fused = False
        self._live = None      # (geometry, engine, notes) of the last cell, for its repetitions

    # -- preparation, outside every timed region ------------------------------------------------
    def _prepare(self) -> None:
        self._prepared = True
        t0 = time.perf_counter()
        try:
            variant = get_variant(self.variant_name)
            cc = torch.cuda.get_device_capability(self.device) if self.device.type == "cuda" else None
            why = variant.unsupported_reason(self.device.type, cc, self.ctx.profile)
            if why:
                raise _Skip("unsupported", why)
            if self.model_spec not in self.cache:
                self.cache[self.model_spec] = load_model(self.model_spec, self.settings.trust_remote_code)
            self.loaded = self.cache[self.model_spec]
            self._check_fit()
            self.model = self.loaded.instantiate(self.device, self.dtype)
            if self._use_lean() and getattr(variant, "fusable", True):
                lean.fuse_projections(self.model)   # before the variant: per-row numerics unchanged
                self.fused = True
            self.corpus_name, self.corpus_text = load_corpus(self.settings.corpus)
            calib, _ = self.loaded.prompt_ids(self.corpus_name, self.corpus_text, CALIBRATION_SEQS,
                                              CALIBRATION_TOKENS, seed=CALIBRATION_SEED, from_end=True)
            policy = policy_for(self.variant_name, self.loaded.shape.num_hidden_layers if self.loaded.shape else None)
            t_apply = time.perf_counter()
            self.applied = variant.apply(self.model, ApplyContext(self.device.type, self.dtype,
                                                                  calib.to(self.device), policy))
            self.apply_s = time.perf_counter() - t_apply
            if self.device.type == "cuda":
                # the unquantized weights a variant replaced sit in the caching allocator; NVML's
                # per-process figure (the VRAM headline) would count them as the variant's footprint
                gc.collect()
                torch.cuda.empty_cache()
            self.weight_bytes = tensor_bytes(self.model)
            ops = ops_that_ran(self.model, self.dtype)
            self.kernel = f"{self.applied.kernel}; aten ops: {ops}" if ops else self.applied.kernel
            self.quality_result = self._quality() if self.backend == "pytorch" else None
            power = self.settings.cpu_power_w or getattr(self.ctx.profile, "power_w", None)
            self.energy = open_cpu_energy_reader(power) if self.device.type == "cpu" else None
            gpu = self._gpu_meters()
            if gpu:
                gpu.idle_power(self.model_spec)   # once per model: loaded, before any cell has run
        except _Skip as s:
            self._skip = s
        except (torch.OutOfMemoryError, MemoryError) as e:
            self._skip = _Skip("does-not-fit", f"out of memory while loading/applying: {e}")
        self.prepare_s = time.perf_counter() - t0

    def _quality(self):
        """Quality of this variant instance against the baseline reference (built once per model),
        outside every timed region. Synthetic weights: not meaningful, not computed."""
        q = self.settings.quality
        if not q.enabled:
            return quality.skipped()
        key = (str(self.device), str(self.dtype), q)
        if key not in self.loaded.quality_refs:
            self.loaded.quality_refs[key] = quality.reference_for(self.loaded, self.corpus_name, self.corpus_text,
                                                                  self.device, self.dtype, q)
        ref = self.loaded.quality_refs[key]
        if ref is None:
            return quality.not_meaningful()
        try:
            return quality.evaluate(lean.LeanLM(self.model) if self.fused else self.model, ref)
        except (RuntimeError, ValueError, NotImplementedError) as e:
            # the speed figures are still worth keeping; the record says quality was not measured and why
            return quality.skipped(f"quality evaluation failed: {type(e).__name__}: {str(e)[:300]}")

    def _use_lean(self) -> bool:
        return (self.backend == "pytorch" and self.device.type == "cuda"
                and lean.supports(self.model) is None)

    def _check_fit(self, extra_bytes: int = 0, what: str = "") -> None:
        shape = self.loaded.shape
        if shape is None:
            return
        need = shape.param_count() * torch.empty((), dtype=self.dtype).element_size() + extra_bytes
        free = free_memory_bytes(self.device) + (tensor_bytes(self.model) if self.model is not None else 0)
        budget = free * (1 - self.settings.memory_headroom)
        if need > budget:
            raise _Skip("does-not-fit",
                        f"{self.model_spec} needs {need / 1e9:.2f} GB ({self.dtype} weights{what}; variants are "
                        f"applied to a full-precision instance); "
                        f"{self.device} has {free / 1e9:.2f} GB ({self.settings.memory_headroom:.0%} kept as headroom)")

    # -- one cell ---------------------------------------------------------------------------------
    def _record(self, cell, **kw) -> Record:
        from harness.runner import cell_record

        return cell_record(cell, self.ctx, device=str(self.device), dtype=str(self.dtype).replace("torch.", ""), **kw)

    def _engine(self, cell):
        """(engine, notes): the fastest path that works here, and why a faster one was not used."""
        notes = []
        if self.backend == "transformers-generate":
            return GenerateEngine(self.model, self.device, self.energy), notes
        if self.device.type == "cuda":
            from harness.backends.cuda_engine import CudaGraphEngine

            if not self._use_lean():
                notes.append(f"eager: {lean.supports(self.model)}")
                return EagerEngine(self.model, self.device, self.energy), notes
            for comp in ((True, False) if self.settings.compile else (False,)):
                try:
                    tune = {"auto": None, "on": True, "off": False}[self.settings.tune]
                    return CudaGraphEngine(self.model, self.device, cell.batch_size, cell.prompt_tokens,
                                           cell.new_tokens, compile_step=comp, tune=tune,
                                           compile_mode=self.settings.compile_mode), notes
                except torch.OutOfMemoryError:
                    raise
                except Exception as e:  # noqa: BLE001  (record why the faster path failed, try the next)
                    notes.append(f"{'compiled' if comp else 'uncompiled'} CUDA graph failed: {type(e).__name__}: {str(e)[:300]}")
                    torch._dynamo.reset()
            return EagerEngine(self.model, self.device, self.energy), notes
        return EagerEngine(self.model, self.device, self.energy), notes

    def run(self, cell) -> Record:
        if not self._prepared:
            self._prepare()
        if self._skip:
            return self._record(cell, status=self._skip.status, reason=self._skip.reason)
        shape = self.loaded.shape
        kv_bytes = int(shape.kv_bytes_per_token(torch.empty((), dtype=self.dtype).element_size())
                       * cell.batch_size * (cell.prompt_tokens + cell.new_tokens)) if shape else 0
        try:
            self._check_fit(kv_bytes, f" + {kv_bytes / 1e9:.2f} GB KV cache for batch {cell.batch_size} x "
                                      f"{cell.prompt_tokens + cell.new_tokens} tokens")
        except _Skip as s:
            return self._record(cell, status=s.status, reason=s.reason, weight_bytes=self.weight_bytes,
                                kv_cache_bytes=kv_bytes)
        ids, prompt_source = self.loaded.prompt_ids(self.corpus_name, self.corpus_text,
                                                    cell.batch_size, cell.prompt_tokens)
        gpu = self._gpu_meters(cell)
        vram = gpu.vram_meter() if gpu else None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if vram:
            vram.begin()
        try:
            engine, notes, fresh = self._engine_for(cell)
            # a meters-off repetition beside meters-on ones runs as long as their energy window, so
            # that the two differ in nothing but the meters
            hold_s = self.settings.energy_window_s if (self.settings.meters and not cell.meters
                                                       and self.device.type == "cuda") else 0.0
            m = measure(engine, ids, cell.new_tokens, self.settings.meter, self.energy,
                        setup_s=self.prepare_s + (getattr(engine, "setup_s", 0.0) if fresh else 0.0),
                        window=gpu.meter if gpu else None, sample_rss=cell.meters, hold_s=hold_s)
            if gpu:
                vram_window = vram.end(m.window.timeline)
                w_pre, n_pre = gpu.prefill_window(engine, ids.to(self.device))
                gpu_fields, gpu_extra = energy_fields(gpu, self.model_spec, m, w_pre, n_pre, vram_window, cell)
                gpu_fields, gpu_extra = self._vram_budget(vram_window, kv_bytes, cell, gpu_fields, gpu_extra)
            static_cache = isinstance(engine, _static_cache_engines())
            tuned = getattr(engine, "tuned", None)
        except (torch.OutOfMemoryError, MemoryError) as e:
            self._release_engine()
            return self._record(cell, status="does-not-fit", reason=f"out of memory in the workload: {str(e)[:300]}",
                                weight_bytes=self.weight_bytes, kernel=self.kernel, kv_cache_bytes=kv_bytes)
        except BaseException:
            self._release_engine()
            raise
        self.prepare_s = 0.0  # the group's set-up is charged to its first cell only
        fields = measured_fields(m)
        extra = dict(fields.pop("extra"), apply_s=self.apply_s, load_s=self.loaded.load_s,
                     calibration_tokens=CALIBRATION_SEQS * CALIBRATION_TOKENS,
                     fused_projections=self.fused, engine_notes=notes,
                     coordinate_descent_tuning=tuned, engine_reused=not fresh,
                     compile_mode=getattr(engine, "compile_mode", None))
        if gpu:
            fields.update(gpu_fields)
            extra.update(gpu_extra)
        elif self.device.type == "cuda":
            fields["peak_vram_bytes"] = torch.cuda.max_memory_allocated(self.device)
            extra["peak_vram_method"] = "torch.cuda.max_memory_allocated (meters off)"
        if self.device.type == "cuda" and shape is not None:
            # the static cache is read whole each step (masked); a dynamic cache only up to the context
            ctx_len = cell.prompt_tokens + cell.new_tokens if static_cache else mean_decode_context(
                cell.prompt_tokens, cell.new_tokens)
            bw_fields, bw_extra = bandwidth_fields(
                self.ctx.gpu, self.ctx.profile, shape, cell.variant, self.weight_bytes,
                shape.kv_bytes_per_token(torch.empty((), dtype=self.dtype).element_size()), ctx_len, cell,
                fields["decode_tok_s"], fields["ttft_s"], self._format_name())
            fields.update(bw_fields)
            extra.update(bw_extra)
        if self.quality_result is not None:
            fields.update(quality.record_fields(self.quality_result, self.settings.quality))
            extra["quality"] = quality.record_extra(self.quality_result, self.settings.quality)
        fields["planned_weight_bytes"] = planned_weight_bytes(shape, cell.variant, str(self.dtype).replace("torch.", ""))
        return self._record(cell, kernel=self.kernel, decode_path=m.engine_name,
                            weights_note=self.loaded.weights_note, prompt_source=prompt_source,
                            weight_bytes=self.weight_bytes, kv_cache_bytes=kv_bytes if shape else None,
                            calibration_s=self.applied.calibration_s, extra=extra, **fields)

    def _vram_budget(self, window, kv_bytes: int, cell, fields: dict, extra: dict) -> tuple[dict, dict]:
        from harness.meters.vram import vram_budget
        from harness.plan.roofline import workspace_bytes

        shape = self.loaded.shape
        act = (workspace_bytes(shape, cell.prompt_tokens, cell.batch_size, self._format_name(), chunk_tokens=None)
               if shape is not None else None)
        budget = vram_budget(window, self.weight_bytes, kv_bytes if shape is not None else None, act)
        if budget is not None:
            fields = dict(fields, vram_expected_bytes=budget.expected_bytes)
            extra = dict(extra, vram_budget=budget.as_dict())
        return fields, extra

    def _format_name(self) -> str:
        """The compute dtype as the planner and profiles name formats: bf16, fp16, fp32."""
        return str(self.dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16").replace(
            "float32", "fp32")

    def _engine_for(self, cell):
        """(engine, notes, fresh): the engine built for this cell's geometry, reused by the following
        repetitions of the same cell (compiling and capturing again would only add noise)."""
        if self._live is not None and self._live[0] == cell.geometry:
            return self._live[1], self._live[2], False
        self._release_engine()
        engine, notes = self._engine(cell)
        self._live = (cell.geometry, engine, notes)
        if self.device.type == "cuda":
            # what compilation, autotuning and warm-up left in the allocator's cache is set-up, not the
            # cell's footprint (torch's peak over set-up stays on the record as torch_max_reserved_bytes)
            gc.collect()
            torch.cuda.empty_cache()
        return engine, notes, True

    def _release_engine(self) -> None:
        if self._live is None:
            return
        self._live = None
        if self.device.type == "cuda":
            torch._dynamo.reset()
            gc.collect()
            torch.cuda.empty_cache()

    def _gpu_meters(self, cell=None):
        """The run's GPU meters (opened by the first CUDA cell), or None on CPU, with meters off, or
        for a cell measured without meters."""
        if self.device.type != "cuda" or not self.settings.meters or (cell is not None and not cell.meters):
            return None
        if self.ctx.gpu is None:
            self.ctx.gpu = GpuRunMeters(self.device.index or 0, self.settings.energy_window_s)
        return self.ctx.gpu

    def close(self) -> None:
        self._release_engine()
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()



def _static_cache_engines():
    from harness.backends.cuda_engine import CudaGraphEngine

    return (CudaGraphEngine,)
