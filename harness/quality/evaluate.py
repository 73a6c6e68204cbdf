"""Quality of a variant against the baseline on fixed token positions.

Flow: `QualityReference.build` runs the baseline once per model over sliding windows of the corpus
head and keeps what KL needs (its log-probabilities, top-1 tokens, NLL); `evaluate` runs a variant
over exactly the same windows (they live in the reference) and compares; `verdict` applies the
thresholds. Synthetic models (random weights) get `not_meaningful()`: nothing is computed.

Memory: the reference holds positions x vocab log-probabilities on the host, in
`settings.reference_dtype`: SmolLM2 (vocab 49152) at the default 768 positions is 75 MB in float16
(151 MB in float32); a 128k-vocab model is 197 MB. With float16, KL is computed between both sides'
float16-rounded log-probabilities, each renormalized in float32, so identical outputs give exactly 0
and a proper distribution is compared with a proper one. Exactness: on SmolLM2 int8-wo (1024
positions) float16 storage gave mean KL 0.0043648 vs 0.0043636 with float32 (0.03% apart), p99
0.014822 vs 0.014835. Top-1 and perplexity always use the variant's float32 log-probabilities.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from harness.quality import metrics
from harness.quality.metrics import Window
from harness.quality.settings import QualitySettings

MEASURED, NOT_MEANINGFUL, SKIPPED = "measured", "not-meaningful", "skipped"
SYNTHETIC_REASON = "random weights (synthetic model): perplexity and KL would not mean anything"
_KL_CHUNK_ELEMENTS = 1 << 24   # rows per KL chunk = this / vocab: bounds float32 temporaries to ~64 MB


@dataclass(frozen=True)
class QualityResult:
    """Quality of one variant. Figures are None unless status is `measured`."""
    status: str
    perplexity: float | None = None
    kl_mean: float | None = None          # nats, KL(P_baseline || P_variant) averaged over positions
    kl_p99: float | None = None           # nats, 99th percentile of the per-position KL
    top1_agreement: float | None = None   # share of positions with the baseline's top token
    tokens: int = 0                       # scored positions
    forward_tokens: int = 0               # tokens run through the model (windows overlap)
    eval_s: float | None = None           # wall seconds of evaluate(), forward passes included
    baseline_perplexity: float | None = None
    note: str = ""

    @property
    def ppl_ratio(self) -> float | None:
        if self.perplexity is None or not self.baseline_perplexity:
            return None
        return self.perplexity / self.baseline_perplexity


def not_meaningful(reason: str = SYNTHETIC_REASON) -> QualityResult:
    return QualityResult(NOT_MEANINGFUL, note=reason)


def skipped(reason: str = "quality measurement turned off (--no-quality)") -> QualityResult:
    return QualityResult(SKIPPED, note=reason)


@dataclass
class QualityReference:
    """The baseline's outputs on fixed positions: built once per model, read by every variant."""
    settings: QualitySettings
    ids: torch.Tensor                 # (positions + 1,) int64 on the host: inputs and targets
    windows: tuple[Window, ...]
    logp: torch.Tensor                # (positions, vocab) baseline log-probs, settings.reference_dtype, host
    top1: torch.Tensor                # (positions,) int64
    nll: torch.Tensor                 # (positions,) float32, nats
    build_s: float
    note: str = ""

    @property
    def positions(self) -> int:
        return self.nll.numel()

    @property
    def perplexity(self) -> float:
        return metrics.perplexity(self.nll)

    @property
    def nbytes(self) -> int:
        return self.logp.numel() * self.logp.element_size()

    @classmethod
    def build(cls, model: nn.Module, token_ids: torch.Tensor, settings: QualitySettings) -> "QualityReference":
        """Run the baseline `model` over the first settings.tokens + 1 ids of `token_ids` (1-D).

        The device is the model's; evaluate() must get variants on the same device and dtype for KL
        to measure the variant and not the device.
        """
        t0 = time.perf_counter()
        ids = token_ids.reshape(-1)
        note = ""
        positions = min(settings.tokens, ids.numel() - 1)
        if positions < 1:
            raise ValueError(f"the corpus has {ids.numel()} tokens: too short to score any position")
        if positions < settings.tokens:
            note = f"corpus has {ids.numel()} tokens: scored {positions} positions, not {settings.tokens}"
        ids = ids[:positions + 1].to(torch.long).cpu().clone()
        windows = metrics.sliding_windows(positions, settings.window, settings.stride)
        store = getattr(torch, settings.reference_dtype)
        logp = top1 = nll = None
        for w, lp in _window_log_probs(model, ids, windows):
            if logp is None:
                logp = torch.empty((positions, lp.shape[-1]), dtype=store)
                top1 = torch.empty(positions, dtype=torch.long)
                nll = torch.empty(positions, dtype=torch.float32)
            rows = slice(w.score_from, w.end)
            logp[rows] = lp.to(store).cpu()
            top1[rows] = metrics.top1(lp).cpu()
            nll[rows] = metrics.nll(lp, ids[w.score_from + 1:w.end + 1].to(lp.device)).cpu()
        return cls(settings, ids, windows, logp, top1, nll, time.perf_counter() - t0, note)


def evaluate(model: nn.Module, reference: QualityReference) -> QualityResult:
    """Perplexity of `model` and its divergence from the reference, on the reference's positions.

    Runs under inference_mode and changes nothing in the model; give it the module itself, not a
    torch.compile'd wrapper (each window length would trigger a recompile).
    """
    t0 = time.perf_counter()
    n = reference.positions
    kl = torch.empty(n, dtype=torch.float32)
    top1 = torch.empty(n, dtype=torch.long)
    nll = torch.empty(n, dtype=torch.float32)
    store = reference.logp.dtype
    for w, lp in _window_log_probs(model, reference.ids, reference.windows):
        rows = slice(w.score_from, w.end)
        top1[rows] = metrics.top1(lp).cpu()
        nll[rows] = metrics.nll(lp, reference.ids[w.score_from + 1:w.end + 1].to(lp.device)).cpu()
        chunk = max(1, _KL_CHUNK_ELEMENTS // lp.shape[-1])
        for i in range(0, w.scored, chunk):
            j = min(i + chunk, w.scored)
            ref = reference.logp[w.score_from + i:w.score_from + j].to(lp.device)
            kl[w.score_from + i:w.score_from + j] = metrics.kl_per_position(
                _as_stored(ref, store), _as_stored(lp[i:j], store)).cpu()
    forward = sum(w.length for w in reference.windows)
    return QualityResult(MEASURED, perplexity=metrics.perplexity(nll), kl_mean=kl.double().mean().item(),
                         kl_p99=metrics.percentile(kl, 99), top1_agreement=metrics.top1_agreement(reference.top1, top1),
                         tokens=n, forward_tokens=forward, eval_s=time.perf_counter() - t0,
                         baseline_perplexity=reference.perplexity, note=reference.note)


def verdict(result: QualityResult, settings: QualitySettings) -> tuple[str, str]:
    """('pass' | 'fail' | 'not-meaningful' | 'skipped', reason). A fail names every threshold crossed."""
    if result.status != MEASURED:
        return result.status, result.note
    checks = [
        ("mean KL", result.kl_mean, settings.kl_mean_max, "max", "{:.4f}"),
        ("p99 KL", result.kl_p99, settings.kl_p99_max, "max", "{:.4f}"),
        ("top-1 agreement", result.top1_agreement, settings.top1_min, "min", "{:.3f}"),
        ("perplexity ratio", result.ppl_ratio, settings.ppl_ratio_max, "max", "{:.3f}"),
    ]
    failed, passed = [], []
    for name, value, limit, kind, fmt in checks:
        if limit is None or value is None:
            continue
        if not math.isfinite(value):   # NaN compares false against any limit: never let it pass
            failed.append(f"{name} is {value}")
            continue
        bad = value > limit if kind == "max" else value < limit
        op = {("max", True): ">", ("max", False): "<=", ("min", True): "<", ("min", False): ">="}[kind, bad]
        (failed if bad else passed).append(f"{name} {fmt.format(value)} {op} {fmt.format(limit)}")
    if failed:
        return "fail", "; ".join(failed)
    return "pass", "; ".join(passed) or "no thresholds set"


def record_fields(result: QualityResult, settings: QualitySettings) -> dict:
    """Keyword arguments for Record: the four quality figures and the verdict."""
    status, _ = verdict(result, settings)
    return {"perplexity": result.perplexity, "kl_mean": result.kl_mean, "kl_p99": result.kl_p99,
            "top1_agreement": result.top1_agreement, "quality_verdict": status}


def record_detail(result: QualityResult, settings: QualitySettings):
    """Record.quality: the verdict's reason and how the figures were made."""
    from harness.records import QualityDetail

    _, reason = verdict(result, settings)
    return QualityDetail(reason=reason, scored_tokens=result.tokens, forward_tokens=result.forward_tokens,
                         eval_s=result.eval_s, baseline_perplexity=result.baseline_perplexity,
                         window_tokens=settings.window, stride_tokens=settings.stride,
                         reference_dtype=settings.reference_dtype,
                         kl_definition="nats, KL(P_baseline || P_variant) per scored position", note=result.note)


def reference_for(loaded, corpus_name: str, corpus_text: str, device: torch.device, dtype: torch.dtype,
                  settings: QualitySettings) -> QualityReference | None:
    """Build the reference from a fresh baseline instance of a LoadedModel; None for synthetic models
    (use not_meaningful() for their records). The instance is dropped before returning."""
    if not loaded.real_weights:
        return None
    ids = loaded.token_ids(corpus_name, corpus_text)
    if ids is None:
        return None
    from harness.variants import get_variant
    from harness.variants.registry import ApplyContext

    model = loaded.instantiate(device, dtype)
    get_variant("baseline").apply(model, ApplyContext(device.type, dtype))
    try:
        return QualityReference.build(model, ids, settings)
    finally:
        del model


# -- internals ---------------------------------------------------------------------------------------


def cached_reference(loaded, corpus_name: str, corpus_text: str, device: torch.device, dtype: torch.dtype,
                     settings: QualitySettings) -> QualityReference | None:
    """reference_for, built once per (device, dtype, settings) and kept on the LoadedModel: every backend
    (torch, ORT, llama.cpp) of a model scores against the same reference."""
    key = (str(device), str(dtype).replace("torch.", ""), settings)
    if key not in loaded.quality_refs:
        loaded.quality_refs[key] = reference_for(loaded, corpus_name, corpus_text, device, dtype, settings)
    return loaded.quality_refs[key]

def _as_stored(logp: torch.Tensor, store: torch.dtype) -> torch.Tensor:
    """Log-probs as the reference holds them: rounded to its dtype and renormalized in float32."""
    if store == torch.float32:
        return logp.float()
    return torch.log_softmax(logp.to(store).float(), dim=-1)


def _forward_kwargs(model: nn.Module) -> set[str]:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return set()
    return {k for k in ("use_cache", "logits_to_keep") if k in params}


def _window_log_probs(model: nn.Module, ids: torch.Tensor,
                      windows: tuple[Window, ...]) -> Iterator[tuple[Window, torch.Tensor]]:
    """Float32 log-probs of each window's scored rows (scored, vocab), on the model's device."""
    device = _device_of(model)
    accepted = _forward_kwargs(model)
    with torch.inference_mode():
        for w in windows:
            kw = {}
            if "use_cache" in accepted:
                kw["use_cache"] = False
            if "logits_to_keep" in accepted:
                kw["logits_to_keep"] = w.scored
            out = model(input_ids=ids[w.begin:w.end].unsqueeze(0).to(device), **kw)
            logits = out.logits if hasattr(out, "logits") else out
            yield w, metrics.log_probs(logits[0, -w.scored:])


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
