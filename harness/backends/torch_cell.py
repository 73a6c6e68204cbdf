"""PyTorch backend: prepares one (model, variant) group on a device and measures its cells."""
from __future__ import annotations

import gc
import time

import psutil
import torch

from harness.backends.engine import EagerEngine
from harness.backends.measure import measure
from harness.corpus import load_corpus
from harness.meters import stats
from harness.meters.cpu_energy import open_cpu_energy_reader
from harness.models import load_model
from harness.records import Record
from harness.variants import get_variant, policy_for
from harness.variants.inspect import tensor_bytes
from harness.variants.registry import ApplyContext

# Calibration data for AWQ, Wanda and static scales: a fixed number of corpus tokens from the tail
# of the corpus (evaluation reads the head), seeded for synthetic models.
CALIBRATION_SEQS, CALIBRATION_TOKENS, CALIBRATION_SEED = 8, 256, 1234
RSS_METHOD = "psutil RSS of this process, sampled every 5 ms in a thread during the timed window"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    return dev


def compute_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


class _Skip(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class GroupRunner:
    def __init__(self, model_spec: str, variant: str, settings, ctx, model_cache: dict):
        self.model_spec, self.variant_name = model_spec, variant
        self.settings, self.ctx, self.cache = settings, ctx, model_cache
        self.device = resolve_device(settings.device)
        self.dtype = compute_dtype(self.device)
        self.backend = f"pytorch-{self.device.type}"
        self._prepared = False
        self._skip: _Skip | None = None
        self.model = None

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
                self.cache[self.model_spec] = load_model(self.model_spec)
            self.loaded = self.cache[self.model_spec]
            self._check_fit()
            self.model = self.loaded.instantiate(self.device, self.dtype)
            self.corpus_name, self.corpus_text = load_corpus(self.settings.corpus)
            calib, _ = self.loaded.prompt_ids(self.corpus_name, self.corpus_text, CALIBRATION_SEQS,
                                              CALIBRATION_TOKENS, seed=CALIBRATION_SEED, from_end=True)
            policy = policy_for(self.variant_name, self.loaded.shape.num_hidden_layers if self.loaded.shape else None)
            t_apply = time.perf_counter()
            self.applied = variant.apply(self.model, ApplyContext(self.device.type, self.dtype,
                                                                  calib.to(self.device), policy))
            self.apply_s = time.perf_counter() - t_apply
            self.weight_bytes = tensor_bytes(self.model)
            power = self.settings.cpu_power_w or getattr(self.ctx.profile, "power_w", None)
            self.energy = open_cpu_energy_reader(power) if self.device.type == "cpu" else None
        except _Skip as s:
            self._skip = s
        except (torch.OutOfMemoryError, MemoryError) as e:
            self._skip = _Skip("does-not-fit", f"out of memory while loading/applying: {e}")
        self.prepare_s = time.perf_counter() - t0

    def _check_fit(self) -> None:
        shape = self.loaded.shape
        if shape is None:
            return
        need = shape.param_count() * torch.empty((), dtype=self.dtype).element_size()
        free = free_memory_bytes(self.device)
        budget = free * (1 - self.settings.memory_headroom)
        if need > budget:
            raise _Skip("does-not-fit",
                        f"{self.model_spec} needs {need / 1e9:.2f} GB of {self.dtype} weights; "
                        f"{self.device} has {free / 1e9:.2f} GB free ({self.settings.memory_headroom:.0%} kept as headroom)")

    # -- one cell ---------------------------------------------------------------------------------
    def _record(self, cell, **kw) -> Record:
        return Record(model=cell.model, variant=cell.variant, backend=self.backend, profile=self.ctx.profile.id,
                      batch_size=cell.batch_size, prompt_tokens=cell.prompt_tokens, new_tokens=cell.new_tokens,
                      device=str(self.device), dtype=str(self.dtype).replace("torch.", ""),
                      run_id=self.ctx.run_id, provenance=self.ctx.provenance, **kw)

    def run(self, cell) -> Record:
        if not self._prepared:
            self._prepare()
        if self._skip:
            return self._record(cell, status=self._skip.status, reason=self._skip.reason)
        ids, prompt_source = self.loaded.prompt_ids(self.corpus_name, self.corpus_text,
                                                    cell.batch_size, cell.prompt_tokens)
        engine = EagerEngine(self.model, self.device, self.energy)
        try:
            m = measure(engine, ids, cell.new_tokens, self.settings.meter, self.energy,
                        setup_s=self.prepare_s)
        except (torch.OutOfMemoryError, MemoryError) as e:
            return self._record(cell, status="does-not-fit", reason=f"out of memory in the workload: {e}",
                                weight_bytes=self.weight_bytes, kernel=self.applied.kernel)
        self.prepare_s = 0.0  # the group's set-up is charged to its first cell only
        tpot = m.tpot_s_samples
        return self._record(
            cell, kernel=self.applied.kernel, decode_path=engine.name, weights_note=self.loaded.weights_note,
            prompt_source=prompt_source, decode_tok_s=m.decode_tok_s,
            decode_tok_s_stdev=stats.stdev(m.decode_tok_s_per_pass), prefill_tok_s=m.prefill_tok_s,
            ttft_s=stats.median(m.prefill_s_samples), ttft_s_iqr=stats.iqr(m.prefill_s_samples),
            tpot_p50_s=stats.percentile(tpot, 50), tpot_p90_s=stats.percentile(tpot, 90),
            tpot_p99_s=stats.percentile(tpot, 99), tpot_iqr_s=stats.iqr(tpot), repeats=m.repeats,
            timed_s=m.timed_s, setup_s=m.setup_s, timing_source=engine.timing_source,
            peak_rss_bytes=m.peak_rss_bytes, weight_bytes=self.weight_bytes, energy_j=m.energy_j,
            j_per_token_decode=m.j_per_token_decode, energy_source=m.energy_source,
            energy_method=m.energy_method, prefill_s_samples=m.prefill_s_samples,
            decode_s_samples=m.decode_s_samples, tpot_s_samples=tpot,
            calibration_s=self.applied.calibration_s,
            extra={"rss_method": RSS_METHOD, "apply_s": self.apply_s,
                   "load_s": self.loaded.load_s, "calibration_tokens": CALIBRATION_SEQS * CALIBRATION_TOKENS,
                   "first_row_tokens": m.last_tokens[0][:32] if m.last_tokens else [],
                   "definitions": "ttft = prompt forward + first greedy token; decode tokens/s = batch x "
                                  "(new_tokens - 1) decode steps / decode seconds; EOS ignored"})

    def close(self) -> None:
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
