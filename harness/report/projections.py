"""The planner's projections for hardware profiles that the merged runs did not measure, drawn
beside the measured rows (`harness report RUN_DIR... --project PROFILE,...`): for every cell the runs
measured (model, variant, batch, prompt + new tokens), the projection `harness plan` makes
(harness.plan.roofline.project, a datasheet roofline) on each profile asked for. Every figure here
is projected, never measured, and the views say so ("projected by the planner")."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.records import Record, primary

PROJECTED_LABEL = "projected by the planner"


@dataclass(frozen=True)
class Projection:
    profile: str
    model: str
    variant: str
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    status: str                     # the planner's: ok | unsupported | does-not-fit | unknown-fit
    reason: str
    decode_tok_s: float | None
    prefill_tok_s: float | None
    bound: str | None               # memory | compute
    weight_bytes: int
    fits: bool | None
    basis: str = "projected"


def parse_profiles(spec: str | None, profiles_dir: Path | None = None) -> list:
    """The Profiles named in a comma list; ValueError naming the unknown ones and the known ids."""
    if not spec:
        return []
    from harness.profiles.loader import load_profiles

    known = load_profiles(profiles_dir)
    ids = [p.strip() for p in spec.split(",") if p.strip()]
    unknown = [p for p in ids if p not in known]
    if unknown:
        raise ValueError(f"unknown profile(s) {', '.join(map(repr, unknown))} for --project; known: {', '.join(known)}")
    if not ids:
        raise ValueError("--project: no profile given")
    return [known[p] for p in dict.fromkeys(ids)]


def project_unmeasured(records: list[Record], profiles: list) -> tuple[list[Projection], list[str]]:
    """(projections, notes): one projection per measured cell and profile not measured; notes name the
    profiles skipped because the runs measured them and the models the planner has no shape for."""
    from harness.models.spec import ModelSpecError, shape_of
    from harness.plan.roofline import Workload, project
    from harness.variants import VariantError, parse_variant

    measured = {r.profile for r in records}
    notes = [f"{p.id}: measured in these runs, not projected" for p in profiles if p.id in measured]
    todo = [p for p in profiles if p.id not in measured]
    cells = sorted({(r.model, r.variant, r.batch_size, r.prompt_tokens, r.new_tokens)
                    for r in primary(records) if r.status == "ok"})
    out, shapes = [], {}
    for model, variant, batch, prompt, new in cells:
        if model not in shapes:
            try:
                shapes[model] = shape_of(model)
            except (ModelSpecError, OSError, ValueError) as e:
                shapes[model] = None
                notes.append(f"{model}: no shape for the planner ({str(e)[:200]})")
        try:
            spec = parse_variant(variant)
        except VariantError:
            notes.append(f"{variant}: not a registered variant, not projected")
            continue
        if shapes[model] is None or spec.layout is None:
            continue
        w = Workload(model, shapes[model], prompt + new, batch)
        for p in todo:
            row = project(p, spec, w)
            out.append(Projection(p.id, model, variant, batch, prompt, new, row.status, row.reason, row.decode_tok_s,
                                  row.prefill_tok_s, row.bound, row.weight_bytes, row.fits, row.basis))
    return out, list(dict.fromkeys(notes))


def table_rows(projections: list[Projection]) -> list[dict]:
    """Rows for the HTML and Markdown tables, figures formatted as the measured tables format them."""
    from harness.report.fmt import NA, mb, num

    return [{"profile": p.profile, "model": p.model, "variant": p.variant, "batch": p.batch_size,
             "prompt": p.prompt_tokens, "new": p.new_tokens, "status": p.status,
             "decode": num(p.decode_tok_s), "prefill": num(p.prefill_tok_s), "bound": p.bound or NA,
             "weights": mb(p.weight_bytes), "fits": NA if p.fits is None else ("yes" if p.fits else "no"),
             "basis": PROJECTED_LABEL, "reason": p.reason}
            for p in projections]
