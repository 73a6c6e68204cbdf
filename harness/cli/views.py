"""`harness report` and `harness compare`: views of stored records. No torch is imported here."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Rewrite report.md, the tables and charts/ of RUN_DIR from its records (nothing is re-measured)."""
    from harness.records import load_records, write_tables
    from harness.report import write_charts, write_report

    try:
        records = load_records(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    run_json = run_dir / "run.json"
    run = json.loads(run_json.read_text()) if run_json.is_file() else {}
    write_tables(records, run_dir)
    write_report(records, run, run_dir)
    for p in write_charts(records, run_dir):
        click.echo(str(p))
    click.echo(str(run_dir / "report.md"))


@click.command()
@click.argument("before", type=click.Path(exists=True, path_type=Path))
@click.argument("after", type=click.Path(exists=True, path_type=Path))
@click.option("--fail-on", default="decode_tok_s:-5%", show_default=True,
              help="Comma list of metric:allowed-change, e.g. decode_tok_s:-5%,ttft_s:+10%,j_per_token_decode:+5%.")
def compare(before: Path, after: Path, fail_on: str) -> None:
    """Compare two runs cell by cell. Exit code 1 when a metric got worse by more than its threshold and
    by more than the runs' own spread; 0 otherwise."""
    from harness.records import load_records
    from harness.report import compare as cmp

    try:
        thresholds = cmp.parse_thresholds(fail_on)
        deltas = cmp.compare(load_records(before), load_records(after), thresholds)
    except (cmp.CompareError, FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(cmp.render(deltas))
    bad = [d for d in deltas if d.status == "regression"]
    click.echo(f"{len(bad)} regression(s) in {len(deltas)} comparisons")
    sys.exit(1 if bad else 0)
