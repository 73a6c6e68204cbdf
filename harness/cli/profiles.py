"""CLI commands for hardware profiles, detection and the planner: `profiles` (list, show), `detect`,
`plan`. Registered on the main group in harness/cli/__init__.py. No torch is imported here; the
module level holds only what the options' help needs.

A profile file that cannot be used is bad input: exit 2, with the file and key named.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click

from harness.variants import valid_names
from harness.plan.roofline import DEFAULT_HEADROOM
from harness.profiles.schema import FEATURES, Profile, ProfileError

profiles_dir_option = click.option(
    "--profiles-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder of profile YAML files (searched recursively). Default: the repository's profiles/.")
cpu_power_option = click.option(
    "--cpu-power-w", type=click.FloatRange(min=0, min_open=True), default=None,
    help="CPU package power in W for a CPU-only machine (unknown otherwise; used for energy estimates).")
cpu_bandwidth_option = click.option(
    "--cpu-bandwidth-gb-s", type=click.FloatRange(min=0, min_open=True), default=None,
    help="CPU memory bandwidth in GB/s (decimal) for a CPU-only machine (unknown otherwise).")


def _load(profiles_dir: Path | None) -> dict[str, Profile]:
    from harness.profiles.loader import load_profiles

    try:
        return load_profiles(profiles_dir)
    except ProfileError as e:
        raise click.UsageError(str(e)) from None


def _num(x: float | None, scale: float, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x / scale)


@click.group("profiles")
def profiles() -> None:
    """Hardware profiles: datasheet figures (memory, bandwidth, peaks, power) the planner projects onto."""


@profiles.command("list")
@profiles_dir_option
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
def list_profiles(profiles_dir: Path | None, fmt: str) -> None:
    """Table of every profile: id, class, memory, bandwidth, bf16/fp8/int8 dense peaks, power."""
    profs = _load(profiles_dir)
    if fmt == "json":
        click.echo(json.dumps([p.to_dict() for p in profs.values()], indent=2))
        return
    cols = ["id", "class", "memory GB", "bandwidth GB/s", "bf16 TFLOPS", "fp8 TFLOPS", "int8 TOPS", "power W"]
    click.echo("| " + " | ".join(cols) + " |")
    click.echo("|" + "|".join("---" for _ in cols) + "|")
    for p in profs.values():
        click.echo("| " + " | ".join([
            p.id, p.class_, _num(p.memory_bytes, 1e9), _num(p.bandwidth_bytes_per_s, 1e9, "{:,.1f}"),
            _num(p.peak("bf16"), 1e12, "{:,.1f}"), _num(p.peak("fp8"), 1e12, "{:,.1f}"),
            _num(p.peak("int8"), 1e12, "{:,.1f}"), _num(p.power_w, 1)]) + " |")
    click.echo("\n-: not published (null in the profile). Peaks are dense (no 2:4 sparsity).")


def _describe(p: Profile) -> str:
    yn = {True: "yes", False: "no", None: "not published"}

    def tf(m) -> str:
        return ", ".join(f"{k} {_num(v, 1e12, '{:,.1f}')}" for k, v in m.items()) or "-"

    lines = [
        f"id: {p.id}", f"name: {p.name}", f"vendor: {p.vendor or '-'}", f"class: {p.class_}",
        f"file: {p.source_file or '(built by detection)'}",
        f"memory: {_num(p.memory_bytes, 1e9)} GB ({p.memory_type or 'type not stated'})"
        + (f"; options {', '.join(_num(m, 1e9) for m in p.memory_options_bytes)} GB" if p.memory_options_bytes else ""),
        f"bandwidth: {_num(p.bandwidth_bytes_per_s, 1e9, '{:,.1f}')} GB/s"
        + ("".join(f"; {k}: {_num(v, 1e9, '{:,.1f}')}" for k, v in p.bandwidth_variants_bytes_per_s.items())),
        f"peak dense TFLOPS (TOPS for int): {tf(p.peak_flops)}",
        f"peak 2:4 sparse: {tf(p.peak_sparse_flops)} (speed-up {p.sparse_2to4_speedup or '-'})",
    ]
    if p.peak_other_flops:
        lines.append(f"other published rates: {tf(p.peak_other_flops)}")
    if p.npu:
        lines.append(f"npu: {_num(p.npu.tops, 1, '{:g}')} TOPS, precision {p.npu.precision or 'not stated'}, "
                     f"sparse {yn[p.npu.sparse]}" + (f"; {p.npu.notes}" if p.npu.notes else ""))
    lines += [
        f"power: {_num(p.power_w, 1)} W" + (f" (range {'-'.join(f'{x:g}' for x in p.power_range_w)} W)" if p.power_range_w else ""),
        f"compute capability: {p.compute_capability or '-'}" + (f"; gfx target {p.gfx_target}" if p.gfx_target else ""),
        f"baseline format: {p.baseline_format}",
        "features: " + ", ".join(f"{f} {yn[p.supports(f)]}" for f in FEATURES),
        f"software: {', '.join(p.software) or '-'}",
        f"onnxruntime execution providers: {', '.join(p.onnxruntime_eps) or '-'}",
        f"nvml names: {', '.join(p.nvml_names) or '-'}",
    ]
    if p.derived_estimates:
        lines.append(f"derived estimates (not vendor figures; unused): {dict(p.derived_estimates)}")
    lines += ["sources:"] + [f"  - {s}" for s in p.sources] + [f"notes: {p.notes or '-'}"]
    return "\n".join(lines)


@profiles.command("show")
@click.argument("profile_id")
@profiles_dir_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def show_profile(profile_id: str, profiles_dir: Path | None, fmt: str) -> None:
    """Every field of one profile, with its sources and notes (PROFILE_ID as in `harness profiles list`)."""
    profs = _load(profiles_dir)
    if profile_id not in profs:
        raise click.BadParameter(f"unknown profile {profile_id!r}; known: {', '.join(profs)}", param_hint="PROFILE_ID")
    p = profs[profile_id]
    click.echo(json.dumps(p.to_dict(), indent=2) if fmt == "json" else _describe(p))


@click.command("detect")
@profiles_dir_option
@cpu_power_option
@cpu_bandwidth_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def detect(profiles_dir: Path | None, cpu_power_w: float | None, cpu_bandwidth_gb_s: float | None, fmt: str) -> None:
    """Name the profile of this machine and why (NVML name, memory and compute capability; on a
    CPU-only machine a cpu-<model> profile from /proc/cpuinfo and psutil)."""
    from harness.profiles.detection import detect as detect_profile

    try:
        d = detect_profile(profiles_dir, cpu_power_w=cpu_power_w,
                           cpu_bandwidth_bytes_per_s=None if cpu_bandwidth_gb_s is None else cpu_bandwidth_gb_s * 1e9)
    except ProfileError as e:
        raise click.UsageError(str(e)) from None
    if fmt == "json":
        click.echo(json.dumps({"profile": d.profile.id, "reason": d.reason, "detail": d.profile.to_dict()}, indent=2))
    else:
        click.echo(f"profile: {d.profile.id} ({d.profile.name})\nwhy: {d.reason}")


def _pick_profiles(spec: str, profs: dict[str, Profile]) -> list[Profile]:
    from harness.profiles.detection import detect as detect_profile

    if spec.strip() == "all":
        return list(profs.values())
    out = []
    for pid in dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()):
        if pid == "auto":
            out.append(detect_profile(profiles=profs).profile)
        elif pid in profs:
            out.append(profs[pid])
        else:
            raise click.BadParameter(f"unknown profile {pid!r}; use 'all', 'auto' or ids from: {', '.join(profs)}",
                                     param_hint="--profiles")
    if not out:
        raise click.BadParameter("no profile given", param_hint="--profiles")
    return out


@click.command("plan")
@click.option("--model", "model", required=True,
              help="Model spec (e.g. synthetic:llama-3.1-70b, or a Hugging Face folder); only its shape is read.")
@click.option("--variants", default="baseline", show_default=True,
              help=f"Comma-separated variant names. {valid_names()}.")
@click.option("--context", "context", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Tokens per sequence (prompt + generated): sizes the KV cache and the prefill.")
@click.option("--batch", "batch", type=click.IntRange(min=1), default=1, show_default=True, help="Concurrent sequences.")
@click.option("--profiles", "profile_spec", default="all", show_default=True,
              help="'all', or comma-separated profile ids ('auto' = this machine's detected profile).")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True,
              help="What stdout gets. md: table, then the output folder as the last line; csv/json: data only.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder for plan.md/csv/json and the charts. Default: results/plan-<UTC timestamp>/.")
@click.option("--headroom", type=click.FloatRange(0, 1, max_open=True), default=DEFAULT_HEADROOM, show_default=True,
              help="Fraction of device memory kept free (runtime context, fragmentation, buffers).")
@click.option("--calibrate-with", "calibrate_with", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Run folder with records.jsonl, or a calibration file (harness calibrate); repeat the option, "
                   "all are used. Folders: measured/projected efficiency per variant, applied to profiles of the "
                   "same class (rows labelled calibrated). Folders and files: kernel curves per M projected onto "
                   "profiles of the same architecture, with an interval (curve_* columns).")
@click.option("--gpus", default=None, metavar="auto|N",
              help="Tensor parallelism over N GPUs of each profile ('auto': as many as the model needs): weights "
                   "and KV split N ways plus 2 all-reduces per layer over the profile's interconnect (TP columns).")
@click.option("--power", "power_files", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="Power file (harness calibrate --power-from; repeatable): with --calibrate-with, the curve "
                   "prefill of profiles of its architecture and power limit at the power-capped clock it measured.")
@profiles_dir_option
def plan(model: str, variants: str, context: int, batch: int, profile_spec: str, fmt: str, out_dir: Path | None,
         headroom: float, calibrate_with: tuple[Path, ...], gpus: str | None, power_files: tuple[Path, ...],
         profiles_dir: Path | None) -> None:
    """Project memory fit and roofline tokens/s of variants on hardware profiles (no hardware needed).

    Every figure is a projection from datasheet numbers: decode from the memory roofline, prefill from
    the compute roofline, whichever bound binds. Which profiles can serve a 70B model at int4
    weight-only with 8k context and batch 8, and how fast:

    \b
        harness plan --model synthetic:llama-3.1-70b --variants int4-wo --context 8192 --batch 8
    """
    from harness.models.spec import ModelSpecError, shape_of
    from harness.variants import VariantError, parse_variants
    from harness.plan.output import render, write_outputs
    from harness.plan.roofline import Workload, plan as plan_rows

    try:
        shape = shape_of(model)
    except ModelSpecError as e:
        raise click.BadParameter(str(e), param_hint="--model") from e
    try:
        vs = parse_variants(variants)
    except VariantError as e:
        raise click.BadParameter(str(e), param_hint="--variants") from e
    profs = _load(profiles_dir)
    chosen = _pick_profiles(profile_spec, profs)
    if context > shape.max_position_embeddings:
        click.echo(f"warning: context {context} exceeds the model's max_position_embeddings "
                   f"({shape.max_position_embeddings})", err=True)
    w = Workload(model, shape, context, batch, headroom)
    rows = plan_rows(chosen, vs, w)
    if gpus is not None and gpus != "auto" and not (gpus.isdigit() and int(gpus) >= 1):
        raise click.BadParameter(f"{gpus!r}: 'auto' or a whole number >= 1", param_hint="--gpus")
    if power_files and not calibrate_with:
        raise click.UsageError("--power scales curve projections: give --calibrate-with too")
    from harness.plan.power import load_power
    from harness.plan.sources import CalibrationFileError
    try:
        powers = [load_power(f) for f in power_files]
    except CalibrationFileError as e:
        raise click.BadParameter(str(e), param_hint="--power") from e
    cals = _calibrate_rows(rows, calibrate_with, {**profs, **{p.id: p for p in chosen}}, powers) if calibrate_with else []
    from harness.plan.multigpu import apply_multi_gpu
    apply_multi_gpu(rows, {p.id: p for p in chosen}, {v.name: v for v in vs}, w, gpus, cals)
    out = out_dir or Path("results") / f"plan-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    write_outputs(rows, w, out)
    click.echo(render(rows, w, fmt), nl=False)
    if fmt == "md":
        click.echo(f"\n{out}")


def _calibrate_rows(rows: list, sources: tuple[Path, ...], profs: dict[str, Profile], powers=()) -> list:
    """Both calibrations of `plan --calibrate-with`: per-variant efficiencies from the run folders'
    records (basis `calibrated`) and kernel curves from folders and calibration files (curve_*)."""
    from harness.plan.calibrate import calibrate
    from harness.plan.sources import CalibrationFileError, load_sources
    from harness.plan.transfer import apply_curves

    try:
        cals, records, curve_skips = load_sources(sources, profs)
    except (FileNotFoundError, ValueError, CalibrationFileError) as e:
        raise click.BadParameter(str(e), param_hint="--calibrate-with") from e
    if records:
        cal = calibrate(records, profs)
        cal.apply(rows)
        for e in cal.measured:
            click.echo(f"calibration: {e.profile} {e.variant}: measured/projected decode "
                       f"{'-' if e.decode is None else f'{e.decode:.2f}'}, prefill "
                       f"{'-' if e.prefill is None else f'{e.prefill:.2f}'} ({e.records} records)", err=True)
        for s in cal.skipped:
            click.echo(f"calibration: skipped {s}", err=True)
    apply_curves(rows, cals, profs, powers)
    for c in cals:
        click.echo(f"curves: {c.profile} (arch {c.arch}): {len(c.curves)} curves "
                   f"from {', '.join(c.provenance.get('sources', [])) or c.path}", err=True)
    for s in curve_skips:
        click.echo(f"curves: skipped {s}", err=True)
    return cals


__all__ = ["detect", "plan", "profiles"]
