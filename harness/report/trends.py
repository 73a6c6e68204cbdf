"""Trends of one metric per cell over the history's runs: a line per cell and machine/profile, a band
of ± twice the cell's own spread (compare's noise rule), and a red cross where compare calls the
change from the previous entry of the same machine/profile a regression."""
from __future__ import annotations

from collections import defaultdict

from harness import history
from harness.records import CELL_AXES
from harness.report import compare as cmp
from harness.report.chart_kit import Chart, plt, txt

MATCH = list(cmp.MATCH_AXES)


def regressions_by_point(df, metric: str, threshold: float) -> dict[tuple, set[str]]:
    """{(machine, profile) + cell in MATCH_AXES order: run ids where that cell regressed on METRIC}."""
    out: dict[tuple, set[str]] = defaultdict(set)
    runs = history.entries(df)
    for _, run_id, mach, prof in runs:
        before = history.previous(df, run_id)
        if before is None:
            continue
        try:
            deltas = cmp.compare(history.records_of(df, before), history.records_of(df, run_id), {metric: threshold})
        except cmp.CompareError:
            continue
        for d in cmp.regressions(deltas):
            out[(mach, prof) + tuple(d.cell)].add(run_id)
    return out


def trend_chart(df, metric: str, threshold: float = 0.05) -> Chart:
    if metric not in cmp.METRICS:
        raise history.HistoryError(f"unknown metric {metric!r}; metrics: {', '.join(cmp.METRICS)}")
    direction, spread = cmp.METRICS[metric]
    bad = regressions_by_point(df, metric, threshold)
    fig, ax = plt.subplots(figsize=(9, 5))
    lines = []
    order = {run: i for i, (_, run, _, _) in enumerate(history.entries(df))}
    labels = [f"{t[:16]}\n{txt(run)[:18]}" for t, run, _, _ in history.entries(df)]
    for key, g in df[df.status == "ok"].groupby(["machine", "profile"] + MATCH, sort=True):
        g = g.dropna(subset=[metric])
        if g.empty:
            continue
        x = [order[r] for r in g.run_id]
        y = list(g[metric])
        cell = dict(zip(["machine", "profile"] + MATCH, key))
        name = (f"{txt(cell['variant'])} [{txt(cell['backend'])}] b{cell['batch_size']} p{cell['prompt_tokens']} · "
                f"{txt(cell['profile'])}")
        (line,) = ax.plot(x, y, marker="o", label=name)
        if spread:
            sd = g[spread].fillna(0.0).to_numpy()
            ax.fill_between(x, [v - 2 * s for v, s in zip(y, sd)], [v + 2 * s for v, s in zip(y, sd)],
                            color=line.get_color(), alpha=0.2)
        marks = [(xi, yi, run) for xi, yi, run in zip(x, y, g.run_id) if run in bad.get(key, set())]
        if marks:
            ax.scatter([m[0] for m in marks], [m[1] for m in marks], marker="x", s=120, color="red", zorder=4)
        lines.append({"cell": cell, "runs": list(g.run_id), "values": y, "regressions": [m[2] for m in marks]})
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel(f"{metric} ({direction} is better)")
    ax.set_xlabel("run (UTC start time)")
    machines = ", ".join(sorted({f"{p} ({m})" for m, p in zip(df.machine, df.profile)}))
    title = f"History of {metric}\n{txt(machines)}"
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(fontsize=7)
    ax.scatter([], [], marker="x", color="red", label="regression (compare)")
    fig.tight_layout()
    return Chart(f"history_{metric}", fig, {"title": title, "lines": lines},
                 f"band: ± 2 x {spread}" if spread else "no spread recorded for this metric")


def latest_table(df, metric: str) -> list[list]:
    """The newest value of each cell (per machine/profile), for the terminal."""
    ok = df[df.status == "ok"].dropna(subset=[metric])
    last = ok.groupby(["machine", "profile"] + MATCH, sort=True).tail(1)
    return [[*(row[a] for a in ["machine"] + list(CELL_AXES)), row["run_id"], f"{row[metric]:.4g}"]
            for _, row in last.iterrows()]
