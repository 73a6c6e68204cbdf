"""Deployments from measured Records, and the quality figures every deployment of a variant borrows.

Matching (the issue's rule: model, variant, batch and profile; the backend stays part of the deployment):
a record stands for the asked context when its own context (prompt + new tokens) is at least the asked
one, since a longer context only slows a step and a prefill; of several, the shortest such context, and of
records at that context (repetitions, several runs) the one with the median decode rate. Records shorter
than the asked context are not evidence for it (the projection covers that deployment, with a note).

Quality comes only from measured records of the same model with real weights (a `synthetic:` model has
random weights: its KL says nothing). A variant's quality is a property of its weights, so a projected
deployment of the variant borrows it, with the profile and backend it was measured on named.
"""
from __future__ import annotations

import statistics
from typing import Iterable, Mapping

from harness.advise.deployment import MEASURED, Deployment
from harness.meters.stats import percentile
from harness.profiles.schema import Profile
from harness.records import Record, primary

MEASURED_VERDICTS = ("pass", "fail")   # "not-meaningful" / "skipped": no quality figure


def real_weights(model: str) -> bool:
    return not model.startswith("synthetic:")


def record_gpus(r: Record) -> int:
    tp = r.extra.get("engine.tensor_parallel", r.extra.get("tensor_parallel"))
    return int(tp) if isinstance(tp, (int, float)) and tp >= 1 else 1


def _context(r: Record) -> int:
    return r.prompt_tokens + r.new_tokens


def pick(records: list[Record], context: int | None) -> Record | None:
    """The record that stands for one deployment at `context` (None: any context), see the module doc."""
    ok = [r for r in records if r.status == "ok" and r.decode_tok_s is not None]
    if context is not None:
        ok = [r for r in ok if _context(r) >= context]
    if not ok:
        return None
    shortest = min(_context(r) for r in ok)
    same = sorted((r for r in ok if _context(r) == shortest), key=lambda r: r.decode_tok_s)
    return same[(len(same) - 1) // 2]


class Quality:
    """Quality figures of one model's variants, from its measured records."""

    def __init__(self, records: Iterable[Record], model: str):
        self.model = model
        self.real = real_weights(model)
        self.records = [r for r in primary(records) if r.model == model and r.status == "ok"
                        and r.quality_verdict in MEASURED_VERDICTS] if self.real else []

    def why_none(self) -> str:
        if not self.real:
            return f"quality not measured ({self.model} has random weights)"
        return "quality not measured (no record of this variant with a quality figure)"

    def lookup(self, variant: str, profile: str, backend: str) -> tuple[float | None, float | None, str, str]:
        """(KL mean, top-1 agreement, verdict, source); the source names where it was measured."""
        mine = [r for r in self.records if r.variant == variant]
        for pref in (lambda r: r.profile == profile and r.backend == backend, lambda r: r.profile == profile,
                     lambda r: True):
            found = [r for r in mine if pref(r)]
            if found:
                r = found[0]
                tokens = r.quality.scored_tokens
                src = (f"measured on {r.profile} ({r.backend}, run {r.run_id or '?'}"
                       + (f", {tokens} scored tokens" if tokens else "") + ")")
                return r.kl_mean, r.top1_agreement, r.quality_verdict, src
        return None, None, "", self.why_none()


def _latency(r: Record) -> tuple[dict, dict, str]:
    samples = list(r.prefill_s_samples)
    ttft = {q: percentile(samples, q) for q in (50, 90, 99)} if samples else {50: r.ttft_s, 90: None, 99: None}
    tpot = {50: r.tpot_p50_s, 90: r.tpot_p90_s, 99: r.tpot_p99_s}
    note = (f"TTFT percentiles over {len(samples)} timed passes; TPOT over {len(r.tpot_s_samples) or '?'} steps"
            if samples else "TTFT: median only (no samples in the record)")
    return ttft, tpot, note


def deployment_of(r: Record, n_same: int, source: str, profiles: Mapping[str, Profile], headroom: float) -> Deployment:
    p = profiles.get(r.profile)
    need = r.peak_vram_bytes if r.peak_vram_bytes is not None else r.peak_rss_bytes
    usable = round(p.memory_bytes * (1 - headroom)) if p is not None and p.memory_bytes else None
    ttft, tpot, note = _latency(r)
    e_basis = f"measured ({r.energy_source})" if r.energy_source not in ("unavailable", "estimate") else \
        ("estimate: " + r.energy_method if r.energy_source == "estimate" else "not measured: " + (r.energy_method or "no counter"))
    what = "peak VRAM" if r.peak_vram_bytes is not None else "peak RSS"
    d = Deployment(
        profile=r.profile, profile_class=p.class_ if p is not None else "detected", variant=r.variant,
        backend=r.backend, batch_size=r.batch_size, gpus=record_gpus(r), context_tokens=_context(r),
        evidence=MEASURED, basis=f"{source}" + (f" (median of {n_same} records)" if n_same > 1 else ""),
        kernel=r.kernel, decode_tok_s=r.decode_tok_s, ttft_s=ttft, tpot_s=tpot, latency_note=note,
        j_per_token=r.j_per_token_decode if r.energy_source != "unavailable" else None, energy_basis=e_basis,
        memory_need_bytes=need, memory_usable_bytes=usable, fits=True,
        fit_detail=f"ran ({what} {need / 1e9:.2f} GB)" if need else "ran", record_context_tokens=_context(r))
    if r.extra.get("foreign_load", {}).get("flags"):
        d.notes.append("foreign load flagged during the measurement: " + "; ".join(r.extra["foreign_load"]["flags"]))
    if (r.extra.get("clocks") or {}).get("flags"):
        d.notes.append("measured below full clock: " + "; ".join(r.extra["clocks"]["flags"]))
    return d


def measured_deployments(records_by_dir: Mapping[str, list[Record]], model: str, context: int | None,
                         profiles: Mapping[str, Profile], headroom: float) -> tuple[list[Deployment], list[str]]:
    """One deployment per (profile, variant, backend, batch, GPUs) measured for `model`; and notes on the
    cells that could not stand for the asked context."""
    groups: dict[tuple, list[tuple[str, Record]]] = {}
    for src, recs in records_by_dir.items():
        for r in primary(recs):
            if r.model == model:
                groups.setdefault((r.profile, r.variant, r.backend, r.batch_size, record_gpus(r)), []).append((src, r))
    out, notes = [], []
    for key, items in groups.items():
        recs = [r for _, r in items]
        r = pick(recs, context)
        if r is None:
            have = sorted({_context(x) for x in recs if x.status == "ok"})
            why = f"measured only at context {', '.join(map(str, have))}" if have else \
                "no ok record (" + ", ".join(sorted({x.status for x in recs})) + ")"
            notes.append(f"{key[0]} / {key[1]} [{key[2]}] / batch {key[3]}: {why}: not evidence for context {context}")
            continue
        same = [x for x in recs if x.status == "ok" and x.decode_tok_s is not None and _context(x) == _context(r)]
        src = next(s for s, x in items if x is r)
        out.append(deployment_of(r, len(same), src, profiles, headroom))
        if len(same) > 1:
            spread = [x.decode_tok_s for x in same]
            out[-1].notes.append(f"{len(same)} records: decode {min(spread):.1f}-{max(spread):.1f} tok/s "
                                 f"(median {statistics.median(spread):.1f})")
    return out, notes
