"""Command line views of stored runs: `harness report` and `harness compare`. They read Records and
never re-measure, so nothing on these paths imports torch (a nightly compare starts in well under a
second)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _load_run(run_dir: Path):
    from harness.records import load_records

    try:
        records = load_records(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    run_json = run_dir / "run.json"
    try:
        run = json.loads(run_json.read_text()) if run_json.is_file() else {}
    except ValueError as e:
        raise click.UsageError(f"{run_json}: not valid JSON: {e}") from None
    return records, run


@click.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the merged report when several RUN_DIRs are given (required then).")
@click.option("--project", "project", default=None, metavar="PROFILE,...",
              help="Merged reports: beside the measured rows, the planner's projection (as `harness plan` makes it) "
                   "of every measured cell on these profiles, where the runs did not measure them; drawn hatched "
                   "and labelled 'projected by the planner'. Default: none.")
def report(run_dirs: tuple[Path, ...], out: Path | None, project: str | None) -> None:
    """Rewrite report.md, report.html, the tables and charts/ of RUN_DIR from its records (nothing is
    re-measured). Several RUN_DIRs (a CPU run and a GPU run, say) merge into one comparative report in
    --out, keyed by machine and profile; --project adds the planner's projections for other profiles."""
    from harness.records import RecordsWriteError, write_tables
    from harness.report import write_charts, write_report
    from harness.report.markdown import render_merged
    from harness.report.projections import parse_profiles, project_unmeasured

    if len(run_dirs) > 1 and out is None:
        raise click.UsageError("several RUN_DIRs merge into one report: say where with --out DIR")
    if project and len(run_dirs) == 1:
        raise click.UsageError("--project draws projections beside merged runs: give several RUN_DIRs and --out")
    try:
        chosen = parse_profiles(project)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    loaded = [_load_run(d) for d in run_dirs]
    records = [r for recs, _ in loaded for r in recs]
    projections, notes = project_unmeasured(records, chosen) if chosen else ([], [])
    for n in notes:
        click.echo(f"--project: {n}", err=True)
    target = run_dirs[0] if len(run_dirs) == 1 else out
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_tables(records, target)
        if len(run_dirs) == 1:
            write_report(records, loaded[0][1], target)
        else:
            render_merged(records, [run for _, run in loaded], target, projections)
        charts = write_charts(records, target, projections=projections)
    except RecordsWriteError as e:   # a full disk: the old views are left whole
        raise click.ClickException(str(e)) from None
    for p in charts:
        click.echo(str(p))
    click.echo(str(target / "report.md"))


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
