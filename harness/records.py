"""The Record: one per cell, versioned, with units in field names. Every view reads this schema.

Files: `records.jsonl` holds one envelope per line, {"schema_version": N, **fields}; older envelopes
are upgraded on load by `_UPGRADES`. Parquet and CSV are flat views written from the same fields.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 2

STATUSES = ("ok", "failed", "unsupported", "does-not-fit")
# Where an energy figure comes from. `estimate` is never mixed with measured sources in one column
# without its label; `unavailable` goes with energy_j = None.
ENERGY_SOURCES = ("nvml_counter", "rapl", "estimate", "unavailable")


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
    vram_expected_bytes: int | None = None     # weights + KV + workspace (activations + runtime), see extra.vram_budget
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
    # run provenance, repeated on each record so a record stands alone
    run_id: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not in {STATUSES}")
        if self.energy_source not in ENERGY_SOURCES:
            raise ValueError(f"energy_source {self.energy_source!r} not in {ENERGY_SOURCES}")

    @property
    def cell_key(self) -> tuple:
        """What was measured, whichever repetition and meter setting measured it."""
        return (self.model, self.variant, self.backend, self.profile,
                self.batch_size, self.prompt_tokens, self.new_tokens)

    @property
    def key(self) -> tuple:
        return self.cell_key + (self.repetition, self.meters)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(Record))
SAMPLE_FIELDS = ("prefill_s_samples", "decode_s_samples", "tpot_s_samples")
NESTED_FIELDS = SAMPLE_FIELDS + ("energy_flags", "provenance", "extra")


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


_UPGRADES = {0: _upgrade_0_to_1, 1: _upgrade_1_to_2}


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
    if unknown:
        known.setdefault("extra", {}).update(unknown)
    return Record(**known)


def to_envelope(r: Record) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, **r.to_dict()}


def append_jsonl(path: Path, r: Record) -> None:
    """Append one record and flush, so a crash later in the sweep loses nothing already measured."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(to_envelope(r)) + "\n")
        f.flush()


def read_jsonl(path: Path) -> list[Record]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(from_envelope(json.loads(line)))
                except (json.JSONDecodeError, TypeError, ValueError) as e:
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


def write_tables(records: list[Record], out_dir: Path) -> None:
    df = to_frame(records)
    df.to_csv(out_dir / "records.csv", index=False)
    df.to_parquet(out_dir / "records.parquet", index=False)
