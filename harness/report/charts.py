"""Charts drawn from Records with matplotlib (Agg: no display needed).

Each chart function in harness.report.figures returns a Chart: the figure and a small description
(title, what each bar or point is, its colour) that tests read instead of pixels. `write_charts`
saves each one as PNG and SVG under charts/ and writes report.html with the PNGs embedded.
SVG text stays text (svg.fonttype none: a tenth of the size of glyph paths) and carries no date, so
an unchanged chart is an unchanged file.
"""
from __future__ import annotations

import base64
from pathlib import Path

from harness.records import Record, primary, write_view
from harness.report.chart_kit import (STATUS_COLOUR, VERDICT_COLOURS, VERDICT_NAMES, Chart, context,  # noqa: F401
                                      machine, pareto, plt, txt, verdict_colour)


FORMATS = ("png", "svg")
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def _save(fig, path: Path, dpi: int = 110, fmt: str = "png") -> Path:
    """Through a temporary name (format given: the temporary name's suffix is not the format's), renamed once whole."""
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "harness"}):
        return write_view(path, lambda p: fig.savefig(p, dpi=dpi, format=fmt, metadata=_METADATA[fmt]), "the chart")


def build_charts(records: list[Record], projections: list = ()) -> list[Chart]:
    """Every chart the records have data for (primary records: one figure per cell); `projections`
    (harness.report.projections) are drawn beside the measured bars of the decode chart."""
    from harness.report import figures
    from harness.report.roofline import roofline

    rs = primary(records)
    out = [figures.decode_per_batch(rs, list(projections))]
    ok = [r for r in rs if r.status == "ok"]
    for fn in (figures.decode_vs_batch, figures.ttft_vs_prompt, figures.memory, figures.energy_per_token,
               figures.quality_vs_speed, figures.quality_vs_energy, figures.tpot_distribution,
               figures.power_timeline, roofline):
        chart = fn(ok)
        if chart is not None:
            out.append(chart)
    return out


def write_charts(records: list[Record], out_dir: Path, html: bool = True, projections: list = (),
                 sections: tuple[str, ...] = ()) -> list[Path]:
    """charts/*.png and charts/*.svg, and report.html beside report.md with the PNGs embedded (base64);
    `sections`: HTML fragments appended to report.html (harness advise --report)."""
    charts_dir = Path(out_dir) / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    charts = build_charts(records, projections)
    try:
        for chart in charts:
            png = _save(chart.fig, charts_dir / f"{chart.name}.png")
            paths += [png, _save(chart.fig, charts_dir / f"{chart.name}.svg", fmt="svg")]
            images.append((chart, base64.b64encode(png.read_bytes()).decode("ascii")))
    finally:
        for chart in charts:
            plt.close(chart.fig)
    if html:
        from harness.report.html import write_html

        paths.append(write_html(records, out_dir, images, projections, sections))
    return paths
