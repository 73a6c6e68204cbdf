"""`harness history add` and `harness history show`: the nightly job's store of runs. Like the other
views, nothing here imports torch."""
from __future__ import annotations

import sys
from pathlib import Path

import click

STORE_OPTION = click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="History folder (a Parquet dataset; default results/history/).")


@click.group()
def history() -> None:
    """Keep runs in a history store, compare each with the previous one of its machine, draw trends."""


@history.command("add")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@STORE_OPTION
@click.option("--compare/--no-compare", "do_compare", default=False, show_default=True,
              help="Compare with the previous entry of the same machine and profile: exit 1 on a regression, "
                   "2 when the two have no cell in common (compare's exit codes).")
@click.option("--fail-on", default="decode_tok_s:-5%", show_default=True, help="As `harness compare --fail-on`.")
def add(run_dir: Path, store: Path | None, do_compare: bool, fail_on: str) -> None:
    """Append RUN_DIR's records (one per cell) to the history."""
    from harness import history as H
    from harness.report import compare as cmp

    store = store or H.DEFAULT_STORE
    try:
        thresholds = cmp.parse_thresholds(fail_on)
        run_id, path = H.add(run_dir, store)
    except (H.HistoryError, cmp.CompareError, FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"added run {run_id} to {path}")
    if not do_compare:
        return
    try:
        result = H.check(store, run_id, thresholds)
    except cmp.CompareError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if result.before is None:
        click.echo("first entry of this machine and profile: nothing to compare with")
        return
    click.echo(f"compared with {result.before}:")
    click.echo(cmp.FORMATS["text"](list(result.deltas)))
    sys.exit(result.exit_code)


@history.command("show")
@STORE_OPTION
@click.option("--metric", default="decode_tok_s", show_default=True, help="A metric of `harness compare`.")
@click.option("--cell", "cells", multiple=True, metavar="AXIS=VALUE[,AXIS=VALUE]",
              help="Only cells matching, e.g. --cell variant=int8-wo,batch=8 (repeatable).")
@click.option("--threshold", default=5.0, show_default=True, help="Percent change the bad way that is a regression.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Chart file (default: STORE/history_METRIC.png).")
def show(store: Path | None, metric: str, cells: tuple[str, ...], threshold: float, out: Path | None) -> None:
    """Draw METRIC per cell over the history's runs, with noise bands, regressions marked."""
    from tabulate import tabulate

    from harness import history as H
    from harness.records import CELL_AXES, write_view
    from harness.report import trends

    store = store or H.DEFAULT_STORE
    try:
        df = H.select(H.load(store), H.cell_filter(cells))
        if df.empty:
            raise H.HistoryError(f"no cell in {store} matches {' '.join(cells)}")
        chart = trends.trend_chart(df, metric, abs(threshold) / 100)
    except H.HistoryError as e:
        raise click.UsageError(str(e)) from None
    out = out or store / f"history_{metric}.png"
    try:
        write_view(out, lambda p: chart.fig.savefig(p, dpi=110, format="png"), "the history chart")
    finally:
        trends.plt.close(chart.fig)
    click.echo(tabulate(trends.latest_table(df, metric), ["machine", *CELL_AXES, "latest run", metric]))
    for line in chart.info["lines"]:
        if line["regressions"]:
            c = line["cell"]
            click.echo(f"regression of {metric} in {c['variant']} [{c['backend']}] batch {c['batch_size']} on "
                       f"{c['profile']}: run(s) {', '.join(line['regressions'])}")
    click.echo(str(out))
