"""The run folder of `harness run`: checked writable before anything loads, locked against a second
writer, and read back by --resume (which cells already have a record)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Iterable

from harness.atomic import atomic_write_text

LOCK_NAME = ".lock"
RUN_JSON = "run.json"
RECORDS = "records.jsonl"
SUPERSEDED = "records.superseded.jsonl"


def ensure_writable(folder: Path) -> None:
    """Create `folder` and a probe file in it; a folder that cannot take files is bad input."""
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {folder}: not writable ({e.strerror or e})") from None


class RunLock:
    """An exclusive, non-blocking flock on RUN_DIR/.lock; the file holds the holder's pid and host.
    The kernel drops the lock when its holder dies, so the file left behind never blocks anyone."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ValueError(f"{self.path}: cannot lock ({e.strerror})") from None
            holder = self.holder() or "another process"
            raise ValueError(f"{self.path.parent} is in use by a running harness run ({holder}); wait for it "
                             "to end or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def holder(self) -> str:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return ""
        return f"pid {d['pid']} on host {d.get('host', '?')}" if "pid" in d else ""

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)      # before unlocking: the next holder writes its own pid
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def refuse_existing_run(folder: Path) -> None:
    """A fresh run never writes into a folder that holds another run's records."""
    for name in (RECORDS, RUN_JSON):
        if (folder / name).exists():
            raise ValueError(f"{folder} already holds {name}; choose another --out, or finish that run with "
                             f"--resume {folder}")


def read_run_json(folder: Path) -> dict:
    f = Path(folder) / RUN_JSON
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--resume {folder}: no {RUN_JSON} there; not a run folder") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"--resume {folder}: {RUN_JSON} is unreadable: {e}") from None
    if not isinstance(meta, dict) or "sweep_version" not in meta:
        raise ValueError(f"--resume {folder}: {RUN_JSON} holds no sweep definition this harness can resume "
                         "(written before --resume existed); start a new run")
    return meta


def write_run_json(folder: Path, meta: dict) -> None:
    atomic_write_text(Path(folder) / RUN_JSON, json.dumps(meta, indent=2, default=str) + "\n")


def cell_key(c) -> tuple:
    """What identifies a cell's measurement, for a Cell and a Record alike. The profile is part of it: a Ray
    sweep measures each cell once per profile (`harness run` sets Cell.profile, local runs included)."""
    return (c.model, c.variant, c.backend, c.batch_size, c.prompt_tokens, c.new_tokens, c.repetition, c.meters,
            c.profile)


def read_records(folder: Path, echo=print) -> list:
    """The records of a run folder. A last line cut short (the process died while writing it) is
    dropped from the file, so its cell counts as not measured; a whole last record without its
    newline gets one, so the next append starts a line of its own."""
    from harness.records import from_envelope

    path = Path(folder) / RECORDS
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        try:
            json.loads(lines[-1])
            lines[-1] += "\n"
        except ValueError:
            echo(f"note: {path}: dropped a last line cut short ({len(lines[-1])} bytes)")
            lines = lines[:-1]
        atomic_write_text(path, "".join(lines))
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(from_envelope(json.loads(line)))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not a valid record: {e}") from None
    return out


def supersede(folder: Path, keys: Iterable[tuple]) -> int:
    """Move the failed records of `keys` from records.jsonl to records.superseded.jsonl (appended
    there first, then records.jsonl rewritten atomically), so records.jsonl keeps at most one record
    per cell. Returns how many moved."""
    keys = set(keys)
    path = Path(folder) / RECORDS
    keep, moved = [], []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        env = json.loads(line) if line.strip() else None
        if env is not None and env.get("status") == "failed" and _env_key(env) in keys:
            moved.append(line)
        else:
            keep.append(line)
    if moved:
        with open(Path(folder) / SUPERSEDED, "a", encoding="utf-8") as f:
            f.writelines(moved)
            f.flush()
            os.fsync(f.fileno())
        atomic_write_text(path, "".join(keep))
    return len(moved)


def _env_key(env: dict) -> tuple:
    from harness.records import from_envelope

    return cell_key(from_envelope(env))
