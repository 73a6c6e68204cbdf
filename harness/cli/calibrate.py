"""`harness calibrate` (kernel curves of this machine, or of committed run folders, into a calibration
file) and `harness validate-plan` (measured cells beside projections from other devices' curves).

`calibrate` without --from-records measures: the device's copy bandwidth (harness.meters.bandwidth),
then a small sweep through `harness run` in a child process (the same engine and records as any run),
then fits the curves from that run's records. On a CPU-only machine it runs on the CPU.

`calibrate --kernels` (CUDA) measures the kernel-curve calibration instead, each step in a child process
of the repository's bench/ scripts, their outputs kept beside the file: the copy bandwidth, the
weight-only kernels at each preset block of --kernel-blocks (bench/kernels_gpu.py, M = KERNEL_M), the
engine's decode step (bf16 and int4-wo, batch 1) and prefill (bf16, prompts 128 and 2048) under
bench/profile_step.py, and the board's sustained kernel loads and clock recovery (bench/power_gpu.py); then
fits them as --from-kernels with --step-profile and --prefill-profile would, and writes the power file
beside the calibration (<out>-power.json, as --power-from would).
The pieces can be measured over several calls (--work-dir resumes a folder, --stop-after-s stops in time):
the lab device gives 10 minutes a call, and the 70B block's kernels alone take about 5.
"""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from harness.cli.profiles import _load, profiles_dir_option

SWEEP = {"model": "synthetic:tiny", "variants": "baseline", "batch": "1,2,4,8", "prompt_tokens": "32",
         "new_tokens": "16"}
# decode batches and prefill sizes (issue 14's M range; 512 and 1,024: a prefill of 8 x 128 tokens is
# M = 1,024, which between 256 and 2,048 the curves only bound by the roofline)
KERNEL_M = "1,2,4,8,16,32,64,128,256,512,1024,2048"
# (file stem, bench/profile_step.py arguments) of the step and the prefill profiles --kernels takes
# (the lab H200's profiles of 2026-12-03: the decode steps span batch 1-32 and caches of 192-2,112 tokens,
# the prefills three prompt lengths, so each fit has a residual)
STEP_PROFILES = (("step-bf16-b1", ["--batch", "1"]), ("step-int4-b1", ["--batch", "1", "--variant", "int4-wo"]),
                 ("step-bf16-b8", ["--batch", "8"]), ("step-bf16-b32-p2048", ["--batch", "32", "--prompt", "2048"]))
PREFILL_PROFILES = tuple((f"prefill-bf16-p{p}", ["--phase", "prefill", "--prompt", str(p), "--new", "2", "--steps", "10"])
                         for p in (128, 512, 2048))


def bench_dir() -> Path:
    """The repository's bench/ folder (beside the harness package in a checkout)."""
    return Path(__file__).resolve().parents[2] / "bench"


class _Pieces:
    """The --kernels pieces of one work folder: each piece is a child process writing one JSON file. A
    piece whose file is already there (a valid JSON, from an earlier call) is kept, not measured again; with
    a time limit, no piece starts after it and a running one is stopped at it (its file is then absent,
    so the next call measures it again)."""

    def __init__(self, folder: Path, stop_after_s: float | None, total: int):
        import time

        self.folder, self.stop_after_s, self.total = folder, stop_after_s, total
        self._now = time.monotonic
        self.t0 = self._now()
        self.done = self.kept = 0

    def left_s(self) -> float | None:
        return None if self.stop_after_s is None else self.stop_after_s - (self._now() - self.t0)

    def stop(self, why: str):
        return click.ClickException(
            f"{why}: {self.done + self.kept} of {self.total} pieces measured in {self.folder}; run the same "
            f"command with --work-dir {self.folder} to measure the rest")

    def run(self, cmd: list[str], out: Path) -> Path:
        if _valid_json(out):
            click.echo(f"calibrate: kept {out.name} (measured by an earlier call)", err=True)
            self.kept += 1
            return out
        left = self.left_s()
        if left is not None and left <= 0:
            raise self.stop(f"stopped at the {self.stop_after_s:g} s limit")
        log = out.with_suffix(".log")
        click.echo("calibrate: " + " ".join(cmd[1:]), err=True)
        with open(log, "w", encoding="utf-8") as f:
            try:
                done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=left)
            except subprocess.TimeoutExpired:
                out.unlink(missing_ok=True)
                raise self.stop(f"{Path(cmd[1]).name} stopped at the {self.stop_after_s:g} s limit "
                                f"(its output: {log})") from None
        if done.returncode != 0 or not _valid_json(out):
            out.unlink(missing_ok=True)
            raise click.ClickException(f"{' '.join(cmd[1:3])} exited {done.returncode}"
                                       + ("" if done.returncode else " without writing its JSON")
                                       + f" (its output: {log})")
        self.done += 1
        return out


def _valid_json(path: Path) -> bool:
    import json

    try:
        json.loads(path.read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def _copy_bandwidth(folder: Path) -> float:
    """The device's copy bandwidth (bytes/s): measured once per work folder, kept in copy-bandwidth.json."""
    import json

    from harness.meters.bandwidth import GIB, measure_copy_bandwidth

    path = folder / "copy-bandwidth.json"
    if _valid_json(path):
        copy = float(json.loads(path.read_text(encoding="utf-8"))["bytes_per_s"])
        click.echo(f"calibrate: copy bandwidth {copy / 1e9:.1f} GB/s (measured by an earlier call: {path})", err=True)
        return copy
    copy = measure_copy_bandwidth("cuda", buffer_bytes=2 * GIB).value_per_s
    path.write_text(json.dumps({"bytes_per_s": copy, "method": "harness.meters.bandwidth.measure_copy_bandwidth",
                                "measured_at": datetime.now(timezone.utc).isoformat()}), encoding="utf-8")
    click.echo(f"calibrate: copy bandwidth {copy / 1e9:.1f} GB/s", err=True)
    return copy


def _measure_kernels(folder: Path, blocks: list[str], profs: dict, profile_id: str | None,
                     stop_after_s: float | None = None):
    """The --kernels measurement (module doc) into `folder`: (the fitted calibration, the power bench's JSON,
    the profile id)."""
    import torch

    from harness.models.presets import PRESETS
    from harness.profiles.detection import detect as detect_profile

    if not torch.cuda.is_available():
        raise click.UsageError("--kernels times CUDA kernels: this machine has no CUDA device")
    bench = bench_dir()
    if not (bench / "kernels_gpu.py").is_file():
        raise click.UsageError(f"--kernels runs the repository's bench/ scripts, not found at {bench}: run it "
                               "from a checkout of the harness")
    bad = [b for b in blocks if b not in PRESETS]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: not a preset ({', '.join(sorted(PRESETS))})",
                                 param_hint="--kernel-blocks")
    if profile_id is None:
        profile_id = detect_profile(profiles=profs).profile.id
    if profile_id not in profs:
        raise click.BadParameter(f"{profile_id!r}: not a loaded profile", param_hint="--profile")
    folder.mkdir(parents=True, exist_ok=True)
    copy = _copy_bandwidth(folder)
    py = sys.executable
    pieces = _Pieces(folder, stop_after_s, len(blocks) + len(STEP_PROFILES) + len(PREFILL_PROFILES) + 1)
    kernels = tuple(pieces.run([py, str(bench / "kernels_gpu.py"), "--model", b, "--m", KERNEL_M, "--out",
                                str(folder / f"kernels-{b}.json")], folder / f"kernels-{b}.json") for b in blocks)

    def profiled(specs) -> tuple[Path, ...]:
        return tuple(pieces.run([py, str(bench / "profile_step.py"), *args, "--out", str(folder / f"{stem}.json")],
                                folder / f"{stem}.json") for stem, args in specs)

    steps, prefills = profiled(STEP_PROFILES), profiled(PREFILL_PROFILES)
    # the board's power loads and clock recovery (bench/power_gpu.py) at the first block: the power file
    power = pieces.run([py, str(bench / "power_gpu.py"), "--model", blocks[0], "--out",
                        str(folder / f"power-{blocks[0]}.json")], folder / f"power-{blocks[0]}.json")
    cal = _from_kernels(kernels, profs, profile_id, copy, f"harness calibrate --kernels ({folder})", steps, prefills)
    return cal, power, profile_id


def _write(cals, out: Path | None, profile_id: str | None) -> list[Path]:
    if profile_id is not None:
        cals = [c for c in cals if c.profile == profile_id]
    if not cals:
        raise click.UsageError("no calibration could be fitted (see the skipped lines above)")
    if out is not None and len(cals) > 1:
        raise click.UsageError(f"records of {len(cals)} profiles ({', '.join(c.profile for c in cals)}): "
                               "pick one with --profile, or leave --out unset (one file per profile)")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    paths = []
    for c in cals:
        path = out or Path("results") / f"calibration-{c.profile}-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(c.to_json(), encoding="utf-8")
        paths.append(path)
    return paths


def _measure(device: str, sweep_dir: Path, extra: dict[str, str]) -> float:
    """Copy bandwidth of `device` (bytes/s) and a sweep run into sweep_dir; returns the bandwidth."""
    from harness.meters.bandwidth import GIB, measure_copy_bandwidth

    buffer = GIB // 4 if device == "cpu" else 2 * GIB
    copy = measure_copy_bandwidth(device if device != "auto" else "cuda", buffer_bytes=buffer).value_per_s
    click.echo(f"calibrate: copy bandwidth {copy / 1e9:.1f} GB/s on {device}", err=True)
    cfg = {**SWEEP, **{k: v for k, v in extra.items() if v}}
    cmd = [sys.executable, "-m", "harness.cli", "run", "--model", cfg["model"], "--variants", cfg["variants"],
           "--batch", cfg["batch"], "--prompt-tokens", cfg["prompt_tokens"], "--new-tokens", cfg["new_tokens"],
           "--quick", "--device", device, "--out", str(sweep_dir)]
    click.echo("calibrate: " + " ".join(cmd[2:]), err=True)
    done = subprocess.run(cmd)
    if done.returncode not in (0, 1):
        raise click.UsageError(f"the calibration sweep exited {done.returncode}")
    return copy


def _from_kernels(paths: tuple[Path, ...], profs: dict, profile_id: str | None, copy_bw: float | None, copy_source: str,
                  step_profiles: tuple[Path, ...], prefill_profiles: tuple[Path, ...] = ()):
    from harness.plan.kernel_log import calibration_from_kernels
    from harness.plan.sources import harness_commit

    if profile_id is None or profile_id not in profs:
        raise click.BadParameter(f"{profile_id!r}: give the profile of the device the kernels ran on",
                                 param_hint="--profile")
    if not copy_bw or copy_bw <= 0:
        raise click.BadParameter("the device's measured copy bandwidth in bytes/s is needed", param_hint="--copy-bandwidth")
    try:
        cal, notes = calibration_from_kernels(list(paths), profs[profile_id], copy_bw, copy_source,
                                              list(step_profiles), harness_commit(), list(prefill_profiles))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for n in notes:
        click.echo(f"calibrate: left out {n}", err=True)
    return cal


def _power_file(paths: tuple[Path, ...], profs: dict, profile_id: str | None, out: Path | None) -> Path:
    from harness.plan.power import write_power_file
    from harness.plan.sources import harness_commit
    if profile_id is None or profile_id not in profs:
        raise click.BadParameter(f"{profile_id!r}: give the profile of the board the power bench ran on",
                                 param_hint="--profile")
    out = out or Path("results") / f"power-{profile_id}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    try:
        return write_power_file(paths, profs[profile_id], out, harness_commit())
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--power-from") from None


@click.command("calibrate")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Calibration file to write. Default: results/calibration-<profile>-<UTC>.json.")
@click.option("--from-records", "from_records", type=click.Path(exists=True, file_okay=False, path_type=Path),
              multiple=True, help="Fit from these run folders (repeatable) instead of measuring.")
@click.option("--from-kernels", "from_kernels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="Fit from a bench/kernels_gpu.py log or --out JSON instead (repeatable: one per "
                                  "block size timed, --model of kernels_gpu.py; needs --profile, the device it ran "
                                  "on, and --copy-bandwidth).")
@click.option("--copy-bandwidth", "copy_bw", type=float, default=None,
              help="With --from-kernels: that device's measured copy bandwidth, bytes/s.")
@click.option("--copy-source", default="given on the command line", show_default=True,
              help="With --from-kernels: where the copy bandwidth was measured (written to the provenance).")
@click.option("--step-profile", "step_profiles", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="With --from-kernels: bench/profile_step.py JSON (repeatable): fits the non-GEMM "
                                  "step cost. Without it the file states none (kernel curves only: optimistic).")
@click.option("--prefill-profile", "prefill_profiles", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="With --from-kernels: bench/profile_step.py --phase prefill JSON at two or more "
                                  "prompt lengths (repeatable): fits the non-GEMM prefill cost. Without them the file "
                                  "projects no prefill.")
@click.option("--kernels", "kernels", is_flag=True, default=False,
              help="CUDA: measure the kernel-curve calibration (kernel timings per block, step and prefill "
                   "profiles; see the module doc) instead of a sweep.")
@click.option("--kernel-blocks", default="llama-3.1-8b,llama-3.1-70b", show_default=True,
              help="With --kernels: presets whose block shapes the kernels are timed at (comma-separated).")
@click.option("--work-dir", "work_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --kernels: folder for the pieces (default: a new calibration-kernels-<UTC> beside --out). "
                   "An existing one resumes: pieces already measured there are kept.")
@click.option("--stop-after-s", "stop_after_s", type=click.FloatRange(min=1), default=None,
              help="With --kernels: start no piece after this many seconds and stop a running one at it "
                   "(exit 1, naming the folder to resume with --work-dir).")
@click.option("--power-from", "power_from", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="Write a power file from bench/power_gpu.py JSON (repeatable, pooled; needs --profile, the board "
                   "it ran on) instead: for validate-plan --power.")
@click.option("--profile", "profile_id", default=None, help="Keep only this profile's calibration.")
@click.option("--device", default="auto", show_default=True, help="Device to measure on: auto (cuda if present), cpu, cuda:N.")
@click.option("--model", default=None, help=f"Sweep model (default {SWEEP['model']}).")
@click.option("--variants", default=None, help=f"Sweep variants (default {SWEEP['variants']}).")
@click.option("--batch", default=None, help=f"Sweep batch sizes, M of the decode curve (default {SWEEP['batch']}).")
@profiles_dir_option
def calibrate(out: Path | None, from_records: tuple[Path, ...], from_kernels: tuple[Path, ...], copy_bw: float | None,
              copy_source: str, step_profiles: tuple[Path, ...], prefill_profiles: tuple[Path, ...],
              kernels: bool, kernel_blocks: str, work_dir: Path | None, stop_after_s: float | None,
              power_from: tuple[Path, ...], profile_id: str | None, device: str,
              model: str | None, variants: str | None, batch: str | None, profiles_dir: Path | None) -> None:
    """Measure kernel efficiency curves on this machine (or fit them from run folders) and write a
    calibration file for `harness plan --calibrate-with`.

    \b
        harness calibrate --from-records results/reference/h100/decode-8b-prompt128 --out h100.json
        harness calibrate --device cpu --out cpu.json      # measures: copy bandwidth + a small sweep
        harness calibrate --kernels --out h200.json        # CUDA: kernel timings + step/prefill profiles
        harness calibrate --kernels --work-dir W --stop-after-s 540 --out h200.json   # in pieces, resumable
    """
    from harness.plan.sources import fit_records
    from harness.profiles.detection import detect as detect_profile
    from harness.records import load_records

    profs = _load(profiles_dir)
    if power_from:
        if kernels or from_records or from_kernels:
            raise click.UsageError("--power-from writes a power file on its own: not with --kernels, "
                                   "--from-records or --from-kernels")
        click.echo(str(_power_file(power_from, profs, profile_id, out)))
        return
    if (work_dir or stop_after_s) and not kernels:
        raise click.UsageError("--work-dir and --stop-after-s go with --kernels")
    if kernels:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = work_dir or (out.parent if out else Path("results")) / f"calibration-kernels-{stamp}"
        cal, power, pid = _measure_kernels(folder, [b.strip() for b in kernel_blocks.split(",") if b.strip()], profs,
                                           profile_id, stop_after_s)
        for p in _write([cal], out, None):
            click.echo(str(p))
            click.echo(str(_power_file((power,), profs, pid, p.with_name(f"{p.stem}-power.json"))))
        return
    if from_kernels:
        for p in _write([_from_kernels(from_kernels, profs, profile_id, copy_bw, copy_source, step_profiles,
                                             prefill_profiles)], out, None):
            click.echo(str(p))
        return
    copy, folders = None, list(from_records)
    if not folders:
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        sweep_dir = (out.parent if out else Path("results")) / f"calibration-sweep-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        copy = _measure(device, sweep_dir, {"model": model, "variants": variants, "batch": batch})
        folders = [sweep_dir]
        here = detect_profile(profiles=profs).profile
        profs = {**profs, here.id: here}
    records = [r for f in folders for r in load_records(f)]
    cals, skipped = fit_records(records, profs, [str(f) for f in folders], copy_fallback=copy)
    for s in skipped:
        click.echo(f"calibrate: skipped {s}", err=True)
    if copy is not None:
        for c in cals:
            c.provenance["copy_bandwidth_measured_by"] = "harness calibrate (harness.meters.bandwidth)"
    for p in _write(cals, out, profile_id):
        click.echo(str(p))


@click.command("validate-plan")
@click.option("--measured", type=click.Path(exists=True, path_type=Path), multiple=True, required=True,
              help="Run folder (records.jsonl) or reference-measurement JSON file; repeatable.")
@click.option("--calibrate-with", "calibrate_with", type=click.Path(exists=True, path_type=Path), multiple=True,
              required=True, help="Run folder or calibration file; repeatable. A cell never uses its own device's.")
@click.option("--title", default="Planner validation", show_default=True)
@click.option("--note", "note_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Markdown file whose text goes under the title (what the figures mean, what is missing).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Markdown file to write.")
@click.option("--phase", type=click.Choice(["decode", "prefill"]), default=None, help="Only cells of this phase.")
@click.option("--within", type=float, default=0.25, show_default=True, help="Error bar per cell (fraction).")
@click.option("--median-bar", type=float, default=0.15, show_default=True, help="Bar on the median |error|; 0: none.")
@click.option("--same-device", is_flag=True, default=False,
              help="Also project from calibrations of the cell's own device (kernel curves measured there; "
                   "they must not have been fitted on these cells).")
@click.option("--power", "power_files", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="Power file (harness calibrate --power-from; repeatable): long prefills and the decode after "
                   "them projected at the power-capped clock it measured, on boards of its architecture and limit.")
@profiles_dir_option
def validate_plan(measured: tuple[Path, ...], calibrate_with: tuple[Path, ...], title: str, note_file: Path | None,
                  out: Path | None, phase: str | None, within: float, median_bar: float, same_device: bool,
                  power_files: tuple[Path, ...], profiles_dir: Path | None) -> None:
    """Every measured cell beside its projection from calibrations that exclude that cell's device:
    error, interval, and whether the measurement falls inside it (Markdown)."""
    from harness.plan.power import load_power
    from harness.plan.sources import CalibrationFileError, load_sources
    from harness.plan.validate import cells_from_records, cells_from_reference, project_cell, to_markdown
    from harness.records import load_records

    profs = _load(profiles_dir)
    try:
        cals, _, skipped = load_sources(calibrate_with, profs)
    except (FileNotFoundError, ValueError, CalibrationFileError) as e:
        raise click.BadParameter(str(e), param_hint="--calibrate-with") from e
    cells = []
    for m in measured:
        try:
            cells += cells_from_records(load_records(m), str(m)) if m.is_dir() else cells_from_reference(m)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise click.BadParameter(f"{m}: {e}", param_hint="--measured") from e
    cells = [c for c in cells if phase is None or c.phase == phase]
    try:
        powers = [load_power(f) for f in power_files]
    except CalibrationFileError as e:
        raise click.BadParameter(str(e), param_hint="--power") from e
    for c in cells:
        c.projection = project_cell(c, cals, profs, same_device, powers)
    text = to_markdown(cells, cals, title, note_file.read_text(encoding="utf-8") if note_file else "",
                       within, median_bar or None, same_device, powers)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    click.echo(text, nl=False)
