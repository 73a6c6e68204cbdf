"""From the question to the Advice: load the evidence, enumerate deployments (measured first, projections
for the rest), judge and rank. No torch: records, profiles and the planner only."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from harness.advise.constraints import AdviseError, Constraints
from harness.advise.deployment import Deployment
from harness.advise.measured import Quality, measured_deployments
from harness.advise.output import Context
from harness.advise.prices import Prices
from harness.advise.projected import project_deployments
from harness.advise.rank import Advice, advise
from harness.models.spec import ModelSpecError, shape_of
from harness.plan.roofline import Workload
from harness.profiles.schema import Profile
from harness.records import Record, load_records
from harness.variants import VariantError, parse_variants

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_VARIANTS = ("baseline", "int8-wo", "int8-dq", "int4-wo", "int4-awq", "fp8-wo", "fp8-dq", "w4a8")
DEFAULT_CONTEXT = 2048


@dataclass
class Question:
    model: str
    records: list[Path]
    profiles: list[Profile]              # loaded profiles to project onto
    profile_ids: set[str] | None         # None: every profile (records' detected ones included)
    variants: str | None                 # comma list; None: measured ones + DEFAULT_VARIANTS
    batches: list[int] | None
    context: int | None                  # None: the records' own, else DEFAULT_CONTEXT
    constraints: Constraints
    objective: str
    prices: Prices | None = None
    calibrate_with: tuple[Path, ...] = ()
    max_gpus: int = 8


def load_evidence(paths: list[Path]) -> dict[str, list[Record]]:
    out = {}
    for p in paths:
        try:
            out[str(p)] = load_records(p)
        except (OSError, ValueError) as e:
            raise AdviseError(f"--records {p}: {e}") from None
    return out


def _context(q: Question, mine: list[Record]) -> tuple[int, str]:
    if q.context is not None:
        return q.context, "asked; records count when measured at a context at least this long"
    seen = Counter(r.prompt_tokens + r.new_tokens for r in mine if r.status == "ok")
    if seen:
        ctx = seen.most_common(1)[0][0]
        return ctx, f"the records' own (prompt + new tokens; the most common of {sorted(seen)}); projections at {ctx}"
    return DEFAULT_CONTEXT, "default; no record of this model"


def _calibrations(evidence: dict[str, list[Record]], extra: tuple[Path, ...], profs: Mapping[str, Profile]):
    """(kernel curves, per-variant efficiencies, notes) from the record folders and --calibrate-with."""
    from harness.plan.calibrate import calibrate
    from harness.plan.sources import CalibrationFileError, fit_records, load_sources

    records = [r for recs in evidence.values() for r in recs]
    notes, cals = [], []
    try:
        more, more_records, _ = load_sources(list(extra), profs) if extra else ([], [], [])
    except (FileNotFoundError, ValueError, CalibrationFileError) as e:
        raise AdviseError(f"--calibrate-with: {e}") from None
    if records:
        fitted, _ = fit_records(records, profs, list(evidence))
        cals += fitted
    cals += more
    eff = calibrate(records + more_records, profs) if records or more_records else None
    for c in cals:
        notes.append(f"curves: {c.profile} (arch {c.arch}), {len(c.curves)} curves")
    if eff is not None:
        for e in eff.measured:
            notes.append(f"efficiency: {e.profile} {e.variant}: measured/roofline decode "
                         f"{'-' if e.decode is None else f'{e.decode:.2f}'} ({e.records} records)")
    return cals, eff, notes


def _variants(q: Question, mine: list[Record]):
    names = q.variants or ",".join(dict.fromkeys([r.variant for r in mine] + list(DEFAULT_VARIANTS)))
    try:
        return parse_variants(names)
    except VariantError as e:
        raise AdviseError(f"--variants: {e}") from None


def _describe_sources(evidence: dict[str, list[Record]]) -> list[str]:
    if len(evidence) <= 3:
        return [f"{len(v)} records in {k}" for k, v in evidence.items()]
    parents = sorted({str(Path(k).parent) for k in evidence})
    return [f"{sum(map(len, evidence.values()))} records in {len(evidence)} run folders under {', '.join(parents)} "
            f"({', '.join(Path(k).name for k in evidence)})"]


def answer(q: Question) -> tuple[Advice, Context]:
    try:
        shape = shape_of(q.model)
    except (ModelSpecError, OSError, KeyError) as e:
        raise AdviseError(f"--model: {e}") from None
    evidence = load_evidence(q.records)
    profs = {p.id: p for p in q.profiles}
    mine = [r for recs in evidence.values() for r in recs if r.model == q.model]
    unknown = (q.profile_ids or set()) - set(profs) - {r.profile for recs in evidence.values() for r in recs}
    if unknown:
        raise AdviseError(f"--profiles: unknown {', '.join(sorted(unknown))} (not a profile file, class or a profile "
                          "the records name)")
    ctx, ctx_note = _context(q, mine)
    measured, m_notes = measured_deployments(evidence, q.model, q.context, profs, q.constraints.headroom)
    if q.profile_ids is not None:
        measured = [d for d in measured if d.profile in q.profile_ids]
    batches = sorted(set(q.batches or DEFAULT_BATCHES) | ({d.batch_size for d in measured} if not q.batches else set()))
    if q.batches:
        measured = [d for d in measured if d.batch_size in q.batches]
    variants = _variants(q, mine)
    if q.variants:
        measured = [d for d in measured if d.variant in {v.name for v in variants}]
    cals, eff, c_notes = _calibrations(evidence, q.calibrate_with, profs)
    w = Workload(q.model, shape, ctx, 1, q.constraints.headroom)
    projected, skipped = project_deployments(q.profiles, variants, w, batches, cals, eff, q.max_gpus)
    have = {(d.profile, d.variant, d.batch_size, d.gpus) for d in measured}
    rows: list[Deployment] = measured + [d for d in projected if (d.profile, d.variant, d.batch_size, d.gpus) not in have]
    if q.prices is not None:
        for d in rows:
            d.price_per_hour = q.prices.of(d.profile)
    advice = advise(rows, q.constraints, Quality([r for recs in evidence.values() for r in recs], q.model), q.objective)
    sources = _describe_sources(evidence)
    if q.prices is not None:
        sources.append(f"prices from {q.prices.path}" + (f" ({q.prices.source})" if q.prices.source else ""))
    notes = ([f"{len(measured)} measured and {len(rows) - len(measured)} projected deployments considered "
              f"(batches {', '.join(map(str, batches))}; "
              + (f"up to {q.max_gpus} GPUs where the profile has an interconnect)" if q.max_gpus > 1 else "one device each)")]
             + c_notes + m_notes + [f"not supported: {s}" for s in skipped])
    return advice, Context(q.model, ctx, ctx_note, q.constraints, sources,
                           q.prices.currency if q.prices else "", notes)
