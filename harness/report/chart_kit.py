"""What every chart shares (matplotlib on Agg, verdict colours, the Chart value, labels, the Pareto
frontier): imported by harness.report.figures, trends and charts alike."""
from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.records import Record  # noqa: E402
from harness.report.fmt import machine  # noqa: E402,F401  (re-exported: html and figures use it)

plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 8})

# quality verdict -> bar colour: a failing variant must not look like the winner
VERDICT_COLOURS = {"pass": "#2e8b57", "fail": "#c0392b", "not-meaningful": "#999999", "skipped": "#7aa6d8",
                   "": "#3b7dd8"}
VERDICT_NAMES = {"pass": "quality pass", "fail": "quality FAIL", "not-meaningful": "quality not meaningful",
                 "skipped": "quality skipped", "": "quality not measured"}
STATUS_COLOUR = "#f0b400"   # cells that did not run (unsupported, failed, does-not-fit): drawn, not dropped


@dataclass
class Chart:
    name: str                     # file stem under charts/
    fig: object                   # matplotlib Figure
    info: dict = field(default_factory=dict)   # title, bars/points: what the chart claims, for tests
    caption: str = ""             # one line under the image in report.html


def txt(s) -> str:
    """A user-supplied name as literal chart text: `$` would start matplotlib's mathtext."""
    return str(s).replace("$", r"\$")


def context(records: list[Record]) -> str:
    """'profile (machine) · model · backend' for a title: the question is which variant on which hardware."""
    def join(values):
        vals = sorted({str(v) for v in values})
        return ", ".join(vals[:3]) + (f" +{len(vals) - 3}" if len(vals) > 3 else "") if vals else "?"
    hw = join(f"{r.profile} ({machine(r)})" for r in records)
    return txt(f"{hw} · {join(r.model for r in records)} · backend {join(r.backend for r in records)}")


def verdict_colour(r: Record) -> str:
    if r.status != "ok":
        return STATUS_COLOUR
    return VERDICT_COLOURS.get(r.quality_verdict or "", VERDICT_COLOURS[""])


def pareto(points: list[tuple[float, float]], x_higher: bool, y_higher: bool) -> list[int]:
    """Indices of the non-dominated points: none other is at least as good on both axes and better on one."""
    def better_eq(a, b, higher):
        return a >= b if higher else a <= b

    out = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(better_eq(xj, xi, x_higher) and better_eq(yj, yi, y_higher) and (xj, yj) != (xi, yi)
                        for j, (xj, yj) in enumerate(points) if j != i)
        if not dominated:
            out.append(i)
    return out


