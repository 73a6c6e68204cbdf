"""Validation: every measured cell beside its projection from calibrations that exclude the cell's device.

Measured cells come from run folders (ok records of one backend, grouped by profile, model, variant,
batch, prompt and new tokens; repetitions and runs pooled) and from reference-measurement files: JSON
lists of {"profile", "model", "variant", "batch", "prompt_tokens", "new_tokens", "phase",
"measured_tok_s": [low, high], "source"} for figures measured elsewhere and not in committed records.
Decode is projected at the engine's static cache (prompt + new tokens: the whole cache is read each
step), prefill at the prompt length. Error = projected / measured median - 1.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from harness.models.spec import shape_of
from harness.plan.curves import DeviceCalibration
from harness.plan.power import PowerModel, power_scaled
from harness.plan.roofline import Workload, project
from harness.plan.transfer import Projection, project_decode, project_prefill
from harness.profiles.schema import Profile
from harness.records import Record, primary, record_prefill_path, slow_path
from harness.variants import parse_variant


@dataclass
class Cell:
    profile: str
    model: str
    variant: str
    batch: int
    prompt_tokens: int
    new_tokens: int
    phase: str
    measured: list[float]
    source: str
    projection: Projection | None = None
    kernel: str | None = None      # what ran the linears (the record's kernel), where known
    fallback: str | None = None    # the decode path where the cell fell back from the compiled graph (records.slow_path)
    prefill_path: str | None = None  # the prefill the cell ran (engine.prefill: compiled | eager), where known
    clock: str | None = None       # a record's below-full-clock flag (extra.clocks, harness.meters.clocks)

    @property
    def median(self) -> float:
        return statistics.median(self.measured)

    @property
    def error(self) -> float | None:
        return None if self.projection is None or not self.projection.ok else self.projection.tok_s / self.median - 1


def cells_from_records(records: Iterable[Record], source: str, backend: str = "pytorch") -> list[Cell]:
    groups: dict[tuple, dict[str, list[float]]] = {}
    kernels: dict[tuple, str | None] = {}
    paths: dict[tuple, str | None] = {}
    prefills: dict[tuple, str | None] = {}
    clocks: dict[tuple, str] = {}
    for r in primary(records):
        if r.status != "ok" or r.backend != backend:
            continue
        key = (r.profile, r.model, r.variant, r.batch_size, r.prompt_tokens, r.new_tokens)
        g = groups.setdefault(key, {})
        kernels.setdefault(key, r.kernel)
        paths.setdefault(key, slow_path(r))
        prefills.setdefault(key, record_prefill_path(r))
        if (r.extra.get("clocks") or {}).get("flags"):
            clocks.setdefault(key, "; ".join(r.extra["clocks"]["flags"]))
        for phase, x in (("decode", r.decode_tok_s), ("prefill", r.prefill_tok_s)):
            if x:
                g.setdefault(phase, []).append(x)
    return [Cell(*k, phase, xs, source, kernel=kernels[k], fallback=paths[k], prefill_path=prefills[k],
                 clock=clocks.get(k)) for k, g in groups.items() for phase, xs in g.items()]


def cells_from_reference(path: str | Path) -> list[Cell]:
    out = []
    for d in json.loads(Path(path).read_text(encoding="utf-8")):
        out.append(Cell(d["profile"], d["model"], d["variant"], int(d["batch"]), int(d["prompt_tokens"]),
                        int(d["new_tokens"]), d["phase"], [float(x) for x in d["measured_tok_s"]],
                        d.get("source", str(path)), kernel=d.get("kernel"), prefill_path=d.get("prefill_path")))
    return out


def project_cell(c: Cell, cals: list[DeviceCalibration], profiles: Mapping[str, Profile],
                 same_device: bool = False, powers: Sequence[PowerModel] = ()) -> Projection:
    """same_device: also use calibrations of the cell's own device (kernel curves measured there: the
    cells themselves must not be among their sources). powers: power files (harness/plan/power.py); where
    one applies to the cell's device, the full-clock projection is scaled by its prefill factor (prefill)
    or by the recovery after the cell's own prefill (decode)."""
    p = profiles.get(c.profile)
    if p is None:
        return Projection(None, None, None, f"profile {c.profile} not loaded")
    others = list(cals) if same_device else [k for k in cals if k.profile != c.profile]
    v, shape = parse_variant(c.variant), shape_of(c.model)
    pre_row = project(p, v, Workload(c.model, shape, c.prompt_tokens, c.batch))
    m = c.batch * c.prompt_tokens

    def prefill() -> Projection:
        return project_prefill(others, p, c.variant, m, pre_row.weight_bytes, pre_row.kv_cache_bytes, kernel=c.kernel,
                               batch=c.batch, gemm_bytes=pre_row.gemm_weight_bytes, prefill_path=c.prefill_path,
                               head_bytes=pre_row.head_weight_bytes, layers=pre_row.layers,
                               block_params=pre_row.block_params, widths=pre_row.prefill_widths)
    if c.phase == "prefill":
        pre = prefill()
        return power_scaled(pre, powers, p, lambda pm: pm.prefill_factor(pre.kernel, m, m / pre.tok_s, pre.gemm_share,
                                                                         pre_row.block_params))
    row = project(p, v, Workload(c.model, shape, c.prompt_tokens + c.new_tokens, c.batch))
    got = project_decode(others, p, c.variant, c.batch, row.weight_bytes, row.kv_cache_bytes,
                         row.gemm_weight_bytes, row.layers, kernel=c.kernel, block_params=row.block_params)

    def decode(pm: PowerModel) -> tuple[float, str]:
        pre = prefill()     # the cell's own prefill: only where a power model applies
        if not (pre.ok or pre_row.prefill_tok_s):
            return 1.0, f"decode at full clock: its prefill has no projection ({pre.source})"
        # without a prefill curve at its M, the prefill's time is bounded below by the roofline (datasheet
        # peaks): enough to tell whether it outlasts the power controller's onset, not a projection of it
        t_pre = m / (pre.tok_s if pre.ok else pre_row.prefill_tok_s)
        f, note = pm.decode_factor(pre.kernel or got.kernel, m, t_pre, got.kernel, c.batch, c.batch / got.tok_s,
                                   c.new_tokens - 1, got.gemm_share, pre_row.block_params)
        if not pre.ok:
            note += (f"; its prefill has no curve at M={m:,}: its time taken as at least the roofline's "
                     f"{t_pre * 1e3:,.0f} ms")
        return f, note
    return power_scaled(got, powers, p, decode)


def prefill_mismatch(c: Cell, cals: list[DeviceCalibration]) -> str:
    """A remark where a prefill cell ran another prefill path than the one the calibrations' non-GEMM
    prefill cost was fitted on (the row is counted: the planner projects that cell with that cost)."""
    fitted = {pc.get("prefill_path", "eager") for k in cals for pc in k.prefill_costs}
    if c.phase != "prefill" or not c.prefill_path or not fitted or c.prefill_path in fitted:
        return ""
    return f"; measured with a {c.prefill_path} prefill, the prefill cost is of {'/'.join(sorted(fitted))} prefills"


def summary(cells: list[Cell], within: float = 0.25) -> dict:
    """Counts over the cells; a cell that fell back from the compiled graph (Cell.fallback) is shown but
    not counted: the projections are of the compiled engine."""
    counted = [c for c in cells if not c.fallback]
    proj = [c for c in counted if c.error is not None]
    errs = [abs(c.error) for c in proj]
    return {"cells": len(counted), "projected": len(proj), "no_curve": len(counted) - len(proj),
            "fallback": len(cells) - len(counted),
            "within": sum(e <= within for e in errs), "median_abs_error": statistics.median(errs) if errs else None,
            "max_abs_error": max(errs) if errs else None,
            "inside_interval": sum(c.projection.contains(c.median) for c in proj)}


def _fmt(x: float | None) -> str:
    return "-" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}")


def _measured(c: Cell) -> str:
    lo, hi = min(c.measured), max(c.measured)
    return _fmt(c.median) if lo == hi else f"{_fmt(c.median)} ({_fmt(lo)}-{_fmt(hi)}, n={len(c.measured)})"


def to_markdown(cells: list[Cell], cals: list[DeviceCalibration], title: str, note: str = "",
                within: float = 0.25, median_bar: float | None = 0.15, same_device: bool = False,
                powers: Sequence[PowerModel] = ()) -> str:
    s = summary(cells, within)
    pct = lambda x: "-" if x is None else f"{x:.1%}"   # noqa: E731
    inside_share = s["inside_interval"] / s["projected"] if s["projected"] else None
    med_ok = s["median_abs_error"] is not None and median_bar is not None and s["median_abs_error"] <= median_bar
    all_in = s["projected"] == s["cells"] and s["within"] == s["cells"]
    whose = ("each cell is projected from these calibrations, its own device's included: none of them was fitted "
             "on the cells below" if same_device else "each cell is projected only from calibrations of other devices")
    med = f" (bar: {median_bar:.0%}; {'met' if med_ok else 'NOT met'})" if median_bar is not None else ""
    lines = [f"# {title}", ""] + ([note.strip(), ""] if note.strip() else []) + [
             f"Calibrations used ({whose}): "
             + "; ".join(f"{k.profile} (arch {k.arch}, from {', '.join(k.provenance.get('sources', [])) or k.path}, "
                         f"harness {k.provenance.get('harness_commit') or '?'})" for k in cals) + ".", "",
             *([("Power files (long prefills and the decode after them; harness/plan/power.py): "
                 + "; ".join(f"{m.profile} ({m.board}, {m.power_limit_w:g} W, from "
                             f"{', '.join(m.provenance.get('sources', [])) or m.path})" for m in powers) + "."), ""]
               if powers else []),
             f"- cells: {s['cells']}; projected: {s['projected']}; no curve: {s['no_curve']}"
             + (f"; not counted: {s['fallback']} measured on a fallback path (not the compiled CUDA graph the "
                "projections are of; their rows say which)" if s["fallback"] else ""),
             f"- within {within:.0%} of the measurement: {s['within']} of {s['projected']} projected "
             f"(bar: every cell; {'met' if all_in else 'NOT met'})",
             f"- median |error|: {pct(s['median_abs_error'])}{med}; "
             f"max |error|: {pct(s['max_abs_error'])}",
             f"- measured median inside the interval: {s['inside_interval']} of {s['projected']} ({pct(inside_share)}; "
             f"bar: 90%; {'met' if inside_share is not None and inside_share >= 0.9 else 'NOT met'})", "",
             "| device | model | variant | batch | prompt+new | phase | measured tok/s | projected [interval] "
             "| error | inside | curves / reason | measured in |", "|" + "---|" * 12]
    for c in cells:
        p = c.projection
        proj = "-" if p is None or not p.ok else f"{_fmt(p.tok_s)} [{_fmt(p.low)}, {_fmt(p.high)}]"
        inside = "-" if p is None or not p.ok else ("yes" if p.contains(c.median) else "**no**")
        if c.fallback:
            inside = f"not counted: {c.fallback}"
        err = "-" if c.error is None else (f"{c.error:+.1%}" if abs(c.error) <= within else f"**{c.error:+.1%}**")
        at_full = "" if p is not None and "power loads" in p.source else "; projections are at full clock"
        why = (p.source if p else "-") + prefill_mismatch(c, cals) \
            + (f"; measured below full clock ({c.clock}){at_full}" if c.clock else "")
        lines.append(f"| {c.profile} | {c.model} | {c.variant} | {c.batch} | {c.prompt_tokens}+{c.new_tokens} | "
                     f"{c.phase} | {_measured(c)} | {proj} | {err} | {inside} | "
                     f"{why.replace('|', '/')} | {c.source} |")
    return "\n".join(lines) + "\n"
