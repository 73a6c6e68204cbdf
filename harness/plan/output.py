"""Views of plan rows: Markdown / CSV / JSON tables and two charts. Reads PlanRows, computes nothing.

No torch here; matplotlib runs on the Agg backend (files only, no display).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import fields
from pathlib import Path

from harness.plan.roofline import PlanRow, Workload

ROW_FIELDS = tuple(f.name for f in fields(PlanRow) if f.name != "notes")
FILES = {"md": "plan.md", "csv": "plan.csv", "json": "plan.json"}
DECODE_CHART = "plan_decode_tok_s.png"
FIT_CHART = "plan_memory_fit.png"
FIT_BOUNDS = (0.0, 0.5, 0.8, 1.0, 1.5, 3.0, 1e9)   # need / usable
FIT_COLORS = ("#1a9850", "#66bd63", "#d9ef8b", "#fdae61", "#f46d43", "#a50026")


def _gb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e9:.1f}"


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _interval(x: float | None, lo: float | None, hi: float | None) -> str:
    return "-" if x is None else f"{_rate(x)} [{_rate(lo)}, {_rate(hi)}]"


def _fits(f: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[f]


def header(w: Workload) -> str:
    return (f"Projected (roofline ceilings from datasheet figures, not measurements): {w.model}, "
            f"context {w.context_tokens} tokens, batch {w.batch_size}, memory headroom {w.headroom:.0%}. "
            "decode tok/s is the aggregate over the batch at the full context; J/token is an upper "
            "estimate: top-of-range power (TDP) x projected time per token.")


def to_markdown(rows: list[PlanRow], w: Workload) -> str:
    calibrated = any(r.basis == "calibrated" for r in rows)
    cols = ["profile", "variant", "weights GB", "KV GB", "need / usable GB", "fits", "decode tok/s", "bound",
            "prefill tok/s", "TPOT ms", "J/token (upper)"]
    if calibrated:
        cols += ["efficiency", "calibrated decode tok/s"]
    curves = any(r.curve_from for r in rows)
    if curves:
        cols += ["curve decode tok/s [interval]", "curve prefill tok/s [interval]", "curves"]
    tp = any(r.tp_gpus or r.tp_note for r in rows)
    if tp:
        cols += ["GPUs needed", "TP GPUs", "TP decode tok/s", "TP curve decode tok/s", "all-reduce ms/step", "TP note"]
    cols += ["status", "reason"]
    lines = [header(w), "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [r.profile, r.variant, _gb(r.weight_bytes), _gb(r.kv_cache_bytes),
                 f"{_gb(r.memory_need_bytes)} / {_gb(r.memory_usable_bytes)}", _fits(r.fits),
                 _rate(r.decode_tok_s), r.bound or "-", _rate(r.prefill_tok_s),
                 "-" if r.tpot_s is None else f"{r.tpot_s * 1e3:.1f}",
                 "-" if r.energy_j_per_token_upper is None else f"{r.energy_j_per_token_upper:.3g}"]
        if calibrated:
            cells += ["-" if r.efficiency_decode is None else f"{r.efficiency_decode:.2f}",
                      _rate(r.calibrated_decode_tok_s)]
        if curves:
            cells += [_interval(r.curve_decode_tok_s, r.curve_decode_low, r.curve_decode_high),
                      _interval(r.curve_prefill_tok_s, r.curve_prefill_low, r.curve_prefill_high),
                      r.curve_from.replace("|", "/") or "-"]
        if tp:
            cells += [str(r.gpus_needed or "-"), str(r.tp_gpus or "-"), _rate(r.tp_decode_tok_s),
                      _rate(r.tp_curve_decode_tok_s),
                      "-" if r.tp_allreduce_s is None else f"{r.tp_allreduce_s * 1e3:.2f}", r.tp_note.replace("|", "/") or "-"]
        cells += [r.status if r.basis == "projected" else f"{r.status} ({r.basis})", r.reason.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[PlanRow]) -> str:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    return buf.getvalue()


def to_json(rows: list[PlanRow]) -> str:
    return json.dumps([r.to_dict() for r in rows], indent=2) + "\n"


def render(rows: list[PlanRow], w: Workload, fmt: str) -> str:
    return {"md": lambda: to_markdown(rows, w), "csv": lambda: to_csv(rows), "json": lambda: to_json(rows)}[fmt]()


def _order(rows: list[PlanRow]) -> tuple[list[str], list[str]]:
    return list(dict.fromkeys(r.profile for r in rows)), list(dict.fromkeys(r.variant for r in rows))


def decode_chart(rows: list[PlanRow], w: Workload, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles, variants = _order(rows)
    cell = {(r.profile, r.variant): r for r in rows}
    n = len(variants)
    height = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.28 * len(profiles) * max(1, n * 0.6)))
    for j, v in enumerate(variants):
        bars: dict[bool, list[tuple[float, float]]] = {False: [], True: []}   # unknown fit -> [(y, tok/s)]
        cal = []
        for i, p in enumerate(profiles):
            r = cell.get((p, v))
            if r is not None and r.decode_tok_s:
                y = i + (j - (n - 1) / 2) * height
                bars[r.status == "unknown-fit"].append((y, r.decode_tok_s))
                if r.calibrated_decode_tok_s:
                    cal.append((r.calibrated_decode_tok_s, y))
        color = f"C{j % 10}"
        for unknown, pts in bars.items():
            if pts:
                ax.barh([y for y, _ in pts], [x for _, x in pts], height=height, color=color,
                        hatch="//" if unknown else None, alpha=0.5 if unknown else 1.0,
                        label=f"{v} (projected{', fit unknown' if unknown else ''})")
        if cal:
            ax.plot([x for x, _ in cal], [y for _, y in cal], "kx", label=f"{v} (calibrated)")
    ax.set_yticks(range(len(profiles)), profiles)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("projected decode tokens/s (aggregate over the batch; log scale)")
    ax.set_title(f"{w.model}, context {w.context_tokens}, batch {w.batch_size}: projected decode ceiling\n"
                 "(missing bar: unsupported, does not fit, or bandwidth unknown)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fit_chart(rows: list[PlanRow], w: Workload, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import BoundaryNorm, ListedColormap

    profiles, variants = _order(rows)
    cell = {(r.profile, r.variant): r for r in rows}
    ratio = np.full((len(profiles), len(variants)), np.nan)
    for i, p in enumerate(profiles):
        for j, v in enumerate(variants):
            r = cell.get((p, v))
            if r is not None and r.memory_usable_bytes:
                ratio[i, j] = r.memory_need_bytes / r.memory_usable_bytes
    fig, ax = plt.subplots(figsize=(2.5 + 1.1 * len(variants), 1.2 + 0.32 * len(profiles)))
    # green shades fit, red shades do not: the colour flips exactly at need == usable
    cmap = ListedColormap(FIT_COLORS).with_extremes(bad="lightgrey")
    ax.imshow(np.ma.masked_invalid(ratio), cmap=cmap, norm=BoundaryNorm(FIT_BOUNDS, cmap.N), aspect="auto")
    for i, p in enumerate(profiles):
        for j, v in enumerate(variants):
            r = cell.get((p, v))
            text = "?" if np.isnan(ratio[i, j]) else f"{ratio[i, j]:.2f}"
            if r is not None and r.status == "unsupported":
                text += "\nunsupported"
            ax.text(j, i, text, ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(profiles)), profiles, fontsize=8)
    ax.set_title(f"memory need / usable memory ({w.headroom:.0%} headroom): <= 1 fits (green)\n"
                 f"{w.model}, context {w.context_tokens}, batch {w.batch_size} (grey/?: capacity unknown)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[PlanRow], w: Workload, out_dir: Path) -> list[Path]:
    """Every table format and both charts; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, name in FILES.items():
        (out_dir / name).write_text(render(rows, w, fmt), encoding="utf-8")
        written.append(out_dir / name)
    decode_chart(rows, w, out_dir / DECODE_CHART)
    fit_chart(rows, w, out_dir / FIT_CHART)
    return written + [out_dir / DECODE_CHART, out_dir / FIT_CHART]
