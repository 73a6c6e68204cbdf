"""Calibration: measured Records against the planner's own projection for the same cell.

For each ok Record with a decode (or prefill) figure, efficiency = measured / projected, projected on
the Record's profile for its model, variant and batch. Decode is projected at the mean context of the
timed generation (prompt + new/2), prefill at the prompt length. Efficiencies are medians per
(profile, variant); a profile without its own measurement takes the median over the measured profiles
of its class. Rows that receive one are labelled `calibrated`; their projected figures stay beside.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from harness.models.spec import ModelSpecError, shape_of
from harness.variants import VariantError, parse_variant
from harness.plan.roofline import PlanRow, Workload, project
from harness.profiles.schema import Profile
from harness.records import Record, load_records, primary, slow_path


@dataclass(frozen=True)
class Efficiency:
    profile: str
    profile_class: str
    variant: str
    decode: float | None
    prefill: float | None
    records: int


@dataclass
class Calibration:
    measured: list[Efficiency] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # why a record was not used

    def _class_median(self, cls: str, variant: str) -> tuple[float | None, float | None, list[str]]:
        effs = [e for e in self.measured if e.profile_class == cls and e.variant == variant]
        dec = [e.decode for e in effs if e.decode is not None]
        pre = [e.prefill for e in effs if e.prefill is not None]
        return (statistics.median(dec) if dec else None, statistics.median(pre) if pre else None,
                [e.profile for e in effs])

    def apply(self, rows: list[PlanRow]) -> list[PlanRow]:
        """Fill the calibrated columns of rows that have a projection (in place; returns rows)."""
        for row in rows:
            if row.decode_tok_s is None and row.prefill_tok_s is None:
                continue
            own = [e for e in self.measured if e.profile == row.profile and e.variant == row.variant]
            if own:
                dec, pre = own[0].decode, own[0].prefill
                src = f"measured on {row.profile} ({own[0].records} records)"
            else:
                dec, pre, profs = self._class_median(row.profile_class, row.variant)
                src = f"{row.profile_class}-class median of {', '.join(profs)}" if profs else ""
            if dec is None and pre is None:
                continue
            row.basis, row.calibrated_from = "calibrated", src
            row.efficiency_decode, row.efficiency_prefill = dec, pre
            if dec is not None and row.decode_tok_s is not None:
                row.calibrated_decode_tok_s = row.decode_tok_s * dec
            if pre is not None and row.prefill_tok_s is not None:
                row.calibrated_prefill_tok_s = row.prefill_tok_s * pre
        return rows


def _ratio(measured: float | None, projected: float | None) -> float | None:
    return measured / projected if measured is not None and projected else None


DEFAULT_BACKEND = "pytorch"


def calibrate(records: Iterable[Record], profiles: Mapping[str, Profile], backend: str = DEFAULT_BACKEND) -> Calibration:
    """Efficiencies of one backend's records (default: the harness's own engine). Mixing backends would
    average the engine with transformers' generate() rows of the same run, which run at a fifth of the speed."""
    cal = Calibration()
    cells: dict[tuple[str, str], list[tuple[float | None, float | None]]] = {}
    for r in primary(records):
        where = f"record {r.model} / {r.variant} / {r.profile} / batch {r.batch_size}"
        if r.status != "ok":
            cal.skipped.append(f"{where}: status {r.status}")
            continue
        if r.backend != backend:
            cal.skipped.append(f"{where}: backend {r.backend} (calibrating {backend})")
            continue
        if slow_path(r):
            cal.skipped.append(f"{where}: decode path {slow_path(r)} (a fallback, not the compiled CUDA graph)")
            continue
        p = profiles.get(r.profile)
        if p is None:
            cal.skipped.append(f"{where}: profile {r.profile!r} is not among the loaded profiles")
            continue
        try:
            v, shape = parse_variant(r.variant), shape_of(r.model)
        except (VariantError, ModelSpecError, OSError, KeyError) as e:
            cal.skipped.append(f"{where}: {e}")
            continue
        dec = project(p, v, Workload(r.model, shape, r.prompt_tokens + r.new_tokens // 2, r.batch_size))
        pre = project(p, v, Workload(r.model, shape, r.prompt_tokens, r.batch_size))
        pair = (_ratio(r.decode_tok_s, dec.decode_tok_s), _ratio(r.prefill_tok_s, pre.prefill_tok_s))
        if pair == (None, None):
            cal.skipped.append(f"{where}: nothing to compare ({dec.status}: {dec.reason})")
            continue
        cells.setdefault((p.id, r.variant), []).append(pair)
    for (pid, variant), pairs in cells.items():
        dec = [d for d, _ in pairs if d is not None]
        pre = [q for _, q in pairs if q is not None]
        cal.measured.append(Efficiency(pid, profiles[pid].class_, variant,
                                       statistics.median(dec) if dec else None,
                                       statistics.median(pre) if pre else None, len(pairs)))
    return cal


def calibrate_from_dir(run_dir: str | Path, profiles: Mapping[str, Profile],
                       backend: str = DEFAULT_BACKEND) -> Calibration:
    return calibrate(load_records(run_dir), profiles, backend)
