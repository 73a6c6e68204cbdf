"""Charts drawn from Records with matplotlib (Agg: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.records import Record, primary, write_view  # noqa: E402


def _txt(s: str) -> str:
    """A user-supplied name as literal chart text: `$` would start matplotlib's mathtext."""
    return str(s).replace("$", r"\$")


def _label(r: Record) -> str:
    return f"{_txt(r.variant)}\nb{r.batch_size} p{r.prompt_tokens}"


def _save(fig, path: Path, dpi: int) -> Path:
    """Through a temporary name (format given: the name's suffix is not .png), renamed once whole."""
    try:
        return write_view(path, lambda p: fig.savefig(p, dpi=dpi, format="png"), "the chart")
    finally:
        plt.close(fig)


def write_charts(records: list[Record], out_dir: Path) -> list[Path]:
    charts = out_dir / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    ok = [r for r in primary(records) if r.status == "ok"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(ok) + 4), 4.5))
    labels = [_label(r) for r in ok]
    x = range(len(ok))
    ax1.bar(x, [r.decode_tok_s or 0 for r in ok], color="#3b7dd8",
            yerr=[r.decode_tok_s_stdev or 0 for r in ok], capsize=3)
    ax1.set_xticks(list(x), labels, fontsize=8)
    ax1.set_ylabel("decode tokens/s (measured)")
    ax1.set_title("Decode throughput per variant")
    mem = [(r.peak_vram_bytes or r.peak_rss_bytes or 0) / 1e6 for r in ok]
    wts = [(r.weight_bytes or 0) / 1e6 for r in ok]
    ax2.bar([i - 0.2 for i in x], mem, width=0.4, label="peak memory (RSS or VRAM)", color="#d8843b")
    ax2.bar([i + 0.2 for i in x], wts, width=0.4, label="resident weights", color="#6aa84f")
    ax2.set_xticks(list(x), labels, fontsize=8)
    ax2.set_ylabel("MB")
    ax2.set_title("Peak memory and weight bytes")
    ax2.legend(fontsize=8)
    if not ok:
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "no cell ran", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(_txt(ok[0].model) if ok and len({r.model for r in ok}) == 1 else "harness run", fontsize=10)
    fig.tight_layout()
    paths = [_save(fig, charts / "decode_tok_s.png", 110)]
    if len({r.batch_size for r in ok}) > 1:
        paths.append(_batch_curve(ok, charts / "decode_vs_batch.png"))
    timed = [r for r in ok if (r.energy.power_timeline or {}).get("t_s")]
    if timed:
        paths.append(_power_timelines(timed, charts / "power_timeline.png"))
    return paths


def _power_timelines(rs: list[Record], path: Path) -> Path:
    """NVML instant power over each cell's full-loop energy window, with its mean (counter energy /
    window) and the idle power measured for the model."""
    n = len(rs)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharey=True)
    for ax, r in zip(axes.flat, rs):
        tl = r.energy.power_timeline
        ax.plot(tl["t_s"], tl["power_w"], lw=0.8, color="#3b7dd8", label=f"instant power ({tl.get('rate_hz', 0):.0f} Hz)")
        if r.power_mean_w is not None:
            ax.axhline(r.power_mean_w, color="#d8843b", ls="--", lw=1, label=f"mean {r.power_mean_w:.0f} W (counter)")
        if r.idle_power_w is not None:
            ax.axhline(r.idle_power_w, color="#888888", ls=":", lw=1, label=f"idle {r.idle_power_w:.0f} W")
        ax.set_title(f"{_txt(r.variant)} [{_txt(r.backend)}] b{r.batch_size} p{r.prompt_tokens}", fontsize=8)
        ax.set_xlabel("s into the window", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("W (NVML_FI_DEV_POWER_INSTANT)")
    fig.tight_layout()
    return _save(fig, path, 100)


def _batch_curve(ok: list[Record], path: Path) -> Path:
    """Decode tokens/s against batch size, one line per (variant, backend, prompt length)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[tuple, list[Record]] = {}
    for r in ok:
        series.setdefault((r.variant, r.backend, r.prompt_tokens), []).append(r)
    for (variant, backend, prompt), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r.batch_size)
        ax.plot([r.batch_size for r in rs], [r.decode_tok_s for r in rs], marker="o",
                label=f"{_txt(variant)} / {_txt(backend)} / prompt {prompt}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("decode tokens/s (all sequences, measured)")
    ax.set_title("Decode throughput vs batch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, 110)
