"""The cell pipeline: for one (model, variant, backend) group, prepare once through the backend,
then for each cell: fit check -> prompt -> engine -> meters opened -> timed windows -> prefill
energy window -> record. Backend-independent: it calls the Backend/Prepared/Engine protocols
(harness.backends.base) and the meter windows (harness.meters.base), and owns their lifecycle.
"""
from __future__ import annotations

import time

from harness.backends import get_backend
from harness.phases import phase
from harness.backends.base import CellSkip
from harness.meters.base import MeterScope
from harness.pipeline.assemble import CellOutcome, assemble_record
from harness.pipeline.meters import gpu_run_meters, open_cell_meters
from harness.pipeline.timed import abort_windows, measure


class GroupPipeline:
    def __init__(self, model_spec: str, variant: str, backend: str, settings, ctx, model_cache: dict):
        from harness.variants import parse_variant

        self.model_spec, self.settings, self.ctx = model_spec, settings, ctx
        self.variant = parse_variant(variant)    # parsed once; the spec flows to the backend
        self.backend = get_backend(backend)
        self.cache = model_cache
        self.prepared = None
        self.skip: CellSkip | None = None
        self._done_prepare = False
        self.prepare_s = 0.0     # charged to the group's first measured cell

    def _prepare(self, cell) -> None:
        self._done_prepare = True
        self.variant = self.variant.for_batch(cell.batch_size)
        t0 = time.perf_counter()
        phase("load")   # the backend announces apply / quality / its own compile steps as it reaches them
        try:
            self.prepared = self.backend.prepare(self.model_spec, self.variant, self.settings, self.ctx.profile,
                                                 self.cache)
        except CellSkip as s:
            self.skip = s
            return
        self.prepare_s = time.perf_counter() - t0
        scope = self._scope(cell)
        if scope.device_type == "cuda" and self.settings.meters:
            gpu_run_meters(scope).idle_power(self.model_spec)   # once per model: loaded, before any cell

    def _scope(self, cell) -> MeterScope:
        p = self.prepared
        dev = getattr(p, "device", "cpu")
        index = int(dev.split(":")[1]) if dev.startswith("cuda:") else (0 if dev == "cuda" else None)
        return MeterScope(getattr(p, "device_type", "cpu"), index, cell, self.settings, self.ctx)

    def _record(self, cell, **kw):
        from harness.sweep import cell_record

        p = self.prepared
        if p is not None:
            kw.setdefault("device", p.device)
            kw.setdefault("dtype", p.dtype)
        return cell_record(cell, self.ctx, **kw)

    def run(self, cell):
        p = self.prepared
        if p is not None and self.variant.rechooses_kernel_for(cell.batch_size, getattr(p, "device_type", "cpu")):
            # the kernel was chosen by measurement for another batch: prepare again for this one
            self.close()
            self._done_prepare, self.skip = False, None
        if not self._done_prepare:
            self._prepare(cell)
        if self.skip is not None:
            return self._record(cell, status=self.skip.status, reason=self.skip.reason, **self.skip.fields)
        p = self.prepared
        try:
            kv = p.check_cell(cell)
        except CellSkip as s:
            return self._record(cell, status=s.status, reason=s.reason, kernel=p.kernel, **s.fields)
        ids, prompt_source = p.prompt(cell)
        try:
            outcome = self._measure(cell, kv, ids, prompt_source)
        except p.oom_errors as e:
            p.release_engine()
            return self._record(cell, status="does-not-fit", reason=f"out of memory in the workload: {str(e)[:300]}",
                                weight_bytes=p.weight_bytes, kernel=p.kernel, kv_cache_bytes=kv)
        except BaseException:
            p.release_engine()
            raise
        return assemble_record(cell, self.ctx, self.settings, outcome)

    def _measure(self, cell, kv, ids, prompt_source) -> CellOutcome:
        p, s = self.prepared, self.settings
        scope = self._scope(cell)
        p.reset_peaks()
        phase("compile")   # engine set-up: a CUDA graph capture, torch.compile (30-300 s on a GPU)
        choice = p.engine(cell)
        pids = [r.get("pid") for r in getattr(choice.engine, "ranks", ())]   # tensor-parallel ranks
        meters = open_cell_meters(scope, s.cpu_power_w or getattr(self.ctx.profile, "power_w", None), pids)
        # a meters-off repetition beside meters-on ones runs as long as their energy window, so that
        # the two differ in nothing but the meters
        hold_s = s.energy_window_s if (s.meters and not cell.meters and p.device_type == "cuda") else 0.0
        setup_s = self.prepare_s + (choice.engine.setup_s if choice.fresh else 0.0)
        phase("measure")
        m = measure(choice.engine, ids, cell.new_tokens, s.meter, meters.windows, setup_s=setup_s, hold_s=hold_s)
        self.prepare_s = 0.0
        out = CellOutcome(p, m, choice, kv, prompt_source, meters if cell.meters and s.meters else None)
        energy = meters.energy
        if energy is not None and energy.source != "unavailable":
            from harness.meters.gpu_energy import run_for_at_least

            run_ids = ids.to(p.device) if hasattr(ids, "to") else ids
            try:
                out.prefill, out.prefill_passes = run_for_at_least(
                    energy.meter, lambda: choice.engine.run_prefill(run_ids), name="prefill-loop")
            except BaseException:
                abort_windows([energy])
                raise
        if p.device_type == "cuda" and s.meters and cell.meters:
            out.gpu = gpu_run_meters(scope)
            out.idle = out.gpu.idle_power(self.model_spec)
        return out

    def close(self) -> None:
        if self.prepared is not None:
            self.prepared.close()
            self.prepared = None
