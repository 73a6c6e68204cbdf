"""The roofline chart: each cell's achieved decode and prefill FLOP/s against arithmetic intensity,
under the profile's ceilings (nominal bandwidth and peak FLOP/s of the cell's compute format, from
the profile YAML) and the measured ceiling where the record has one (device copy bandwidth measured
in the same run). One panel per hardware profile.

The figures come from the record only (never re-measured, never re-derived from the model):
- decode: bytes per step = bandwidth.decode_bytes_per_step (weights + KV read), achieved bandwidth =
  achieved_bandwidth_bytes_per_s; FLOPs per token are taken from the prefill of the same cell
  (prefill_flop_per_s x ttft_s / (batch x prompt tokens): 2 x parameters + attention over the prompt),
  an estimate that the description names; decode FLOP/s = decode tokens/s x FLOPs per token.
- prefill: FLOP/s = bandwidth.prefill_flop_per_s; bytes = weights + the prompt's KV written (the KV
  bytes per token backed out of decode_bytes_per_step and decode_context_tokens).
Ceilings missing from the profile file are backed out of the record's own ratios where it has them
(peak = prefill FLOP/s / mfu; nominal bandwidth = achieved / share_of_profile_peak).
A cell lacking the figures is skipped, and the chart's description lists it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from harness.records import Record
from harness.report.chart_kit import Chart, context, plt, txt


@dataclass
class Point:
    record: Record
    phase: str              # decode | prefill
    intensity: float        # FLOP / byte
    flop_per_s: float


def _profiles() -> dict:
    from harness.profiles.loader import load_profiles

    try:
        return load_profiles()
    except Exception:  # noqa: BLE001  (a broken profiles folder costs the ceilings, not the report)
        return {}


def points(r: Record) -> tuple[list[Point], str]:
    """The cell's decode and prefill points, and why not where it has neither ("" when it has both)."""
    b = r.bandwidth
    if r.status != "ok":
        return [], r.status
    flops, ttft = b.prefill_flop_per_s, r.ttft_s
    if not flops or not ttft:
        return [], "no prefill FLOP/s (no model shape, or not measured on this device)"
    per_token = flops * ttft / (r.batch_size * r.prompt_tokens)
    out, why = [], []
    if r.achieved_bandwidth_bytes_per_s and b.decode_bytes_per_step and r.decode_tok_s:
        ai = r.batch_size * per_token / b.decode_bytes_per_step
        out.append(Point(r, "decode", ai, r.decode_tok_s * per_token))
    else:
        why.append("no achieved decode bandwidth")
    if r.weight_bytes and b.decode_bytes_per_step and b.decode_context_tokens:
        kv_per_token = max(0.0, (b.decode_bytes_per_step - r.weight_bytes) / (r.batch_size * b.decode_context_tokens))
        moved = r.weight_bytes + r.batch_size * r.prompt_tokens * kv_per_token
        out.append(Point(r, "prefill", flops * ttft / moved, flops))
    else:
        why.append("no prefill bytes")
    return out, "; ".join(why) if not out else ""


def ceilings(rs: list[Record], profile) -> dict:
    """{'bandwidth': B/s, 'peaks': {format: FLOP/s}, 'copy': B/s or None} for one profile's records."""
    bw = getattr(profile, "bandwidth_bytes_per_s", None)
    peaks: dict[str, float] = {}
    for r in rs:
        b = r.bandwidth
        fmt = b.mfu_format or "?"
        peak = profile.peak(fmt) if profile is not None and b.mfu_format else None
        if peak is None and r.mfu and b.prefill_flop_per_s:
            peak = b.prefill_flop_per_s / r.mfu
        if peak:
            peaks.setdefault(fmt, peak)
        if bw is None and b.share_of_profile_peak and r.achieved_bandwidth_bytes_per_s:
            bw = r.achieved_bandwidth_bytes_per_s / b.share_of_profile_peak
    copies = [r.bandwidth.copy_bandwidth_bytes_per_s for r in rs if r.bandwidth.copy_bandwidth_bytes_per_s]
    return {"bandwidth": bw, "peaks": peaks, "copy": float(np.median(copies)) if copies else None}


def _draw_roofs(ax, ceil: dict, xs: np.ndarray) -> list[dict]:
    drawn = []
    top = max(ceil["peaks"].values(), default=None)
    styles = ["-", "-.", ":"]
    for i, (fmt, peak) in enumerate(sorted(ceil["peaks"].items(), key=lambda kv: kv[1])):
        ax.axhline(peak, color="#444444", ls=styles[i % 3], lw=1, label=f"peak {txt(fmt)} {peak / 1e12:,.0f} TFLOP/s (profile)")
        drawn.append({"kind": "peak", "format": fmt, "value": peak})
    for key, colour, ls, what in (("bandwidth", "#444444", "-", "profile"), ("copy", "#d8843b", "--", "measured copy")):
        bw = ceil[key]
        if bw:
            y = xs * bw if top is None else np.minimum(xs * bw, top)
            ax.plot(xs, y, color=colour, ls=ls, lw=1.2, label=f"{bw / 1e12:.2f} TB/s ({what})")
            drawn.append({"kind": key, "value": bw})
    return drawn


def roofline(ok: list[Record]) -> Chart | None:
    """None when no cell has the figures (a CPU run without a model shape: the charts folder says nothing)."""
    per_profile: dict[str, list[Point]] = defaultdict(list)
    skipped: list[str] = []
    for r in ok:
        pts, why = points(r)
        if pts:
            per_profile[r.profile].extend(pts)
        else:
            skipped.append(f"{r.variant} [{r.backend}] b{r.batch_size} p{r.prompt_tokens} on {r.profile}: {why}")
    if not per_profile:
        return None
    profiles = _profiles()
    fig, axes = plt.subplots(1, len(per_profile), figsize=(7.5 * len(per_profile), 5.4), squeeze=False)
    variants = sorted({p.record.variant for pts in per_profile.values() for p in pts})
    colour = {v: plt.cm.tab10(i % 10) for i, v in enumerate(variants)}
    info_points, info_roofs = [], {}
    for ax, (prof, pts) in zip(axes[0], sorted(per_profile.items())):
        ai = [p.intensity for p in pts]
        xs = np.logspace(np.log10(min(ai) / 4), np.log10(max(ai) * 4), 200)
        info_roofs[prof] = _draw_roofs(ax, ceilings([p.record for p in pts], profiles.get(prof)), xs)
        for p in pts:
            r = p.record
            ax.scatter(p.intensity, p.flop_per_s, color=colour[r.variant], marker="o" if p.phase == "decode" else "^",
                       s=45, zorder=3, edgecolor="black", linewidth=0.5)
            ax.annotate(f"b{r.batch_size}", (p.intensity, p.flop_per_s), fontsize=7, xytext=(4, -9),
                        textcoords="offset points")
            info_points.append({"profile": prof, "variant": r.variant, "batch": r.batch_size, "phase": p.phase,
                                "intensity": p.intensity, "flop_per_s": p.flop_per_s})
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("achieved FLOP/s (measured time, FLOPs counted)")
        ax.set_title(txt(prof))
        ax.grid(True, which="both", alpha=0.25)
        handles, _ = ax.get_legend_handles_labels()
        handles += [plt.Line2D([], [], ls="", marker="s", color=colour[v], label=txt(v)) for v in variants]
        handles += [plt.Line2D([], [], ls="", marker=m, color="white", markeredgecolor="black", label=lbl)
                    for m, lbl in (("o", "decode"), ("^", "prefill"))]
        ax.legend(handles=handles, fontsize=7, loc="lower right")
    recs = [p.record for pts in per_profile.values() for p in pts]
    title = f"Roofline: decode and prefill against the ceilings\n{context(recs)}"
    fig.suptitle(title)
    fig.tight_layout()
    caption = ("Decode FLOPs per token estimated from the same cell's prefill (2 x parameters + attention); "
               "ceilings: the profile's nominal bandwidth and peak FLOP/s, and the copy bandwidth measured in the run.")
    if skipped:
        caption += " Skipped (figures missing): " + "; ".join(skipped) + "."
    return Chart("roofline", fig, {"title": title, "points": info_points, "roofs": info_roofs, "skipped": skipped},
                 caption)
