"""Who, what and where of a run: versions, git state, CPU/GPU names, UTC time."""
from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path

import harness

_PKGS = ("torch", "transformers", "torchao", "onnxruntime", "gguf", "nvidia-ml-py", "psutil")


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def git_state(cwd: Path | None = None) -> tuple[str | None, bool | None]:
    cwd = cwd or Path(harness.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                    capture_output=True, text=True, timeout=5, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001  (a broken CUDA install must not stop provenance)
        pass
    return []


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def collect(profile_id: str) -> dict:
    import os

    import psutil

    commit, dirty = git_state()
    return {
        "harness_version": harness.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in _PKGS},
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "gpus": gpu_names(),
        "profile": profile_id,
        "utc_time": utc_now().isoformat(timespec="seconds"),
    }
