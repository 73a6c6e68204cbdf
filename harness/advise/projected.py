"""Deployments projected by the planner (harness/plan) where nothing was measured.

The speed of a projected deployment, best evidence first:
1. kernel curves of a device of the same architecture (harness/plan/transfer.py), with their interval;
2. the roofline times the measured/projected efficiency of the same profile, or the median of its class
   (harness/plan/calibrate.py): a point figure, no interval;
3. the roofline ceiling alone: an upper bound on speed from datasheet figures, said so in the row.

TTFT is the prefill of the batch's prompts in one pass (as the harness measures it), of the whole context;
TPOT is the decode step at the full context. A projection has no spread, so the same figure stands for
every percentile, and the row says so. Over N GPUs (tensor parallel, harness/plan/multigpu.py) decode
reads weights and KV / N per GPU plus the all-reduces; the prefill's compute is divided by N (its
all-reduces are left out: an optimistic TTFT, noted). Energy is an upper estimate: N x the top of the
profile's power range x projected time.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from harness.advise.deployment import CEILING, PROJECTED, Deployment
from harness.plan.calibrate import Calibration
from harness.plan.multigpu import GPU_COUNTS, allreduce_step_s, gpus_needed, load_interconnects, per_gpu_need
from harness.plan.roofline import PlanRow, Workload, project
from harness.plan.transfer import Projection, project_decode, project_prefill
from harness.profiles.schema import Profile
from harness.variants.spec import VariantSpec

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Speed:
    decode: float | None
    low: float | None
    high: float | None
    prefill: float | None
    basis: str
    tier: str = "ceiling"
    prefill_basis: str = ""


def _efficiency_basis(row: PlanRow) -> str:
    return f"roofline x efficiency {row.efficiency_decode:.2f} ({row.calibrated_from})"


def _prefill(row: PlanRow, q: Projection | None) -> tuple[float | None, str]:
    if q is not None and q.ok:
        return q.tok_s, f"TTFT from prefill curves ({q.source})"
    if row.calibrated_prefill_tok_s:
        return row.calibrated_prefill_tok_s, (f"TTFT from the roofline x prefill efficiency "
                                              f"{row.efficiency_prefill:.2f} ({row.calibrated_from})")
    if row.prefill_tok_s:
        return row.prefill_tok_s, "TTFT from the prefill roofline ceiling (optimistic)"
    return None, "no prefill projection (" + (row.reason.split(";")[-1].strip() or "no figure") + ")"


def speed_one_gpu(row: PlanRow, p: Profile, cals, eff: Calibration | None) -> Speed:
    """Decode and prefill tokens/s of one GPU, with the evidence that gave them (module doc, 1-3)."""
    if eff is not None:
        eff.apply([row])
    d = project_decode(cals, p, row.variant, row.batch_size, row.weight_bytes, row.kv_cache_bytes) if cals else None
    q = project_prefill(cals, p, row.variant, row.batch_size * row.context_tokens, row.weight_bytes,
                        row.kv_cache_bytes) if cals else None
    prefill, pb = _prefill(row, q)
    if d is not None and d.ok:
        return Speed(d.tok_s, d.low, d.high, prefill, d.source + " (interval: curve spread, bandwidth bounds, "
                     "transfer error)", "curves", pb)
    if row.calibrated_decode_tok_s:
        return Speed(row.calibrated_decode_tok_s, None, None, prefill, _efficiency_basis(row), "efficiency", pb)
    if row.decode_tok_s:
        why = f"; {d.source}" if d is not None else ""
        return Speed(row.decode_tok_s, None, None, prefill, CEILING + " (datasheet figures: an upper bound "
                     "on speed)" + why, "ceiling", pb)
    return Speed(None, None, None, prefill, row.reason or "no projection", "none", pb)


def speed_tp(row: PlanRow, p: Profile, v: VariantSpec, w: Workload, n: int, cals,
             eff: Calibration | None) -> Speed | str:
    """Speed over n GPUs, or the reason there is none. The whole model's one-GPU figures come from a
    profile with n times the memory where the model does not fit one GPU (only the figures are used)."""
    link = load_interconnects().get(p.id)
    if link is None:
        return f"{p.id}: interconnect not published"
    if w.shape.num_key_value_heads % n:
        return f"{w.shape.num_key_value_heads} KV heads do not split over {n} GPUs"
    ar = allreduce_step_s(link, w.shape.num_hidden_layers, w.batch_size, w.shape.hidden_size, n)
    B = w.batch_size
    whole = row if row.decode_tok_s or not p.memory_bytes else project(replace(p, memory_bytes=p.memory_bytes * n), v, w)
    one = speed_one_gpu(whole, p, None, eff)   # roofline / efficiency on the whole model, then split below
    basis, tier = one.basis, one.tier
    dec = low = high = None
    if one.decode:
        dec = B / (B / one.decode / n + ar)
    if cals:
        pr: Projection = project_decode(cals, p, row.variant, B, row.weight_bytes / n, row.kv_cache_bytes / n)
        if pr.ok:
            dec, low, high = (B / (B / x + ar) for x in (pr.tok_s, pr.low, pr.high))
            basis, tier = pr.source, "curves"
    basis += f"; TP over {n} ({link.kind}, all-reduce {ar * 1e3:.2f} ms/step)"
    return Speed(dec, low, high, None if one.prefill is None else one.prefill * n, basis, tier, one.prefill_basis)


def _deployment(row: PlanRow, p: Profile, n: int, s: Speed, w: Workload) -> Deployment:
    B, N = w.batch_size, w.context_tokens
    need = per_gpu_need(row, n)
    usable = row.memory_usable_bytes
    fits = None if usable is None else need <= usable
    tpot = None if not s.decode else B / s.decode
    ttft = None if not s.prefill else B * N / s.prefill
    power = row.power_w
    d = Deployment(
        profile=p.id, profile_class=p.class_, variant=row.variant, backend="-", batch_size=B, gpus=n,
        context_tokens=N, evidence=PROJECTED, basis=s.basis, tier=s.tier, kernel=row.compute_format,
        decode_tok_s=s.decode, decode_low=s.low, decode_high=s.high,
        ttft_s={q: ttft for q in PERCENTILES}, tpot_s={q: tpot for q in PERCENTILES},
        latency_note="projected: one figure for every percentile (no spread is projected); " + s.prefill_basis,
        j_per_token=None if not (s.decode and power) else n * power / s.decode,
        energy_basis=f"upper estimate: {n} x {power:g} W x projected time" if power else "no power figure",
        memory_need_bytes=need, memory_usable_bytes=usable, fits=fits,
        fit_detail=(f"{need / 1e9:.1f} GB per device" + (f" of {usable / 1e9:.1f} GB usable" if usable else
                                                      " (capacity not published)")))
    if s.low is not None and tpot is not None:
        d.latency_note += f"; TPOT interval {B / s.high * 1e3:.3g}-{B / s.low * 1e3:.3g} ms"
    if n > 1:
        d.notes.append("TTFT over TP: prefill compute / N, its all-reduces left out (optimistic)")
    return d


def gpu_counts(row: PlanRow, p: Profile, w: Workload, max_gpus: int) -> list[int]:
    """1 where it fits (or the fit is unknown), else the smallest count that fits, and the larger counts
    up to max_gpus (more GPUs buy a faster prefill and decode)."""
    need = gpus_needed(p, row, w.shape.num_key_value_heads)
    if row.memory_usable_bytes is None or p.id not in load_interconnects():   # no multi-GPU figures: one GPU
        return [1]
    if need is None:   # does not fit even the most GPUs: one row that says so
        return [max(n for n in GPU_COUNTS if n <= max_gpus)]
    return [n for n in GPU_COUNTS if need <= n <= max_gpus]


def project_deployments(profiles: list[Profile], variants: list[VariantSpec], base: Workload, batches: list[int],
                        cals, eff: Calibration | None, max_gpus: int) -> tuple[list[Deployment], list[str]]:
    out, skipped = [], []
    for p in profiles:
        unsupported = []
        for v in variants:
            for b in batches:
                w = Workload(base.model, base.shape, base.context_tokens, b, base.headroom)
                row = project(p, v, w)
                if row.status == "unsupported":
                    if b == batches[0]:
                        unsupported.append(f"{v.name} ({row.reason.split(':')[0]})")
                    continue
                for n in gpu_counts(row, p, w, max_gpus):
                    s = speed_one_gpu(row, p, cals, eff) if n == 1 else speed_tp(row, p, v, w, n, cals, eff)
                    if isinstance(s, str):
                        s = Speed(None, None, None, None, s, "none")
                    out.append(_deployment(row, p, n, s, w))
        if unsupported:
            skipped.append(f"{p.id}: {', '.join(unsupported)}")
    return out, skipped
