"""`harness run`: validate the request, resolve the profile, run the sweep, write every view.

Records are appended to records.jsonl as each cell finishes, and the views are written even when the
sweep is interrupted, so nothing measured is lost.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from harness.backends.measure import MeterSettings
from harness.corpus import load_corpus
from harness.models.spec import parse_spec
from harness.quality.settings import QualitySettings
from harness.records import append_jsonl, write_tables
from harness.runner import RunContext, RunSettings, SweepAxes, expand, new_run_id, run_sweep


@dataclass(frozen=True)
class RunRequest:
    model: str
    variants: str
    batch_sizes: tuple[int, ...]
    prompt_tokens: tuple[int, ...]
    new_tokens: tuple[int, ...]
    warmup: int
    repeats: int
    min_seconds: float
    device: str = "auto"
    profile: str = "auto"
    profiles_dir: Path | None = None
    cpu_power_w: float | None = None
    corpus: Path | None = None
    out: Path | None = None
    backends: tuple[str, ...] = ("pytorch",)
    compile: bool = True
    tune: str = "auto"
    compile_mode: str = "default"
    meters: str = "on"                 # on | off | alternate (meter-overhead benchmark)
    repetitions: int = 1
    energy_window_s: float = 10.0
    quality: QualitySettings = field(default_factory=QualitySettings)


def resolve_profile(name: str, profiles_dir: Path | None, cpu_power_w: float | None):
    """(profile, why) for --profile auto (detection) or an explicit id."""
    from harness.profiles import detect, load_profiles

    if name == "auto":
        d = detect(profiles_dir, cpu_power_w=cpu_power_w)
        return d.profile, d.reason
    profiles = load_profiles(profiles_dir)
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(sorted(profiles))}")
    return profiles[name], "chosen with --profile"


def _status_line(rec) -> str:
    if rec.status != "ok":
        return f"{rec.status}: {rec.reason}"
    return (f"ok: decode {rec.decode_tok_s:.1f} tok/s, prefill {rec.prefill_tok_s:.1f} tok/s, "
            f"TTFT {rec.ttft_s * 1e3:.1f} ms, {rec.repeats} passes")


def execute(req: RunRequest, echo: Callable[[str], None] = print) -> Path:
    from harness.executor import Interrupted, load_plugins
    from harness.variants import parse_variant_list

    load_plugins()   # $HARNESS_PLUGINS: what they register is valid below, and in every worker
    # Validate everything before any model loads.
    models = tuple(m.strip() for m in req.model.split(",") if m.strip())
    for m in models:
        parse_spec(m)
    variants = tuple(parse_variant_list(req.variants))
    corpus_name, _ = load_corpus(req.corpus)
    axes = SweepAxes(models, variants, req.batch_sizes, req.prompt_tokens, req.new_tokens, req.backends,
                     repetitions=req.repetitions, meters=req.meters)
    if req.device not in ("auto", "cpu") and not req.device.startswith("cuda"):
        raise ValueError(f"--device takes auto, cpu, cuda or cuda:N, got {req.device!r}")
    from harness.backends.device import resolve_device

    device = resolve_device(req.device)   # e.g. cuda asked for on a machine without one: refuse before any output
    profile, why = resolve_profile(req.profile, req.profiles_dir, req.cpu_power_w)

    from harness import provenance

    run_id = new_run_id(models)
    out_dir = Path(req.out) if req.out else Path("results") / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "records.jsonl"
    if jsonl.exists():
        raise ValueError(f"{out_dir} already holds records.jsonl; choose another --out")
    allocator = None
    if device.type == "cuda":
        from harness.backends.device import configure_cuda_allocator

        allocator = configure_cuda_allocator()
    meter = MeterSettings(warmup=req.warmup, min_repeats=req.repeats, min_seconds=req.min_seconds)
    settings = RunSettings(device=req.device, meter=meter, corpus=str(req.corpus) if req.corpus else None,
                           cpu_power_w=req.cpu_power_w, compile=req.compile, tune=req.tune, compile_mode=req.compile_mode,
                           meters=req.meters != "off",
                           energy_window_s=req.energy_window_s, quality=req.quality)
    prov = provenance.collect(profile.id)
    ctx = RunContext(run_id=run_id, profile=profile, provenance=prov)
    run_meta = {"run_id": run_id, "axes": asdict(axes), "profile": profile.id, "profile_reason": why,
                "settings": {"device": req.device, "cpu_power_w": req.cpu_power_w, "compile": req.compile, "tune": req.tune,
                             "compile_mode": req.compile_mode,
                             "meters": req.meters, "repetitions": req.repetitions, "cuda_allocator": allocator,
                             "energy_window_s": req.energy_window_s}, "meter": asdict(meter),
                "corpus": corpus_name, "provenance": prov, "quality": req.quality.as_dict(), "cells": len(expand(axes))}
    echo(f"run {run_id}: {run_meta['cells']} cells on profile {profile.id} ({why})")
    t_start = time.perf_counter()

    def on_start(cell, n):
        echo(f"[{cell.index + 1}/{n}] {cell.label()} ... ({n - cell.index - 1} after this)")

    def on_record(cell, rec, n):
        append_jsonl(jsonl, rec)
        echo(f"[{cell.index + 1}/{n}]   {_status_line(rec)}")

    records, interrupted = [], None
    try:
        records = run_sweep(expand(axes), settings, ctx, on_record=on_record, on_start=on_start)
    except Interrupted as e:   # the cell in flight is already a failed record; the views still get written
        records, interrupted = e.records, e
    finally:
        from harness.records import read_jsonl
        from harness.report import write_charts, write_report

        done = read_jsonl(jsonl) if jsonl.exists() else records
        run_meta["wall_s"] = time.perf_counter() - t_start
        run_meta["status_counts"] = {s: sum(r.status == s for r in done) for s in sorted({r.status for r in done})}
        run_meta["complete"] = len(done) == run_meta["cells"]
        run_meta["interrupted_by"] = interrupted.signame if interrupted else None
        if ctx.gpu is not None:
            run_meta["gpu_meters"] = {
                "copy_bandwidth_bytes_per_s": ctx.gpu.copy_bw.value_per_s, "copy_bandwidth_method": ctx.gpu.copy_bw.method,
                "copy_bandwidth_samples": list(ctx.gpu.copy_bw.samples_per_s),
                "energy_counter_update_period_s": getattr(ctx.gpu.meter, "update_period_s", None),
                "energy_method": ctx.gpu.meter.method,
                "idle_power": {k: {"power_w": v.power_w, "method": v.method} for k, v in ctx.gpu.idle_by_model.items()}}
        (out_dir / "run.json").write_text(json.dumps(run_meta, indent=2, default=str), encoding="utf-8")
        if done:
            write_tables(done, out_dir)
        write_report(done, run_meta, out_dir)
        write_charts(done, out_dir)
        echo(f"report: {out_dir / 'report.md'}")
    if interrupted is not None:
        interrupted.out_dir = out_dir
        raise interrupted
    return out_dir
