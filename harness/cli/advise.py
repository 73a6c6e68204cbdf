"""`harness advise`: rank deployments (profile, variant, backend, batch, GPUs) under constraints and name
the first choice. No torch. Exit 0: a deployment meets every constraint; 1: none does (the closest are
listed); 2: bad constraints or inputs (one line)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.advise.build import DEFAULT_BATCHES, DEFAULT_VARIANTS
from harness.advise.constraints import OBJECTIVES, PERCENTILES, SLO_PRESETS
from harness.cli.profiles import profiles_dir_option

_LAT = [click.option(f"--{k}-p{q}-ms", f"{k}_p{q}", type=float, default=None,
                     help=f"{k.upper()} limit at the {q}th percentile, ms.") for k in ("ttft", "tpot") for q in (90, 99)]


def _latency_options(f):
    for opt in reversed(_LAT):
        f = opt(f)
    return f


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        out = []
    if not out or out[0] < 1:
        raise click.UsageError(f"{what} {text!r}: comma-separated whole numbers >= 1")
    return out


def _profile_ids(spec: str, profs: dict) -> set[str] | None:
    """None for 'all'; class names (edge, enterprise) stand for their profiles; other ids are kept as
    given (a profile the records name, such as a detected CPU, is in no YAML file)."""
    if spec.strip() == "all":
        return None
    out: set[str] = set()
    for s in (x.strip() for x in spec.split(",") if x.strip()):
        cls = {p.id for p in profs.values() if p.class_ == s}
        out |= cls or {s}
    return out


def _run_folders(paths) -> list[Path]:
    """Each path is a run folder (records.jsonl) or a folder of run folders (searched recursively, sorted)."""
    from harness.advise.constraints import AdviseError

    out = []
    for p in paths:
        found = [p] if (p / "records.jsonl").is_file() else sorted(f.parent for f in p.rglob("records.jsonl"))
        if not found:
            raise AdviseError(f"--records {p}: no records.jsonl there or below")
        out += found
    return out


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


@click.command("advise")
@click.option("--model", required=True, help="Model spec as the records name it (smollm2-135m, synthetic:llama-3.1-8b, ...).")
@click.option("--records", "records", multiple=True, type=click.Path(path_type=Path),
              help="Run folder (records.jsonl), or a folder of run folders; repeatable. Measured evidence, and calibration "
                   "for the projections.")
@click.option("--profiles", "profile_spec", default="all", show_default=True,
              help="'all' (loaded profiles and those the records name), or comma-separated profile ids and classes (edge, enterprise).")
@click.option("--variants", default=None, help=f"Variants to consider. Default: those measured + {','.join(DEFAULT_VARIANTS)}.")
@click.option("--batch", "batch", default=None,
              help=f"Batch sizes to consider, e.g. 1,8,32. Default {','.join(map(str, DEFAULT_BATCHES))} and those measured.")
@click.option("--context", type=click.IntRange(min=1), default=None,
              help="Tokens per sequence (prompt + generated). Default: the records' own, else 2048.")
@click.option("--max-kl", type=float, default=None, help="Mean KL (nats) vs the baseline, at most.")
@click.option("--min-top1", type=float, default=None, help="Top-1 agreement with the baseline, at least (0..1).")
@click.option("--verdict", default=None, help="Quality verdict required ('pass').")
@_latency_options
@click.option("--slo", type=click.Choice(sorted(SLO_PRESETS)), default=None,
              help="MLPerf Inference Llama-3.1-8B limits: server TTFT 2000 / TPOT 100 ms, interactive 500 / 30 ms, "
                   "at p99 (mlcommons/inference submission checker).")
@click.option("--tokens-per-s", type=float, default=None, help="Total generated tokens/s to serve: sizes the replicas.")
@click.option("--users", type=int, default=None, help="Concurrent users, each at the TPOT target: replicas = users / batch.")
@click.option("--max-devices", type=int, default=None, help="At most this many devices in total (with a throughput target).")
@click.option("--max-gpus", type=click.IntRange(1, 8), default=8, show_default=True, help="GPUs per deployment at most.")
@click.option("--headroom", type=float, default=0.10, show_default=True, help="Fraction of device memory kept free.")
@click.option("--objective", type=click.Choice(("auto",) + OBJECTIVES), default="auto", show_default=True,
              help="energy: J/token; cost: price per million tokens (needs --prices); throughput: tokens/s per device. "
                   "auto: cost with --prices, else energy.")
@click.option("--prices", type=click.Path(path_type=Path), default=None,
              help="YAML of profile id -> price of one device per hour (examples/prices.example.yaml).")
@click.option("--calibrate-with", "calibrate_with", type=click.Path(path_type=Path), multiple=True,
              help="More calibration (run folder or calibration file) for the projections only; repeatable.")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True, help="Rows shown in md/html.")
@click.option("--report", "report_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Also re-render this run folder's report.html from its records with the advice as a section.")
@profiles_dir_option
def advise(model, records, profile_spec, variants, batch, context, max_kl, min_top1, verdict, ttft_p90, ttft_p99,
           tpot_p90, tpot_p99, slo, tokens_per_s, users, max_devices, max_gpus, headroom, objective, prices,
           calibrate_with, fmt, top, report_dir, profiles_dir) -> None:
    """Which deployment meets the constraints at the best J/token (or cost, or tokens/s per device).

    \b
        harness advise --model smollm2-135m --records results/run-x --max-kl 0.05 --tpot-p90-ms 30
        harness advise --model synthetic:llama-3.1-70b --context 8192 --batch 8 --slo mlperf-server \\
            --records results/reference/h100/decode-8b-prompt2048 --prices examples/prices.example.yaml
    """
    from harness.advise.build import Question, answer
    from harness.advise.constraints import AdviseError, build
    from harness.advise.output import render
    from harness.advise.prices import load_prices
    from harness.profiles.loader import load_profiles
    from harness.profiles.schema import ProfileError

    try:
        profs = load_profiles(profiles_dir)
        c = build(max_kl=max_kl, min_top1=min_top1, verdict=verdict, ttft={90: ttft_p90, 99: ttft_p99},
                  tpot={90: tpot_p90, 99: tpot_p99}, slo=slo, tokens_per_s=tokens_per_s, users=users,
                  max_devices=max_devices, headroom=headroom)
        records = _run_folders(records)
        if objective == "cost" and prices is None:
            raise AdviseError("--objective cost needs --prices (a YAML of profile id -> price per hour)")
        ids = _profile_ids(profile_spec, profs)
        q = Question(model=model, records=list(records), profiles=[p for p in profs.values() if ids is None or p.id in ids],
                     profile_ids=ids, variants=variants, batches=_ints(batch, "--batch"), context=context,
                     constraints=c, objective=objective if objective != "auto" else ("cost" if prices else "energy"),
                     calibrate_with=tuple(calibrate_with), max_gpus=max_gpus)
        if prices is not None:
            q.prices = load_prices(prices, set(profs))
        advice, ctx = answer(q)
    except (AdviseError, ProfileError, click.UsageError) as e:
        _fail(str(e) if not isinstance(e, click.UsageError) else e.format_message())
    if ids is not None and not advice.ranked and not advice.others:
        _fail(f"--profiles {profile_spec}: no deployment on these profiles (unknown ids, or nothing measured or projectable)")
    click.echo(render(advice, ctx, fmt, top), nl=False)
    if report_dir is not None:
        _into_report(report_dir, render(advice, ctx, "html", top))
    sys.exit(0 if advice.choice is not None else 1)


def _into_report(run_dir: Path, section: str) -> None:
    """report.html of `run_dir`, re-rendered from its records (charts included) with the advice section."""
    from harness.records import RecordsWriteError, load_records
    from harness.report import write_charts

    try:
        write_charts(load_records(run_dir), run_dir, sections=(section,))
    except (OSError, ValueError, RecordsWriteError) as e:
        _fail(f"--report {run_dir}: {e}")
    click.echo(f"advice added to {run_dir / 'report.html'}", err=True)


__all__ = ["advise", "PERCENTILES"]
