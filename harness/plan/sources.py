"""Where calibrations come from: run folders (records fitted into curves here) and calibration files.

`--calibrate-with` may be repeated; every source is used. Records of several folders are pooled per
profile before fitting, so one device's runs give one calibration.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterable, Mapping

from harness.plan.curves import CalibrationFileError, DeviceCalibration, fit_all, load_calibration
from harness.plan.transfer import DEFAULT_TRANSFER_ERROR
from harness.profiles.schema import Profile
from harness.records import Record, load_records

TRANSFER_BASIS = ("prior, not fitted on the target: board-to-board spread of the same SKU (the H100 batch-1 "
                  "baseline is bimodal across processes, 158.5 vs 167-174 tok/s) plus memory-system "
                  "differences within one architecture")


def harness_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fit_records(records: list[Record], profiles: Mapping[str, Profile], sources: list[str],
                backend: str = "pytorch", copy_fallback: float | None = None) -> tuple[list[DeviceCalibration], list[str]]:
    cals, skipped = fit_all(records, profiles, backend=backend,
                            sources=sources, commit=harness_commit(), copy_fallback=copy_fallback)
    for c in cals:
        c.provenance.setdefault("transfer_error", DEFAULT_TRANSFER_ERROR)
        c.provenance.setdefault("transfer_error_basis", TRANSFER_BASIS)
    return cals, skipped


def load_sources(paths: Iterable[str | Path], profiles: Mapping[str, Profile],
                 backend: str = "pytorch") -> tuple[list[DeviceCalibration], list[Record], list[str]]:
    """(calibrations, the records of the run folders, skipped reasons). A path is a run folder (with
    records.jsonl) or a calibration file (.json). Raises CalibrationFileError / FileNotFoundError."""
    cals: list[DeviceCalibration] = []
    records: list[Record] = []
    folders: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            records += load_records(p)
            folders.append(str(p))
        else:
            cals.append(load_calibration(p))
    skipped: list[str] = []
    if records:
        fitted, skipped = fit_records(records, profiles, folders, backend)
        cals += fitted
    return cals, records, skipped


__all__ = ["CalibrationFileError", "fit_records", "load_sources"]
