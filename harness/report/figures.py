"""The charts of a run, one function each: records in, a Chart (figure + description) out, or None
where the records hold nothing to draw. Titles carry the hardware profile and machine, the model and
the backend (`charts.context`); axes carry units; every figure is measured unless it says projected."""
from __future__ import annotations

from collections import defaultdict

import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from harness.records import Record
from harness.report.chart_kit import (STATUS_COLOUR, VERDICT_COLOURS, VERDICT_NAMES, Chart, context, pareto, txt,
                                   verdict_colour)


def _label(r: Record) -> str:
    return f"{txt(r.variant)}\n[{txt(r.backend)}] p{r.prompt_tokens}"


def _cell_label(r: Record) -> str:
    return f"{txt(r.variant)}\n[{txt(r.backend)}]\nb{r.batch_size} p{r.prompt_tokens}"


def _verdict_legend(ax, rs: list[Record], extra: list | None = None) -> None:
    seen = sorted({r.quality_verdict or "" for r in rs if r.status == "ok"})
    handles = list(extra or []) + [Patch(color=VERDICT_COLOURS.get(v, VERDICT_COLOURS[""]), label=VERDICT_NAMES.get(v, v)) for v in seen]
    if any(r.status != "ok" for r in rs):
        handles.append(Patch(facecolor="white", edgecolor=STATUS_COLOUR, hatch="//", label="did not run"))
    if handles:
        ax.legend(handles=handles, loc="upper right")


PROJECTED_FACE, PROJECTED_EDGE = "#ece8fb", "#6c5ce7"   # the planner's bars: hatched, never verdict-coloured


def _value_text(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _projected_bars(ax, x0: int, projected: list, top: float, log: bool) -> list[dict]:
    """The planner's projections for profiles not measured, beside the measured bars: hatched, their
    own colour, labelled, so no one takes them for measurements."""
    bars = []
    for i, p in enumerate(projected, start=x0):
        ok = p.status in ("ok", "unknown-fit") and p.decode_tok_s is not None
        h = p.decode_tok_s if ok else (top * 0.05 if not log else top * 1e-3)
        ax.bar(i, h, facecolor=PROJECTED_FACE, edgecolor=PROJECTED_EDGE, hatch="xx", linewidth=1.2)
        ax.text(i, h, _value_text(h) if ok else f"projected: {p.status}", ha="center", va="bottom", fontsize=7,
                style="italic", rotation=0 if ok else 90, color=PROJECTED_EDGE)
        bars.append({"variant": p.variant, "backend": "planner", "profile": p.profile, "batch": p.batch_size,
                     "status": p.status, "value": p.decode_tok_s if ok else None, "colour": PROJECTED_FACE,
                     "projected": True})
    return bars


def decode_per_batch(rs: list[Record], projected: list = ()) -> Chart:
    """Decode tok/s per variant, one panel per batch size (batch 1 does not vanish next to 256), bars
    coloured by quality verdict; cells that did not run are hatched bars labelled with their status;
    `projected` (harness.report.projections) adds the planner's bars for profiles not measured, drawn
    apart. A panel whose bars span more than 100x gets a log axis (a CPU beside a GPU)."""
    batches = sorted({r.batch_size for r in rs}) or [1]
    many = len({r.profile for r in rs}) > 1 or bool(projected)   # bars of several profiles: labels name them
    counts = [sum(r.batch_size == b for r in rs) + sum(p.batch_size == b for p in projected) for b in batches]
    slant = [many and n > 4 for n in counts]   # three-line labels of narrow bars would overlap: one line, slanted
    widths = [max(2.8, n * (0.75 if s else 1.1)) for n, s in zip(counts, slant)]   # inches, from the bar counts
    fig, axes = plt.subplots(1, len(batches), figsize=(max(7.0, sum(widths) + 1.0), 4.8 if not projected else 5.8),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    title = f"Decode throughput per variant and batch\n{context(rs)}"
    bars = []
    for ax, b, slanted in zip(axes[0], batches, slant):
        cells = [r for r in rs if r.batch_size == b]
        proj = [p for p in projected if p.batch_size == b]
        vals = [r.decode_tok_s for r in cells if r.decode_tok_s] + [p.decode_tok_s for p in proj if p.decode_tok_s]
        top = max(vals + [1.0])
        log = bool(vals) and top / min(vals) > 100
        for i, r in enumerate(cells):
            colour = verdict_colour(r)
            if r.status == "ok" and r.decode_tok_s is not None:
                ax.bar(i, r.decode_tok_s, color=colour, yerr=r.decode_tok_s_stdev or 0, capsize=3)
                ax.text(i, r.decode_tok_s, _value_text(r.decode_tok_s), ha="center", va="bottom", fontsize=8)
            else:
                h = top * 0.05 if not log else top * 1e-3
                ax.bar(i, h, facecolor="white", edgecolor=STATUS_COLOUR, hatch="//")
                ax.text(i, h * 1.2, r.status, ha="center", va="bottom", fontsize=8, rotation=90)
            bars.append({"variant": r.variant, "backend": r.backend, "batch": b, "status": r.status,
                         "value": r.decode_tok_s if r.status == "ok" else None, "colour": colour})
        bars += _projected_bars(ax, len(cells), proj, top, log)
        labels = [_label(r) + (f"\n{txt(r.profile)}" if many else "") for r in cells]
        labels += [f"{txt(p.variant)}\n[planner] p{p.prompt_tokens}\n{txt(p.profile)}" for p in proj]
        if slanted:
            ax.set_xticks(range(len(labels)), [lb.replace("\n", " ") for lb in labels], fontsize=7, rotation=35,
                          ha="right", rotation_mode="anchor")
        else:
            ax.set_xticks(range(len(labels)), labels, fontsize=7 if many else 8)
        ax.set_title(f"batch {b}")
        if log:
            ax.set_yscale("log")
            ax.set_ylim(min(vals) / 3, top * 8)
        else:
            ax.set_ylim(0, top * 1.4)   # room for the values and the legend
    axes[0][0].set_ylabel("decode tokens/s, all sequences" + (" (measured or projected)" if projected else " (measured)"))
    extra = [Patch(facecolor=PROJECTED_FACE, edgecolor=PROJECTED_EDGE, hatch="xx", label="projected by the planner")] \
        if projected else None
    _verdict_legend(axes[0][-1], rs, extra)
    if not rs:
        axes[0][0].text(0.5, 0.5, "no cell ran", ha="center", va="center", transform=axes[0][0].transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    caption = "Bars coloured by quality verdict; hatched: the cell did not run (its status on the bar)."
    if projected:
        caption += (" Cross-hatched lilac bars, labelled [planner]: the planner's datasheet projection for profiles "
                    "these runs did not measure, not measurements.")
    return Chart("decode_tok_s", fig, {"title": title, "bars": bars}, caption)


def decode_vs_batch(ok: list[Record]) -> Chart | None:
    batches = sorted({r.batch_size for r in ok})
    if len(batches) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    series: dict[tuple, list[Record]] = defaultdict(list)
    for r in ok:
        if r.decode_tok_s is not None:
            series[(r.variant, r.backend, r.prompt_tokens)].append(r)
    lines = []
    for (variant, backend, prompt), cells in sorted(series.items()):
        cells.sort(key=lambda r: r.batch_size)
        ax.plot([r.batch_size for r in cells], [r.decode_tok_s for r in cells], marker="o",
                label=f"{txt(variant)} [{txt(backend)}] prompt {prompt}")
        lines.append({"variant": variant, "backend": backend, "prompt": prompt})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())   # 100, 1000 rather than 10^2, 10^3
    ax.xaxis.set_major_locator(FixedLocator(batches))   # ticks at the measured batches, written 1, 8, 32
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size (sequences)")
    ax.set_ylabel("decode tokens/s, all sequences (measured)")
    title = f"Decode throughput vs batch\n{context(ok)}"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    return Chart("decode_vs_batch", fig, {"title": title, "lines": lines, "batches": batches, "xticklabels": ticks})


def ttft_vs_prompt(ok: list[Record]) -> Chart | None:
    rs = [r for r in ok if r.ttft_s is not None]
    if len({r.prompt_tokens for r in rs}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    series: dict[tuple, list[Record]] = defaultdict(list)
    for r in rs:
        series[(r.variant, r.backend, r.batch_size)].append(r)
    for (variant, backend, batch), cells in sorted(series.items()):
        cells.sort(key=lambda r: r.prompt_tokens)
        ax.plot([r.prompt_tokens for r in cells], [r.ttft_s * 1e3 for r in cells], marker="o",
                label=f"{txt(variant)} [{txt(backend)}] batch {batch}")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("time to first token (ms, measured)")
    title = f"TTFT per prompt length\n{context(rs)}"
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return Chart("ttft_vs_prompt", fig, {"title": title})


def memory(ok: list[Record]) -> Chart | None:
    """Device memory stacked as weights / KV cache / other (peak VRAM - both), host RSS on its own axis;
    the planner's projected weight bytes as a marker beside the measured ones."""
    if not ok:
        return None
    fig, (ax_v, ax_r) = plt.subplots(1, 2, figsize=(max(9.0, 1.3 * len(ok) + 5), 4.8))
    x = list(range(len(ok)))
    gb = 1e9
    vram = [r for r in ok if r.peak_vram_bytes is not None]
    stacks = []
    if vram:
        xs = [ok.index(r) for r in vram]
        w = [(r.weight_bytes or 0) / gb for r in vram]
        kv = [(r.kv_cache_bytes or 0) / gb for r in vram]
        other = [max(0.0, r.peak_vram_bytes / gb - a - b) for r, a, b in zip(vram, w, kv)]
        ax_v.bar(xs, w, color="#6aa84f", label="weights (measured)")
        ax_v.bar(xs, kv, bottom=w, color="#3b7dd8", label="KV cache")
        ax_v.bar(xs, other, bottom=[a + b for a, b in zip(w, kv)], color="#cccccc", label="other (peak - both)")
        stacks = [{"variant": r.variant, "weights_gb": a, "kv_gb": b, "other_gb": c}
                  for r, a, b, c in zip(vram, w, kv, other)]
    else:
        ax_v.text(0.5, 0.5, "no VRAM measured (CPU run)", ha="center", va="center", transform=ax_v.transAxes)
    planned = [(i, r.planned_weight_bytes / gb) for i, r in enumerate(ok) if r.planned_weight_bytes]
    if planned and vram:
        ax_v.scatter(*zip(*planned), marker="_", s=400, color="black", label="weights (projected by planner)")
    ax_v.set_ylabel("peak VRAM (GB)")
    ax_v.set_title("device memory")
    ax_r.bar(x, [(r.peak_rss_bytes or 0) / gb for r in ok], color="#d8843b", label="peak host RSS (measured)")
    ax_r.bar(x, [(r.weight_bytes or 0) / gb for r in ok], width=0.4, color="#6aa84f", label="weights (measured)")
    ax_r.set_ylabel("host memory (GB)")
    ax_r.set_title("host memory (RSS)")
    for ax in (ax_v, ax_r):
        ax.set_xticks(x, [_cell_label(r) for r in ok], fontsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    title = f"Memory\n{context(ok)}"
    fig.suptitle(title)
    fig.tight_layout()
    return Chart("memory", fig, {"title": title, "vram_stacks": stacks, "axes": ["peak VRAM (GB)", "host memory (GB)"]})


def energy_per_token(ok: list[Record]) -> Chart | None:
    rs = [r for r in ok if r.j_per_token_decode is not None or r.j_per_token_prefill is not None]
    if not rs:
        return None
    sources = sorted({r.energy_source for r in rs})
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(rs) + 3), 4.8))
    x = list(range(len(rs)))
    ax.bar([i - 0.2 for i in x], [r.j_per_token_prefill or 0 for r in rs], width=0.4, color="#9b59b6",
           label="prefill (per prompt token)")
    ax.bar([i + 0.2 for i in x], [r.j_per_token_decode or 0 for r in rs], width=0.4,
           color=[verdict_colour(r) for r in rs])
    ax.set_xticks(x, [_cell_label(r) for r in rs], fontsize=8)
    ax.set_ylabel("energy per token (J)")
    _verdict_legend(ax, rs, [Patch(color="#9b59b6", label="prefill (per prompt token)")])
    title = f"J/token, energy source: {', '.join(sources)}\n{context(rs)}"
    ax.set_title(title)
    fig.tight_layout()
    return Chart("energy_per_token", fig, {"title": title, "sources": sources})


def label_offsets(pts: list[tuple[float, float]], near: tuple[float, float] = (0.2, 0.06)) -> list[tuple[int, int]]:
    """Text offsets (points) for point labels: (4, 4) unless an earlier label sits within `near` (shares
    of the axis ranges), then centred under the point, 11 points lower per neighbour (variants with
    nearly equal speed and KL would print over each other)."""
    if not pts:
        return []
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    out = []
    for i, (x, y) in enumerate(pts):
        crowd = sum(abs(x - xj) / span_x < near[0] and abs(y - yj) / span_y < near[1] for xj, yj in pts[:i])
        out.append((4, 4) if crowd == 0 else (0, -3 - 11 * crowd))   # crowded: centred under the point
    return out


def _quality_scatter(ok: list[Record], x_field: str, x_higher: bool, xlabel: str, name: str, what: str):
    """KL against speed or energy, one panel per batch size (a frontier across batches would only say that
    batch 32 is faster than batch 1), the Pareto frontier of each panel drawn through its non-dominated points."""
    rs = [r for r in ok if r.kl_mean is not None and getattr(r, x_field) is not None]
    if len(rs) < 2:
        return None
    batches = sorted({r.batch_size for r in rs})
    fig, axes = plt.subplots(1, len(batches), figsize=(max(7.0, 5.0 * len(batches)), 5), squeeze=False, sharey=True)
    points = []
    for ax, b in zip(axes[0], batches):
        cells = [r for r in rs if r.batch_size == b]
        pts = [(getattr(r, x_field), r.kl_mean) for r in cells]
        front = set(pareto(pts, x_higher=x_higher, y_higher=False))
        offsets = label_offsets(pts)
        for i, (r, (xv, yv)) in enumerate(zip(cells, pts)):
            ax.scatter(xv, yv, color=verdict_colour(r), s=60 if i in front else 35, zorder=3,
                       edgecolor="black" if i in front else "none")
            ax.annotate(f"{txt(r.variant)} [{txt(r.backend)}]", (xv, yv), fontsize=8, xytext=offsets[i],
                        textcoords="offset points", ha="left" if offsets[i] == (4, 4) else "center",
                        va="bottom" if offsets[i] == (4, 4) else "top")
            points.append({"variant": r.variant, "backend": r.backend, "batch": b, "x": xv, "y": yv,
                           "frontier": i in front, "colour": verdict_colour(r)})
        fr = sorted((pts[i] for i in front), key=lambda p: p[0])
        ax.plot([p[0] for p in fr], [p[1] for p in fr], color="black", ls="--", lw=1, label="Pareto frontier")
        ax.set_title(f"batch {b}")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.15, y=0.2)   # room for labels set under crowded points
    axes[0][0].set_ylabel("KL vs baseline (nats/token, lower is better)")
    _verdict_legend(axes[0][-1], rs, [plt.Line2D([], [], color="black", ls="--", label="Pareto frontier")])
    title = f"Quality vs {what}\n{context(rs)}"
    fig.suptitle(title)
    fig.tight_layout()
    return Chart(name, fig, {"title": title, "points": points},
                 "Frontier: the points no other point of the same batch beats on both axes.")


def quality_vs_speed(ok: list[Record]) -> Chart | None:
    return _quality_scatter(ok, "decode_tok_s", True, "decode tokens/s (measured, higher is better)",
                            "quality_vs_speed", "speed")


def quality_vs_energy(ok: list[Record]) -> Chart | None:
    return _quality_scatter(ok, "j_per_token_decode", False, "decode J/token (lower is better)",
                            "quality_vs_energy", "J/token")


def tpot_distribution(ok: list[Record]) -> Chart | None:
    rs = [r for r in ok if r.tpot_s_samples]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(rs) + 3), 4.8))
    ax.boxplot([[s * 1e3 for s in r.tpot_s_samples] for r in rs], showfliers=True)
    ax.set_xticks(range(1, len(rs) + 1), [_cell_label(r) for r in rs], fontsize=8)
    ax.set_ylabel("time per output token (ms, measured)")
    title = f"TPOT distribution per cell\n{context(rs)}"
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return Chart("tpot_distribution", fig, {"title": title, "cells": len(rs)})


def power_timeline(ok: list[Record]) -> Chart | None:
    """Board power over each cell's full-loop energy window, its mean (counter energy / window) and
    the idle power measured for the model."""
    rs = [r for r in ok if (r.energy.power_timeline or {}).get("t_s")]
    if not rs:
        return None
    cols = min(len(rs), 3)
    rows = (len(rs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.6 * rows), squeeze=False, sharey=True)
    for ax, r in zip(axes.flat, rs):
        tl = r.energy.power_timeline
        ax.plot(tl["t_s"], tl["power_w"], lw=1, color="#3b7dd8", label=f"instant ({tl.get('rate_hz', 0):.0f} Hz)")
        if r.power_mean_w is not None:
            ax.axhline(r.power_mean_w, color="#d8843b", ls="--", lw=1, label=f"mean {r.power_mean_w:.0f} W (counter)")
        if r.idle_power_w is not None:
            ax.axhline(r.idle_power_w, color="#888888", ls=":", lw=1, label=f"idle {r.idle_power_w:.0f} W")
        ax.set_title(f"{txt(r.variant)} [{txt(r.backend)}] b{r.batch_size} p{r.prompt_tokens}")
        ax.set_xlabel("time into the window (s)")
        ax.legend(loc="lower right")
    for ax in axes.flat[len(rs):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("board power (W)")
    title = f"Power timeline (NVML instant power)\n{context(rs)}"
    fig.suptitle(title)
    fig.tight_layout()
    return Chart("power_timeline", fig, {"title": title, "ylabel": "board power (W)"})
