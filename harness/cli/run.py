"""`harness run`. Its options are generated from harness/options.py (harness/cli/run_options.py);
the work is harness/run_command.py, imported when the command runs."""
from __future__ import annotations

import click

from harness.cli.run_options import from_cli, run_options

# Where a parameter's value counts as given by the user (for --quick and --resume).
_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


@click.command()
@run_options
@click.pass_context
def run(ctx: click.Context, **values) -> None:
    """Run a sweep: every model x variant x batch x prompt x new-tokens cell, one Record each.

    Writes records.jsonl/.parquet/.csv, run.json, report.md and charts/ into the run folder, whose
    path is the last line printed. Exit code 0 when every cell is ok, unsupported or does-not-fit;
    1 when a cell failed or a view could not be written; 2 for bad input, before anything is
    measured; 130 / 143 after SIGINT / SIGTERM (the cell in flight recorded as failed, run.json and
    the views written). An interrupted run is finished with --resume RUN_DIR.
    """
    from harness.executor import Interrupted
    from harness.progress import for_terminal
    from harness.run_command import prepare, run_plan

    given = {name for name in values if ctx.get_parameter_source(name) in _GIVEN}
    try:
        opts, paths = from_cli(values, given)
        plan = prepare(opts, paths, echo=lambda s: click.echo(s, err=True))
    except ValueError as e:  # bad input: spec, variant, corpus, device, profile, output folder, resume
        raise click.UsageError(str(e)) from None
    try:
        echo = lambda s: click.echo(s, err=True)  # noqa: E731
        outcome = run_plan(plan, echo=echo, progress=for_terminal(len(plan.todo), echo))
    except Interrupted as e:   # run.json (complete: false) and the views are written: say where, exit 130/143
        click.echo(str(e.out_dir))
        ctx.exit(e.exit_code)
    click.echo(str(outcome.out_dir))
    ctx.exit(outcome.exit_code)
