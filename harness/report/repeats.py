"""Repetitions of one cell and the meters' own cost, from the records of one run.

- Spread: for each cell measured more than once with meters on (`--repetitions N`), the mean and the
  coefficient of variation (sample stdev / mean) of decode tok/s and of gross decode J/token.
- Meter overhead (`--meter-overhead`): for each cell measured both with and without meters, decode
  tok/s with meters on relative to off, with a 95% confidence interval for the difference of the two
  means (Welch's t). The target is a difference under 1%.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import mean, stdev

from harness.meters.stats import cv, stdev as sd_or_none
from harness.records import CELL_AXES, Record
from harness.report.fmt import NA, md, num, sig

OVERHEAD_TARGET = 0.01   # meters may change decode tok/s by less than 1%

def t95(df: float) -> float:
    """Two-sided 95% quantile of Student's t at DF degrees of freedom (fractional for Welch's), from
    scipy.stats; imported here so that a report without repetitions never loads scipy."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    from scipy.stats import t

    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Spread:
    cell: tuple                    # Record.cell_key, in CELL_AXES order
    n: int
    decode_tok_s_mean: float
    decode_tok_s_cv: float | None
    decode_tok_s_min: float
    decode_tok_s_max: float
    j_per_token_mean: float | None
    j_per_token_cv: float | None


@dataclass(frozen=True)
class Overhead:
    cell: tuple                    # Record.cell_key, in CELL_AXES order
    n_on: int
    n_off: int
    on_mean: float
    off_mean: float
    on_sd: float | None
    off_sd: float | None
    change: float                  # on / off - 1
    ci95: tuple[float, float] | None   # of the change, from Welch's t on the two means

    @property
    def within_target(self) -> bool:
        return abs(self.change) < OVERHEAD_TARGET


def _by_cell(records: list[Record], meters: bool) -> dict[tuple, list[Record]]:
    out: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if r.status == "ok" and r.meters == meters and r.decode_tok_s is not None:
            out[r.cell_key].append(r)
    return out


def spreads(records: list[Record]) -> list[Spread]:
    out = []
    for cell, rs in _by_cell(records, True).items():
        if len(rs) < 2:
            continue
        tok = [r.decode_tok_s for r in rs]
        j = [r.j_per_token_decode for r in rs]
        have_j = all(x is not None for x in j)
        out.append(Spread(cell, len(rs), mean(tok), cv(tok), min(tok), max(tok),
                          mean(j) if have_j else None, cv(j) if have_j else None))
    return out


def welch_ci(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95% interval for mean(a) - mean(b); None when either side has fewer than two values."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = stdev(a) ** 2 / len(a), stdev(b) ** 2 / len(b)
    d = mean(a) - mean(b)
    if va + vb == 0:
        return d, d
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t95(df) * math.sqrt(va + vb)
    return d - half, d + half


def overheads(records: list[Record]) -> list[Overhead]:
    on, off = _by_cell(records, True), _by_cell(records, False)
    out = []
    for cell in on:
        if cell not in off:
            continue
        a, b = [r.decode_tok_s for r in on[cell]], [r.decode_tok_s for r in off[cell]]
        ci = welch_ci(a, b)
        base = mean(b)
        out.append(Overhead(cell, len(a), len(b), mean(a), base, sd_or_none(a), sd_or_none(b), mean(a) / base - 1,
                            (ci[0] / base, ci[1] / base) if ci else None))
    return out


def _pct(x: float | None, digits: int = 1) -> str:
    return NA if x is None else f"{x * 100:.{digits}f}%"


def _signed_pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def render(records: list[Record]) -> list[str]:
    out: list[str] = []
    sp = spreads(records)
    if sp:
        out += ["", "## Repetitions (meters on)", "",
                "| model | variant | backend | batch | prompt | repetitions | decode tok/s mean (min - max) | CV | "
                "J/token decode mean | CV |", "|---|---|---|---|---|---|---|---|---|---|"]
        for s in sp:
            c = dict(zip(CELL_AXES, s.cell))
            out.append(f"| {md(c['model'])} | {md(c['variant'])} | {md(c['backend'])} | {c['batch_size']} | "
                       f"{c['prompt_tokens']} | {s.n} | {num(s.decode_tok_s_mean)} "
                       f"({num(s.decode_tok_s_min)} - {num(s.decode_tok_s_max)}) | {_pct(s.decode_tok_s_cv, 2)} | "
                       f"{sig(s.j_per_token_mean)} | {_pct(s.j_per_token_cv, 2)} |")
        out += ["", "Each repetition is a full measurement (warm-up, timed loop, energy windows) on the same "
                "compiled engine; CV = sample standard deviation / mean over the repetitions."]
    ov = overheads(records)
    if ov:
        out += ["", "## Meter overhead (decode tok/s, meters on vs off)", "",
                "| model | variant | backend | batch | prompt | on: mean ± sd (n) | off: mean ± sd (n) | on vs off | "
                f"95% CI | under {OVERHEAD_TARGET:.0%}? |", "|---|---|---|---|---|---|---|---|---|---|"]
        for o in ov:
            c = dict(zip(CELL_AXES, o.cell))
            ci = NA if o.ci95 is None else f"{_signed_pct(o.ci95[0])} .. {_signed_pct(o.ci95[1])}"
            out.append(f"| {md(c['model'])} | {md(c['variant'])} | {md(c['backend'])} | {c['batch_size']} | "
                       f"{c['prompt_tokens']} | {num(o.on_mean)} ± {num(o.on_sd, 2)} "
                       f"({o.n_on}) | {num(o.off_mean)} ± {num(o.off_sd, 2)} ({o.n_off}) | {_signed_pct(o.change)} | "
                       f"{ci} | **{'yes' if o.within_target else 'no'}** |")
        out += ["", "Meters on: NVML energy window, power sampler (20 Hz) and RSS sampler during the timed loop. "
                "Off: none of them, the loop held as long as the energy window. The two alternate in ABBA order on "
                "the same compiled engine; the interval is Welch's t on the two means, as a share of the off mean."]
    return out
