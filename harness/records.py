"""The Record: one per cell, versioned, with units in field names. Every view reads this schema.

Files: `records.jsonl` holds one envelope per line, {"schema_version": N, **fields}; older envelopes
are upgraded on load by `_UPGRADES`. Parquet and CSV are flat views written from the same fields
(lists, dicts and the typed sections become JSON strings there).

Durability: a record is appended in one write call and fsynced; a write that fails (a full disk) is
rolled back to the previous size and raises `RecordsWriteError` naming the file. A torn last line
(the process died inside that write) is skipped on read with a warning. Views are written through
`harness.atomic` (temporary name + rename), so a failure never leaves a truncated file behind.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.atomic import atomic_path
from harness.record_sections import (SECTIONS, BandwidthDetail, EnergyDetail, EngineInfo, MemoryDetail,
                                     QualityDetail, VramBudgetDetail, build_section, split_legacy_extra)

__all__ = ["SCHEMA_VERSION", "STATUSES", "ENERGY_SOURCES", "CELL_AXES", "Record", "EngineInfo", "EnergyDetail",
           "MemoryDetail", "VramBudgetDetail", "BandwidthDetail", "QualityDetail", "RecordsWriteError", "cell_axes",
           "cell_key", "sections_from_extra", "primary", "from_envelope", "to_envelope", "append_jsonl", "read_jsonl",
           "load_records", "to_frame", "write_tables", "write_view"]

SCHEMA_VERSION = 3

STATUSES = ("ok", "failed", "unsupported", "does-not-fit")
# Where an energy figure comes from. `estimate` is never mixed with measured sources in one column
# without its label; `unavailable` goes with energy_j = None.
ENERGY_SOURCES = ("nvml_counter", "rapl", "estimate", "unavailable")

# What a cell is: the sweep axes that tell one measurement target from another. Repetition and the
# meter setting are not axes (several records of one cell); views drop axes with `without=`.
CELL_AXES = ("model", "variant", "backend", "profile", "batch_size", "prompt_tokens", "new_tokens")


def cell_axes(without: Iterable[str] = ()) -> tuple[str, ...]:
    drop = set(without)
    unknown = drop - set(CELL_AXES)
    if unknown:
        raise ValueError(f"not cell axes: {sorted(unknown)}; axes are {CELL_AXES}")
    return tuple(a for a in CELL_AXES if a not in drop)


def cell_key(r: "Record", without: Iterable[str] = ()) -> tuple:
    """The cell a record measured, as a tuple in `cell_axes(without)` order."""
    return tuple(getattr(r, a) for a in cell_axes(without))


@dataclass
class Record:
    # cell keys
    model: str
    variant: str
    backend: str
    profile: str
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    # outcome
    status: str = "ok"
    reason: str = ""
    # what ran
    device: str = ""                   # cpu, cuda:0
    dtype: str = ""                    # compute dtype of the unquantized parts
    kernel: str = ""                   # tensor type / op that ran the linear layers
    decode_path: str = ""              # eager, cuda-graph, compiled, hf-generate
    weights_note: str = ""             # e.g. "dequantized from GGUF Q4_1"
    prompt_source: str = ""            # corpus tokens or seeded random ids
    repetition: int = 0                # which measurement of the same cell (--repetitions), from 0
    meters: bool = True                # energy windows and samplers on during the timed loop
    # figures (None = not measured; never 0 for "unknown")
    decode_tok_s: float | None = None
    decode_tok_s_stdev: float | None = None
    prefill_tok_s: float | None = None
    ttft_s: float | None = None
    ttft_s_iqr: float | None = None
    tpot_p50_s: float | None = None
    tpot_p90_s: float | None = None
    tpot_p99_s: float | None = None
    tpot_iqr_s: float | None = None
    repeats: int | None = None
    timed_s: float | None = None
    setup_s: float | None = None
    timing_source: str = ""            # perf_counter, cuda_events
    peak_rss_bytes: int | None = None
    weight_bytes: int | None = None    # resident bytes of parameters and buffers, measured from the tensors
    energy_j: float | None = None
    j_per_token_decode: float | None = None
    energy_source: str = "unavailable"
    energy_method: str = ""            # how: counter names, or the estimate's formula
    j_per_token_prefill: float | None = None   # per prompt token (two-loop method on GPU)
    power_mean_w: float | None = None
    power_peak_w: float | None = None
    idle_power_w: float | None = None
    energy_flags: list[str] = field(default_factory=list)   # e.g. counter vs integrated power disagree
    # memory and bandwidth
    peak_vram_bytes: int | None = None
    kv_cache_bytes: int | None = None
    planned_weight_bytes: int | None = None    # the planner's projection beside the measured figure
    vram_expected_bytes: int | None = None     # weights + KV + workspace (activations + runtime), see memory.budget
    achieved_bandwidth_bytes_per_s: float | None = None
    mbu: float | None = None                   # achieved / copy bandwidth measured in the same run
    mfu: float | None = None                   # prefill FLOP/s / profile peak for the format
    # variant preparation
    calibration_s: float | None = None
    # quality (real weights only; None on synthetic models)
    perplexity: float | None = None
    kl_mean: float | None = None
    kl_p99: float | None = None
    top1_agreement: float | None = None
    quality_verdict: str = ""                  # pass | fail | not-meaningful | skipped
    # raw samples
    prefill_s_samples: list[float] = field(default_factory=list)
    decode_s_samples: list[float] = field(default_factory=list)
    tpot_s_samples: list[float] = field(default_factory=list)
    # typed detail sections (harness.record_sections): how the figures above were made
    engine: EngineInfo = field(default_factory=EngineInfo)
    energy: EnergyDetail = field(default_factory=EnergyDetail)
    memory: MemoryDetail = field(default_factory=MemoryDetail)
    bandwidth: BandwidthDetail = field(default_factory=BandwidthDetail)
    quality: QualityDetail = field(default_factory=QualityDetail)
    # run provenance, repeated on each record so a record stands alone
    run_id: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)   # whatever has no field or section yet

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not in {STATUSES}")
        if self.energy_source not in ENERGY_SOURCES:
            raise ValueError(f"energy_source {self.energy_source!r} not in {ENERGY_SOURCES}")
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"Record.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    @property
    def cell_key(self) -> tuple:
        """What was measured, whichever repetition and meter setting measured it."""
        return cell_key(self)

    @property
    def key(self) -> tuple:
        return self.cell_key + (self.repetition, self.meters)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(Record))
SAMPLE_FIELDS = ("prefill_s_samples", "decode_s_samples", "tpot_s_samples")
NESTED_FIELDS = SAMPLE_FIELDS + ("energy_flags",) + tuple(SECTIONS) + ("provenance", "extra")


def sections_from_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """Record keyword arguments from an untyped `extra` dict of schema-2 keys: the typed sections
    filled from the keys they know, and `extra` holding the rest. For producers still building that
    dict; new code constructs the sections directly."""
    parts, rest = split_legacy_extra(extra)
    out: dict[str, Any] = {}
    for name, d in parts.items():
        out[name], unknown = build_section(SECTIONS[name], d)
        rest.update({f"{name}.{k}": v for k, v in unknown.items()})
    return dict(out, extra=rest)


def _upgrade_0_to_1(d: dict[str, Any]) -> dict[str, Any]:
    # Version 0 was never written.
    return d


def _upgrade_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    # Version 2 added repetitions and the meters flag; every version-1 record was a single
    # measurement, with meters on unless the run was made with --no-meters.
    d.setdefault("repetition", 0)
    if "meters" not in d:
        d["meters"] = "meters off" not in str((d.get("extra") or {}).get("peak_vram_method", ""))
    return d


def _upgrade_2_to_3(d: dict[str, Any]) -> dict[str, Any]:
    # Version 3 moved engine, energy, memory, bandwidth and quality facts out of `extra` into typed
    # sections; keys no section knows stay in `extra`.
    parts, rest = split_legacy_extra(d.get("extra") or {})
    d.update(parts)
    d["extra"] = rest
    return d


_UPGRADES = {0: _upgrade_0_to_1, 1: _upgrade_1_to_2, 2: _upgrade_2_to_3}


# The GPU decode paths that measure the hardware; anything else on a GPU (eager, transformers' generate
# inside the pytorch backend) is a fallback that measures Python as much as the device.
FAST_GPU_PATHS = ("compiled+cuda-graph",)


def slow_path(r: Record) -> str | None:
    """The decode path of a GPU record of the pytorch backend that fell back from the compiled CUDA
    graph (the report's main table says so; calibration skips it), else None."""
    if r.status != "ok" or r.backend != "pytorch" or not str(r.device or "").startswith("cuda"):
        return None
    return None if r.decode_path in FAST_GPU_PATHS or not r.decode_path else r.decode_path


def record_prefill_path(r: Record) -> str | None:
    """"compiled" or "eager": the prefill the CUDA-graph engine ran (engine.prefill; records from before its
    choice ran the eager one and carry none); None where the engine has no such choice (another backend,
    the CPU)."""
    if r.backend != "pytorch" or not str(r.device or "").startswith("cuda"):
        return None
    return str((r.engine.prefill or {}).get("chosen") or "eager")


def primary(records: Iterable[Record]) -> list[Record]:
    """The records that views showing one figure per cell use: of each cell, its first repetition
    measured with meters on (or its first repetition, in a run with meters off). The other
    repetitions stay in the files and feed the repetition and meter-overhead sections of the report.
    Records of a cell with the same repetition and meter setting (files of several runs) all stay."""
    records = list(records)
    best: dict[tuple, tuple[bool, int]] = {}
    for r in records:
        rank = (r.meters, -r.repetition)
        if r.cell_key not in best or rank > best[r.cell_key]:
            best[r.cell_key] = rank
    return [r for r in records if (r.meters, -r.repetition) == best[r.cell_key]]


def from_envelope(env: dict[str, Any]) -> Record:
    env = dict(env)
    version = env.pop("schema_version", 0)
    if version > SCHEMA_VERSION:
        raise ValueError(f"record schema {version} is newer than this harness ({SCHEMA_VERSION}); upgrade harness")
    while version < SCHEMA_VERSION:
        env = _UPGRADES[version](env)
        version += 1
    known = {k: v for k, v in env.items() if k in FIELD_NAMES}
    unknown = {k: v for k, v in env.items() if k not in FIELD_NAMES}
    extra = dict(known.get("extra") or {})
    extra.update(unknown)
    for name, cls in SECTIONS.items():
        value = known.get(name)
        if value is None:
            known.pop(name, None)
            continue
        if not isinstance(value, dict):
            raise ValueError(f"section {name!r} must be an object, got {type(value).__name__}")
        known[name], rest = build_section(cls, value)
        extra.update({f"{name}.{k}": v for k, v in rest.items()})
    known["extra"] = extra
    return Record(**known)


def to_envelope(r: Record) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, **r.to_dict()}


class RecordsWriteError(OSError):
    """A record or a view could not be written; the message names the file and the OS error."""

    def __str__(self) -> str:
        return str(self.args[0])


def _write_failure(path: Path, what: str, e: OSError) -> RecordsWriteError:
    why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "the OS refused it"
    err = RecordsWriteError(f"{path}: could not write {what}: {why} ({e.strerror or e})")
    err.errno, err.filename = e.errno, str(path)
    return err


def _tail_fix(path: Path, fd: int, size: int) -> bytes:
    """Bytes to put before a new line so it starts a line of its own. A last line with no newline is a
    torn write (the process died inside it) when it does not parse: it is cut off, with a warning."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return b""
    start, chunk = size, 1 << 16
    while start > 0:
        lo = max(0, start - chunk)
        at = os.pread(fd, start - lo, lo).rfind(b"\n")
        if at >= 0:
            start = lo + at + 1
            break
        start = lo
    try:
        json.loads(os.pread(fd, size - start, start))
        return b"\n"
    except ValueError:
        warnings.warn(f"{path}: cutting off a torn last line ({size - start} bytes at offset {start}) before "
                      "appending", stacklevel=3)
        os.ftruncate(fd, start)
        return b""


def append_jsonl(path: str | Path, r: Record) -> None:
    """Append one record in a single write call, then fsync, so a crash later in the sweep loses
    nothing already measured and a failed write leaves no partial line behind."""
    path = Path(path)
    line = (json.dumps(to_envelope(r)) + "\n").encode("utf-8")   # before touching the file: may raise TypeError
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise _write_failure(path, "a record", e) from e
    try:
        size = os.fstat(fd).st_size
        try:
            data = _tail_fix(path, fd, size) + line
            size = os.fstat(fd).st_size
            written = os.write(fd, data)
            if written != len(data):   # a short write to a regular file: the disk filled up inside it
                raise OSError(errno.ENOSPC, f"short write, {written} of {len(data)} bytes")
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise _write_failure(path, "a record", e) from e
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[Record]:
    """Records of a jsonl file. A last line that is not JSON (a torn write) is skipped with a warning;
    any other invalid line is an error naming file:line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    out = []
    for i, (n, line) in enumerate(lines):
        try:
            env = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}:{n}: skipping a torn last line (a write that did not finish): {e}",
                              stacklevel=2)
                break
            raise ValueError(f"{path}:{n}: not a valid record: {e}") from e
        try:
            out.append(from_envelope(env))
        except (TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}:{n}: not a valid record: {e}") from e
    return out


def load_records(run_dir: str | Path) -> list[Record]:
    """Records of a run folder (or a records.jsonl path)."""
    p = Path(run_dir)
    if p.is_dir():
        p = p / "records.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no records.jsonl here")
    return read_jsonl(p)


def to_frame(records: Iterable[Record]):
    """Flat pandas view: nested fields become JSON strings (CSV and Parquet agree on them)."""
    import pandas as pd

    rows = []
    for r in records:
        d = r.to_dict()
        for k in NESTED_FIELDS:
            d[k] = json.dumps(d[k])
        rows.append(d)
    return pd.DataFrame(rows, columns=list(FIELD_NAMES))


def write_view(path: str | Path, write: Callable[[Path], object], what: str = "the view") -> Path:
    """Write a view file through a temporary name (`write(tmp)`), renamed over `path` only once whole.
    Raises RecordsWriteError naming the file when the disk is full or the write fails."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as e:
        raise _write_failure(path, what, e) from e
    return path


def write_tables(records: list[Record], out_dir: Path) -> None:
    df = to_frame(records)
    write_view(Path(out_dir) / "records.csv", lambda p: df.to_csv(p, index=False), "the CSV table")
    write_view(Path(out_dir) / "records.parquet", lambda p: df.to_parquet(p, index=False), "the Parquet table")
