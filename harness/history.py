"""History of runs: a Parquet dataset (one file per run under the store, default results/history/)
holding each run's primary records, so a nightly job can compare tonight with the last entry of the
same machine and profile and draw trends per cell.

Each row is one cell of one run: the cell axes, status and reason, every metric that
harness.report.compare knows with its spread, the machine and the run's UTC time, and the record's
whole envelope (JSON) so that comparisons run on real Records with compare's own directions and
noise rule, never on a re-typed schema.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.records import CELL_AXES, Record, from_envelope, load_records, primary, to_envelope, write_view
from harness.report import compare as cmp
from harness.report.fmt import machine

DEFAULT_STORE = Path("results/history")
SPREADS = sorted({s for _, s in cmp.METRICS.values() if s})


class HistoryError(ValueError):
    pass


def _run_time(r: Record) -> str:
    return str((r.provenance or {}).get("utc_time") or "")


def rows_of(records: list[Record], run_id: str, added_utc: str) -> list[dict]:
    out = []
    for r in primary(records):
        row = {a: getattr(r, a) for a in CELL_AXES}
        row.update(status=r.status, reason=r.reason, run_id=run_id, machine=machine(r),
                   utc_time=_run_time(r) or added_utc, added_utc=added_utc)
        row.update({m: getattr(r, m) for m in cmp.METRICS})
        row.update({s: getattr(r, s) for s in SPREADS})
        row["envelope"] = json.dumps(to_envelope(r))
        out.append(row)
    return out


def add(run_dir: Path, store: Path = DEFAULT_STORE) -> tuple[str, Path]:
    """Append RUN_DIR's primary records to the store; (run id, file written). A run already in the
    store is an error (a nightly job re-run by hand must not count twice)."""
    import pandas as pd

    records = load_records(run_dir)
    if not records:
        raise HistoryError(f"{run_dir}: no records to add")
    run_id = records[0].run_id or Path(run_dir).name
    path = Path(store) / f"{run_id}.parquet"
    if path.exists():
        raise HistoryError(f"run {run_id} is already in {store} ({path.name})")
    Path(store).mkdir(parents=True, exist_ok=True)
    added = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frame = pd.DataFrame(rows_of(records, run_id, added))
    write_view(path, lambda p: frame.to_parquet(p, index=False), "the history entry")
    return run_id, path


def load(store: Path = DEFAULT_STORE):
    """Every entry of the store as one DataFrame, oldest run first."""
    import pandas as pd

    files = sorted(Path(store).glob("*.parquet"))
    if not files:
        raise HistoryError(f"{store}: no history here (add a run with `harness history add RUN_DIR`)")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return df.sort_values(["utc_time", "run_id"], kind="stable").reset_index(drop=True)


def records_of(df, run_id: str) -> list[Record]:
    return [from_envelope(json.loads(e)) for e in df.loc[df.run_id == run_id, "envelope"]]


def entries(df) -> list[tuple[str, str, str, str]]:
    """(utc_time, run_id, machine, profile) of each run, oldest first; a run's machine and profile are
    those of its first row."""
    first = df.drop_duplicates("run_id")
    return [(t, r, m, p) for t, r, m, p in zip(first.utc_time, first.run_id, first.machine, first.profile)]


def previous(df, run_id: str) -> str | None:
    """The entry before RUN_ID of the same machine and profile, or None."""
    runs = entries(df)
    mine = next((e for e in runs if e[1] == run_id), None)
    if mine is None:
        raise HistoryError(f"run {run_id} is not in the history")
    earlier = [e for e in runs if e[2:] == mine[2:] and (e[0], e[1]) < (mine[0], mine[1]) and e[1] != run_id]
    return earlier[-1][1] if earlier else None


@dataclass(frozen=True)
class Check:
    before: str | None            # run id compared against (None: the first entry of its machine/profile)
    after: str
    deltas: tuple                 # compare.Delta rows

    @property
    def exit_code(self) -> int:
        return 1 if cmp.regressions(list(self.deltas)) else 0


def check(store: Path, run_id: str, thresholds: dict[str, float]) -> Check:
    """Compare RUN_ID with the previous entry of the same machine and profile. CompareError when the
    two have no cell in common (exit 2 for the caller)."""
    df = load(store)
    before = previous(df, run_id)
    if before is None:
        return Check(None, run_id, ())
    return Check(before, run_id, tuple(cmp.compare(records_of(df, before), records_of(df, run_id), thresholds)))


def cell_filter(specs: tuple[str, ...]) -> dict[str, str]:
    """('variant=int8-wo', 'batch_size=8') -> {axis: value}; an unknown axis is an error naming the valid ones."""
    out = {}
    for spec in specs:
        for part in (p for p in spec.split(",") if p.strip()):
            key, eq, value = part.partition("=")
            key = {"batch": "batch_size", "prompt": "prompt_tokens", "new": "new_tokens"}.get(key.strip(), key.strip())
            if not eq or key not in CELL_AXES:
                raise HistoryError(f"--cell {part!r}: expected AXIS=VALUE with AXIS one of {', '.join(CELL_AXES)}")
            out[key] = value.strip()
    return out


def select(df, cells: dict[str, str]):
    for key, value in cells.items():
        df = df[df[key].astype(str) == value]
    return df
