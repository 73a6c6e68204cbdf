"""Run-to-run comparison of Records, with direction, noise and thresholds.

Cells are matched by (model, variant, backend, batch, prompt, new tokens); a run measured with
--repetitions contributes its first meters-on repetition of each cell (`records.primary`). Each metric declares
whether higher is better. A change counts as a regression only when it goes the bad way by more than
its threshold AND by more than the noise: twice the two runs' spreads added (stdev over passes for
decode tok/s, IQR for TTFT and TPOT), so a delta inside the run-to-run spread is never a regression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.records import Record, primary

HIGHER, LOWER = "higher", "lower"
# metric -> (better direction, field holding its spread or None)
METRICS = {
    "decode_tok_s": (HIGHER, "decode_tok_s_stdev"),
    "prefill_tok_s": (HIGHER, None),
    "ttft_s": (LOWER, "ttft_s_iqr"),
    "tpot_p50_s": (LOWER, "tpot_iqr_s"),
    "j_per_token_decode": (LOWER, None),
    "peak_vram_bytes": (LOWER, None),
    "peak_rss_bytes": (LOWER, None),
    "weight_bytes": (LOWER, None),
    "kl_mean": (LOWER, None),
}
DEFAULT_THRESHOLDS = "decode_tok_s:-5%"


class CompareError(ValueError):
    pass


def parse_thresholds(text: str) -> dict[str, float]:
    """'decode_tok_s:-5%,ttft_s:+10%' -> {metric: allowed fractional change in the bad direction}."""
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, pct = part.partition(":")
        if name not in METRICS:
            raise CompareError(f"unknown metric {name!r}; comparable metrics: {', '.join(METRICS)}")
        try:
            value = abs(float(pct.strip().rstrip("%"))) / 100
        except ValueError:
            raise CompareError(f"threshold {part!r} must look like {name}:-5%") from None
        out[name] = value
    return out


@dataclass(frozen=True)
class Delta:
    cell: tuple
    metric: str
    a: float | None
    b: float | None
    change: float | None          # (b - a) / a
    noise: float | None           # fraction of a the spreads allow
    status: str                   # regression | improvement | within-noise | unchanged | missing


def _key(r: Record) -> tuple:
    return (r.model, r.variant, r.backend, r.batch_size, r.prompt_tokens, r.new_tokens)


def compare(a: list[Record], b: list[Record], thresholds: dict[str, float]) -> list[Delta]:
    old = {_key(r): r for r in primary(a) if r.status == "ok"}
    new = {_key(r): r for r in primary(b) if r.status == "ok"}
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        ra, rb = old.get(key), new.get(key)
        for metric, allowed in thresholds.items():
            direction, spread_field = METRICS[metric]
            va = getattr(ra, metric) if ra else None
            vb = getattr(rb, metric) if rb else None
            if va is None or vb is None or va == 0:
                out.append(Delta(key, metric, va, vb, None, None, "missing"))
                continue
            change = (vb - va) / va
            spreads = [getattr(r, spread_field) for r in (ra, rb)] if spread_field else []
            noise = 2 * sum(s for s in spreads if s is not None) / abs(va) if spreads else 0.0
            worse = change < 0 if direction == HIGHER else change > 0
            if math.isclose(change, 0.0, abs_tol=1e-12):
                status = "unchanged"
            elif abs(change) <= noise:
                status = "within-noise"
            elif worse and abs(change) > allowed:
                status = "regression"
            elif worse:
                status = "within-threshold"
            else:
                status = "improvement"
            out.append(Delta(key, metric, va, vb, change, noise, status))
    return out


def render(deltas: list[Delta]) -> str:
    lines = ["| model | variant | backend | batch | prompt | new | metric | before | after | change | noise | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in deltas:
        fmt = lambda x: "—" if x is None else f"{x:.4g}"  # noqa: E731
        pct = lambda x: "—" if x is None else f"{x:+.1%}"  # noqa: E731
        lines.append("| " + " | ".join(map(str, d.cell)) + f" | {d.metric} | {fmt(d.a)} | {fmt(d.b)} | {pct(d.change)} | "
                     f"{'—' if d.noise is None else f'±{d.noise:.1%}'} | **{d.status}** |")
    return "\n".join(lines)
