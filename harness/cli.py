"""Command line: `harness run`, `harness profiles`, `harness detect`, `harness plan`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import harness
from harness.config import QUICK, RunConfig, int_list
from harness.quality.settings import QualitySettings

D = RunConfig()


def quality_options(fn):
    """click options generated from QualitySettings (its defaults and help are the single source)."""
    from dataclasses import fields

    q = QualitySettings()
    for f in reversed(fields(QualitySettings)):
        default, help_ = getattr(q, f.name), f.metadata.get("help", "")
        if f.name == "enabled":
            fn = click.option("--quality/--no-quality", "quality_enabled", default=default, show_default=True,
                              help=help_)(fn)
            continue
        name = "--quality-" + f.name.replace("_", "-")
        typ = {int: int, float: float, str: str}.get(type(default), float)
        fn = click.option(name, "quality_" + f.name, default=default, type=typ, show_default=True, help=help_)(fn)
    return fn


def quality_settings(opts: dict, quick: bool) -> QualitySettings:
    from dataclasses import fields

    values = {f.name: opts.pop("quality_" + f.name) for f in fields(QualitySettings)}
    return QualitySettings(**values).for_run(quick)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(harness.__version__, prog_name="harness")
def main() -> None:
    """Measure LLM compression variants on real kernels, and project them onto other hardware."""


@main.command()
@click.option("--model", default=D.model, show_default=True,
              help="smollm2-135m (embedded, real weights), synthetic:<preset>, a safetensors folder or a .gguf file.")
@click.option("--variants", default=D.variants, show_default=True, help="Comma list of variant names, or 'all'.")
@click.option("--batch", default=D.batch, show_default=True, help="Batch sizes, comma list.")
@click.option("--prompt-tokens", default=D.prompt_tokens, show_default=True, help="Prompt lengths, comma list.")
@click.option("--new-tokens", default=D.new_tokens, show_default=True, help="Generated tokens per pass, comma list.")
@click.option("--warmup", default=D.warmup, show_default=True, type=click.IntRange(0), help="Untimed passes per cell.")
@click.option("--repeats", default=D.repeats, show_default=True, type=click.IntRange(1),
              help="Minimum timed passes per cell.")
@click.option("--min-seconds", default=D.min_seconds, show_default=True, type=click.FloatRange(0),
              help="Minimum timed seconds per cell (passes repeat until both minimums are met).")
@click.option("--backends", default=D.backends, show_default=True,
              help="pytorch (the harness engine) and/or transformers-generate (transformers' eager generate(), for comparison).")
@click.option("--no-compile", "no_compile", is_flag=True,
              help="GPU: capture the decode step as a CUDA graph without compiling it first.")
@click.option("--tune", type=click.Choice(["auto", "on", "off"]), default=D.tune, show_default=True,
              help="GPU: inductor coordinate-descent tuning of the compiled step (auto: batch 1 only). On the "
                   "H100, 8B bf16 batch 1: 159 tok/s untuned, 158.5-174.2 tuned (40-60 s more compile); "
                   "int8-wo ran at 14.9 tok/s untuned against 220-240 tuned.")
@click.option("--compile-mode", type=click.Choice(["default", "max-autotune"]), default="default", show_default=True,
              help="GPU: inductor mode of the compiled step. max-autotune benchmarks Triton GEMM templates "
                   "against cuBLAS and can fuse a weight's dequantization into them (minutes per cell).")
@click.option("--no-meters", "no_meters", is_flag=True,
              help="Turn off energy windows, the power sampler and the RSS sampler.")
@click.option("--repetitions", default=1, show_default=True, type=click.IntRange(1),
              help="Measure each cell this many times on the same prepared engine (one record each; the "
                   "report gives their coefficient of variation).")
@click.option("--meter-overhead", "meter_overhead", is_flag=True,
              help="Benchmark the meters' own cost: measure every repetition once with meters and once "
                   "without (ABBA order, equal windows); the report compares decode tok/s.")
@click.option("--energy-window-s", default=D.energy_window_s, show_default=True, type=click.FloatRange(min=0.5),
              help="GPU: minimum seconds of each NVML energy window (full loop and prefill-only loop).")
@click.option("--device", default=D.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--profile", default=D.profile, show_default=True, help="Hardware profile id, or auto to detect.")
@click.option("--profiles-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of profile YAML files (default: the shipped profiles/).")
@click.option("--cpu-power-w", type=click.FloatRange(min=0, min_open=True), default=None,
              help="CPU package power for the energy estimate when RAPL is unreadable (default: profile's).")
@click.option("--corpus", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="UTF-8 text file for prompts and calibration (default: pydoc_data.topics prose).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: results/<run-id>/).")
@click.option("--quick", is_flag=True, help=f"Small workload for smoke tests: {QUICK} unless set explicitly.")
@quality_options
@click.pass_context
def run(ctx: click.Context, **opts) -> None:
    """Run a sweep: every model x variant x batch x prompt x new-tokens cell, one Record each.

    Writes records.jsonl/.parquet/.csv, run.json, report.md and charts/ into the run folder, whose
    path is the last line printed.
    """
    from harness.executor import Interrupted
    from harness.run_command import RunRequest, execute

    quick = opts.pop("quick")
    opts["quality_enabled"] = opts.pop("quality_enabled")
    if quick:
        for k, v in QUICK.items():
            if ctx.get_parameter_source(k) == click.core.ParameterSource.DEFAULT:
                opts[k] = v
    try:
        q = quality_settings(opts, quick)
        req = RunRequest(
            model=opts["model"], variants=opts["variants"], batch_sizes=int_list(opts["batch"], "batch"),
            prompt_tokens=int_list(opts["prompt_tokens"], "prompt-tokens"),
            new_tokens=int_list(opts["new_tokens"], "new-tokens"), warmup=opts["warmup"],
            repeats=opts["repeats"], min_seconds=opts["min_seconds"], device=opts["device"],
            profile=opts["profile"], profiles_dir=opts["profiles_dir"], cpu_power_w=opts["cpu_power_w"],
            corpus=opts["corpus"], out=opts["out"],
            backends=tuple(b.strip() for b in opts["backends"].split(",") if b.strip()),
            compile=not opts["no_compile"], tune=opts["tune"], compile_mode=opts["compile_mode"],
            meters=_meter_mode(opts["no_meters"], opts["meter_overhead"]), repetitions=opts["repetitions"],
            energy_window_s=opts["energy_window_s"], quality=q)
        out_dir = execute(req, echo=lambda s: click.echo(s, err=True))
    except Interrupted as e:   # run.json (complete: false) and the views are written: say where, exit 130/143
        click.echo(str(e.out_dir))
        sys.exit(e.exit_code)
    except ValueError as e:  # bad input: spec, variant, corpus, device, profile
        raise click.UsageError(str(e)) from None
    click.echo(str(out_dir))


def _meter_mode(no_meters: bool, overhead: bool) -> str:
    if no_meters and overhead:
        raise ValueError("--meter-overhead compares meters on with meters off; it cannot run with --no-meters")
    return "alternate" if overhead else ("off" if no_meters else "on")


@main.command()
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


@main.command()
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


from harness.cli_microbench import import_microbench  # noqa: E402
from harness.cli_profiles import detect, plan, profiles  # noqa: E402
from harness.cli_quality import sensitivity  # noqa: E402

main.add_command(profiles)
main.add_command(detect)
main.add_command(plan)
main.add_command(sensitivity)
main.add_command(import_microbench)

if __name__ == "__main__":
    sys.exit(main())
