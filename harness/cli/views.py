"""Command line views of stored runs: `harness report` and `harness compare`. They read Records and
never re-measure, so nothing on these paths imports torch (a nightly compare starts in well under a
second)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Rewrite report.md, the tables and charts/ of RUN_DIR from its records (nothing is re-measured)."""
    from harness.records import RecordsWriteError, load_records, write_tables
    from harness.report import write_charts, write_report

    try:
        records = load_records(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    run_json = run_dir / "run.json"
    try:
        run = json.loads(run_json.read_text()) if run_json.is_file() else {}
    except ValueError as e:
        raise click.UsageError(f"{run_json}: not valid JSON: {e}") from None
    try:
        write_tables(records, run_dir)
        write_report(records, run, run_dir)
        charts = write_charts(records, run_dir)
    except RecordsWriteError as e:   # a full disk: the old views are left whole
        raise click.ClickException(str(e)) from None
    for p in charts:
        click.echo(str(p))
    click.echo(str(run_dir / "report.md"))


@click.command()
@click.argument("before", type=click.Path(exists=True, path_type=Path))
@click.argument("after", type=click.Path(exists=True, path_type=Path))
@click.option("--fail-on", default="decode_tok_s:-5%", show_default=True,
              help="Comma list of metric:allowed-change, e.g. decode_tok_s:-5%,ttft_s:+10%,j_per_token_decode:+5%.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text", show_default=True,
              help="text: a table and summary lines; json: a list of rows; junit: JUnit XML for CI, one "
                   "testcase per cell and metric, regressions as failures.")
def compare(before: Path, after: Path, fail_on: str, fmt: str) -> None:
    """Compare two runs cell by cell. Exit code 1 when a metric got worse by more than its threshold and
    by more than the runs' own spread, or when a cell ok in BEFORE failed or is missing in AFTER; 2 on
    bad input or when the runs have no cell in common; 0 otherwise. Cells measured on other hardware
    profiles, settings, harness commits or library versions are flagged."""
    from harness.records import load_records
    from harness.report import compare as cmp

    try:
        thresholds = cmp.parse_thresholds(fail_on)
        deltas = cmp.compare(load_records(before), load_records(after), thresholds)
    except (cmp.CompareError, FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(cmp.FORMATS[fmt](deltas))
    if fmt != "text":   # the document alone on stdout; the verdict for people on stderr
        for line in cmp.summary(deltas):
            click.echo(line, err=True)
    sys.exit(1 if cmp.regressions(deltas) else 0)
