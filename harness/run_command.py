"""`harness run`: validate the request, resolve the profile, run the sweep, write every view.

Two phases, so that the exit code says which went wrong:
- `prepare` checks everything before any model loads; a problem is bad input (ValueError, exit 2):
  specs, variants, corpus, device, profile, prompt + new tokens within each model's context length,
  a checkpoint that would run its own code (refused without --trust-remote-code), an output folder
  that is unwritable, locked by a live run (RUN_DIR/.lock), or already holds a run (without
  --resume). It writes run.json (the sweep definition) before the first cell.
- `run_plan` measures the cells, appending each Record to records.jsonl as it finishes, and writes
  the views even when the sweep is interrupted, so nothing measured is lost. Exit code 0 when every
  planned cell has a record that is ok, unsupported or does-not-fit and every view was written;
  1 when a cell failed, a cell has no record, or a view could not be written (run.json `complete`
  is then false).

Resume (`--resume RUN_DIR`): the sweep definition comes from RUN_DIR/run.json; options given on the
command line must agree with it (those marked per_invocation in harness/options.py, such as
--isolation, may differ). Exactly the planned cells without a record in records.jsonl are run.
With --retry-failed the cells whose record is `failed` are run again too. Superseded records: the
failed record of a retried cell is moved, before anything runs, from records.jsonl to
records.superseded.jsonl (appended there, then records.jsonl rewritten atomically). records.jsonl
thus holds at most one record per (cell key, repetition, meters) at every moment, and readers need
no rule to pick one; if a retry dies before its new record is written, the cell has no record and
the next --resume measures it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from harness import options as O, run_folder as F
from harness.options import RunOptions


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


class Progress:
    """The `[i/n]` of the run's lines, counted over the whole run whatever order cells start and finish
    in (groups run concurrently on several Ray nodes): a start line's i is how many cells have started
    (those a resumed run already has included), a record line's how many have finished; "k after this"
    counts the cells not started yet. One executor at a time runs the callbacks, in the driver.
    `several_profiles`: cells of several profiles may run at once (--executor ray --profile a,b), so
    each line names the cell's profile, and a record line its cell."""

    def __init__(self, total: int, done_before: int, several_profiles: bool = False):
        self.total, self.before, self.several = total, done_before, several_profiles
        self.started: set[int] = set()
        self.finished: set[int] = set()

    def _label(self, cell) -> str:
        return f"{cell.label()} on {cell.profile}" if self.several else cell.label()

    def start_line(self, cell) -> str:
        self.started.add(cell.index)
        left = self.total - self.before - len(self.started)
        return f"[{self.before + len(self.started)}/{self.total}] {self._label(cell)} ... ({left} after this)"

    def record_line(self, cell, status: str) -> str:
        self.started.add(cell.index)   # a cell recorded without a start (unsupported, a lost node's) counts too
        self.finished.add(cell.index)
        what = f"{self._label(cell)}: " if self.several else ""
        return f"[{self.before + len(self.finished)}/{self.total}]   {what}{status}"


@dataclass
class Plan:
    """A validated run, its folder locked, run.json written: what `run_plan` measures."""
    opts: RunOptions
    out_dir: Path
    cells: list                 # every planned cell (harness.sweep.Cell)
    todo: list                  # the ones to measure now
    meta: dict                  # run.json
    ctx: object                 # harness.sweep.RunContext
    lock: F.RunLock


@dataclass
class Outcome:
    out_dir: Path
    complete: bool
    failed: int
    view_errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.complete and not self.failed else 1


def _adopt(meta: dict, cli: RunOptions, paths: set, folder: Path) -> RunOptions:
    """The stored sweep, with this invocation's per-invocation options; refused if the command line
    defines another sweep."""
    stored = RunOptions(axes=O.from_dict(O.SweepAxes, meta["axes"], "run.json axes"),
                        settings=O.from_dict(O.RunSettings, meta["settings"], "run.json settings"))
    diffs = O.differences(stored, cli, paths)
    if diffs:
        raise ValueError(f"--resume {folder}: the command line defines another sweep than its run.json: "
                         + "; ".join(diffs))
    for p in O.params():
        if p.meta.get("per_invocation"):
            stored = O.set_path(stored, p.path, O.get_path(cli, p.path))
    return stored


def _normalize(opts: RunOptions) -> RunOptions:
    from harness.variants import parse_variant_list

    variants = tuple(parse_variant_list(",".join(opts.axes.variants)))   # 'all' -> names; unknown -> error
    for names in opts.axes.variants_by_backend().values():
        parse_variant_list(",".join(names))                               # unknown -> error
    return replace(opts, axes=replace(opts.axes, variants=variants))


def _check_models(opts: RunOptions) -> None:
    from harness.models.spec import context_length, parse_spec, remote_code

    need = max(opts.axes.prompt_tokens) + max(opts.axes.new_tokens)
    for m in opts.axes.models:
        spec = parse_spec(m)
        why = remote_code(spec)
        if why and not opts.settings.trust_remote_code:
            raise ValueError(f"{m}: needs trust_remote_code ({why}); pass --trust-remote-code to allow running "
                             "its code")
        n, source = context_length(spec)
        if n is not None and need > n:
            raise ValueError(f"{m}: prompt {max(opts.axes.prompt_tokens)} + new tokens {max(opts.axes.new_tokens)} "
                             f"= {need} positions exceed its context length {n} ({source})")


def _check_device(device: str):
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"--device takes auto, cpu, cuda or cuda:N, got {device!r}")
    from harness.backends.pytorch.device import resolve_device

    return resolve_device(device)   # e.g. cuda asked for on a machine without one: refuse before any output


def prepare(opts: RunOptions, given: set[tuple[str, ...]] = frozenset(), echo: Callable[[str], None] = print) -> Plan:
    """Everything that can be refused, refused before any model loads (ValueError: bad input)."""
    from harness import provenance
    from harness.corpus import load_corpus
    from harness.executor import load_plugins
    from harness.sweep import RunContext, expand, new_run_id

    # plug-ins first: the backends, variants and meters they register are valid below and in every worker
    load_plugins(opts.settings.plugins)

    if opts.retry_failed and opts.resume is None:
        raise ValueError("--retry-failed goes with --resume RUN_DIR")
    meta_old = None
    opts = _normalize(opts)
    if opts.resume is not None:
        if opts.out is not None and Path(opts.out).resolve() != Path(opts.resume).resolve():
            raise ValueError("--resume writes into the run's own folder; leave out --out (or give the same folder)")
        meta_old = F.read_run_json(opts.resume)
        opts = _adopt(meta_old, opts, set(given), opts.resume)
    _check_models(opts)
    corpus_name, _ = load_corpus(Path(opts.settings.corpus) if opts.settings.corpus else None)
    device = _check_device(opts.settings.device)
    from harness.backends.defaults import resolve_backends

    axes, backends_note = resolve_backends(opts.axes, device.type, opts.settings.executor)
    opts = replace(opts, axes=axes)
    if backends_note:
        echo(backends_note)
    if opts.settings.executor == "ray":
        from harness.executor.ray_executor import fleet_profile

        profile, why = fleet_profile(opts.profile, opts.profiles_dir, opts.settings.cpu_power_w)
    else:
        profile, why = resolve_profile(opts.profile, opts.profiles_dir, opts.settings.cpu_power_w)
    if meta_old is not None and profile.id != meta_old.get("profile"):
        raise ValueError(f"--resume {opts.resume}: the run was measured on profile {meta_old.get('profile')}, "
                         f"this invocation resolves to {profile.id} ({why}); resume it on that machine, or with "
                         f"the --profile/--profiles-dir it ran with (--profile {meta_old.get('profile_request')})")

    run_id = meta_old["run_id"] if meta_old else new_run_id(opts.axes.models)
    out_dir = Path(opts.resume or opts.out or Path("results") / run_id)
    F.ensure_writable(out_dir)
    lock = F.RunLock(out_dir).acquire()
    try:
        if meta_old is None:
            F.refuse_existing_run(out_dir)
        cells = _stamp_profiles(expand(opts.axes), profile.id.split(","))
        todo = _todo(cells, out_dir, opts.retry_failed, echo) if meta_old else cells
        allocator = None
        if device.type == "cuda":
            from harness.backends.pytorch.device import configure_cuda_allocator

            allocator = configure_cuda_allocator()
        prov = provenance.collect(profile.id)
        meta = _meta(opts, run_id, profile, why, corpus_name, prov, allocator, len(cells), meta_old, len(todo))
        if meta_old is None:
            meta["backends_note"] = backends_note
        F.write_run_json(out_dir, meta)
    except BaseException:
        lock.release()
        raise
    return Plan(opts, out_dir, cells, todo, meta, RunContext(run_id=run_id, profile=profile, provenance=prov), lock)


def _stamp_profiles(cells: list, ids: list[str]) -> list:
    """Each cell once per profile (one for a local run; --executor ray --profile a,b: the sweep per profile)."""
    out = [replace(c, profile=p) for p in ids for c in cells]
    return [replace(c, index=i) for i, c in enumerate(out)]


def _todo(cells: list, out_dir: Path, retry_failed: bool, echo) -> list:
    records = F.read_records(out_dir, echo)
    have = {F.cell_key(r): r.status for r in records}
    retry = {k for k, s in have.items() if s == "failed"} if retry_failed else set()
    planned = {F.cell_key(c) for c in cells}
    if retry:
        moved = F.supersede(out_dir, retry & planned)
        echo(f"retrying {moved} failed cell(s); their records moved to {F.SUPERSEDED}")
    return [c for c in cells if F.cell_key(c) not in have or F.cell_key(c) in retry]


def _meta(opts, run_id, profile, why, corpus_name, prov, allocator, n_cells, meta_old, n_todo) -> dict:
    """run.json. `meter` repeats settings.meter for the report's header."""
    meta = dict(meta_old or {})
    meta.update({"run_id": run_id, "sweep_version": 1, **O.sweep_dict(opts), "meter": asdict(opts.settings.meter),
                 "profile": profile.id, "profile_reason": why, "profile_request": opts.profile, "quick": opts.quick,
                 "corpus": corpus_name, "cuda_allocator": allocator, "cells": n_cells, "complete": False})
    if meta_old is None:
        meta["provenance"] = prov
    else:
        meta.setdefault("resumes", []).append({"utc_time": prov.get("utc_time"), "cells": n_todo,
                                               "git_commit": prov.get("git_commit")})
    return meta


def execute(opts: RunOptions, given: set[tuple[str, ...]] = frozenset(), echo: Callable[[str], None] = print) -> Outcome:
    return run_plan(prepare(opts, given, echo), echo)


def run_plan(plan: Plan, echo: Callable[[str], None] = print, progress=None) -> Outcome:
    """progress: a harness.progress display (PlainProgress(echo) when not given)."""
    from harness.executor import Interrupted
    from harness.records import append_jsonl
    from harness.runner import run_sweep

    jsonl = plan.out_dir / F.RECORDS
    total, todo = len(plan.cells), plan.todo
    count = Progress(total, total - len(todo), len({c.profile for c in plan.cells}) > 1)
    what = f"{len(todo)} of {total} cells (resumed)" if plan.opts.resume else f"{total} cells"
    echo(f"run {plan.ctx.run_id}: {what} on profile {plan.ctx.profile.id} ({plan.meta['profile_reason']})")
    t_start = time.perf_counter()
    if progress is None:
        from harness.progress import PlainProgress

        progress = PlainProgress(echo)

    def on_start(cell, n):
        line = count.start_line(cell)
        progress.start(line.split(" ")[0], line, key=cell.index)

    def on_record(cell, rec, n):
        append_jsonl(jsonl, rec)
        progress.done(count.record_line(cell, _status_line(rec)), key=cell.index)

    interrupted = None
    try:
        if todo:
            run_sweep(todo, plan.opts.settings, plan.ctx, on_record=on_record, on_start=on_start,
                      on_phase=lambda cell, name, n: progress.phase(name, key=cell.index))
    except Interrupted as e:   # the cell in flight is already a failed record; the views still get written
        interrupted = e
        plan.meta["interrupted_by"] = e.signame
    finally:
        progress.close()
        try:
            outcome = _finish(plan, time.perf_counter() - t_start, echo)
        finally:
            plan.lock.release()
    if interrupted is not None:
        interrupted.out_dir = plan.out_dir
        raise interrupted
    return outcome


def _write_views(done: list, meta: dict, out_dir: Path, echo) -> list[str]:
    from harness.records import write_tables
    from harness.report import write_charts, write_report

    views = [("report", lambda: write_report(done, meta, out_dir)), ("charts", lambda: write_charts(done, out_dir))]
    if done:
        views.insert(0, ("tables", lambda: write_tables(done, out_dir)))
    errors = []
    for name, write in views:
        try:
            write()
        except Exception as e:  # noqa: BLE001  (a view that fails must not lose the others or run.json)
            errors.append(f"{name}: {type(e).__name__}: {e}")
            echo(f"error: writing the {name} failed: {type(e).__name__}: {e}")
    return errors


NO_GPU_METERS = ("unavailable: no cell ran on a CUDA device with meters on, so the GPU run meters (copy "
                 "bandwidth, energy counter, idle power) were not opened")


def _gpu_meters_dict(gpu) -> dict:
    return {"copy_bandwidth_bytes_per_s": gpu.copy_bw.value_per_s, "copy_bandwidth_method": gpu.copy_bw.method,
            "copy_bandwidth_samples": list(gpu.copy_bw.samples_per_s),
            "energy_counter_update_period_s": getattr(gpu.meter, "update_period_s", None),
            "energy_method": gpu.meter.method,
            "idle_power": {k: {"power_w": v.power_w, "method": v.method} for k, v in gpu.idle_by_model.items()}}


def gpu_meters_meta(ctx) -> dict:
    """run.json's `gpu_meters`: the run-level GPU figures (from this process, its workers or, under
    --executor ray, its nodes, each node's own under `by_node`), or why there are none."""
    if ctx.gpu is None:
        return {"available": False, "reason": NO_GPU_METERS}
    out = {"available": True, **_gpu_meters_dict(ctx.gpu)}
    if ctx.gpu_by_node:
        out["by_node"] = {k: _gpu_meters_dict(v) for k, v in ctx.gpu_by_node.items()}
    return out


def _finish(plan: Plan, wall_s: float, echo) -> Outcome:
    meta, out_dir = plan.meta, plan.out_dir
    done = F.read_records(out_dir, echo)
    planned = {F.cell_key(c) for c in plan.cells}
    have = {F.cell_key(r): r.status for r in done if F.cell_key(r) in planned}
    meta["wall_s"] = meta.get("wall_s", 0.0) + wall_s
    meta["status_counts"] = {s: sum(r.status == s for r in done) for s in sorted({r.status for r in done})}
    if plan.ctx.gpu is not None or not meta.get("gpu_meters", {}).get("copy_bandwidth_method"):
        meta["gpu_meters"] = gpu_meters_meta(plan.ctx)   # a resume that opened none keeps the first part's
    meta["missing_cells"] = len(planned) - len(have)
    errors = _write_views(done, meta, out_dir, echo)
    meta["view_errors"] = errors
    meta["complete"] = not meta["missing_cells"] and not errors
    F.write_run_json(out_dir, meta)
    echo(f"report: {out_dir / 'report.md'}")
    failed = sum(s == "failed" for s in have.values())
    if failed or not meta["complete"]:
        echo(f"{failed} failed cell(s), {meta['missing_cells']} without a record, {len(errors)} view error(s)"
             + (f"; finish with: harness run --resume {out_dir}" + (" --retry-failed" if failed else "")
                if failed or meta["missing_cells"] else ""))
    return Outcome(out_dir, meta["complete"], failed, errors)
