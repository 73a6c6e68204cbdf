"""Choosing the compile configuration of the CUDA decode step by measurement, once per machine.

Why: coordinate-descent tuning won on the lab H100 (159 -> 172 tok/s, 8B bf16 batch 1) and lost on the
H200 (tuned 186.9 / 198.8 / 220.2 tok/s in three processes, untuned 211.2 / 213.4 / 213.3), and
which tuned kernels a process gets varies. So with `--tune auto` each candidate is compiled, its
captured decode step is timed on the same replays, and the fastest is kept. The choice is cached on
disk, keyed by GPU name, model shape, variant, batch, prompt and new tokens and the library versions,
so a second process compiles only the winner and makes the same choice. The record names the chosen
configuration and the step times of every candidate (`Record.engine.compile_choice`).
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.atomic import atomic_write_text

# name -> CudaGraphEngine keyword arguments. max-autotune is not a candidate: minutes of compile per
# cell; it stays an explicit --compile-mode. "flex": the untuned step with FlexAttention's decoding
# kernel in place of SDPA (lean.DECODE_ATTENTION); on the H200 the SDPA attention and its mask kernels
# were 5.5% of the bf16 batch-1 step (results/reference/h200/diag-20261201/profile-bf16-b1.json).
CANDIDATES: dict[str, dict] = {"untuned": {"tune": False}, "tuned": {"tune": True},
                               "flex": {"tune": False, "decode_attention": "flex"}}
CACHE_FILE = "compile_choices.json"


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "harness")


def versions() -> dict[str, str]:
    import torch

    out = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    for name in ("triton", "torchao"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "absent"
    return out


def choice_key(gpu_name: str, model_key: str, variant: str, batch: int, prompt: int, new: int,
               compile_mode: str, libs: dict[str, str]) -> str:
    lib = ",".join(f"{k}={v}" for k, v in sorted(libs.items()))
    return f"{gpu_name}|{model_key}|{variant}|b{batch}|p{prompt}|n{new}|{compile_mode}|{lib}"


@dataclass(frozen=True)
class Choice:
    name: str                            # the chosen candidate
    step_s: dict[str, float]             # median decode-step time of every candidate measured
    source: str                          # "measured in this run" | "cached from an earlier run (path)"


class ChoiceCache:
    """A JSON file of key -> {name, step_s}; unreadable or malformed content is ignored and rewritten."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / CACHE_FILE

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Choice | None:
        e = self._load().get(key)
        if not isinstance(e, dict) or e.get("name") not in CANDIDATES:
            return None
        return Choice(e["name"], dict(e.get("step_s") or {}), f"cached from an earlier run ({self.path})")

    def put(self, key: str, choice: Choice) -> None:
        data = self._load()
        data[key] = {"name": choice.name, "step_s": choice.step_s}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only home costs the next process a re-measurement, nothing else


def choose(key: str, build: Callable[[str], object], step_time: Callable[[object], float],
           release: Callable[[object], None], cache: ChoiceCache) -> tuple[object, Choice]:
    """(engine, choice): the cached winner built directly, or every candidate built and timed, the
    losers released, and the winner kept (rebuilt if it was not the last one built)."""
    cached = cache.get(key)
    if cached is not None:
        return build(cached.name), cached
    times: dict[str, float] = {}
    errors: dict[str, str] = {}
    kept, kept_name = None, None
    for name in CANDIDATES:
        try:
            eng = build(name)
        except Exception as e:  # noqa: BLE001  (a candidate that does not compile is not chosen)
            if _fatal(e):
                raise
            errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
            continue
        times[name] = step_time(eng)
        if kept is None or times[name] < times[kept_name]:
            if kept is not None:
                release(kept)
            kept, kept_name = eng, name
        else:
            release(eng)
    if kept is None:
        raise RuntimeError("no compile configuration built: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    choice = Choice(kept_name, times, "measured in this run" + (f" (failed: {errors})" if errors else ""))
    if not errors:
        cache.put(key, choice)   # a partial comparison is not worth remembering
    return kept, choice


def _fatal(e: BaseException) -> bool:
    """Out of memory or a CUDA error: no other candidate would fare better in this process."""
    return type(e).__name__ == "OutOfMemoryError" or "CUDA error" in str(e)


def median_step_s(engine, replays: int = 32, rounds: int = 7) -> float:
    """Median over `rounds` of the mean time of `replays` back-to-back decode-graph replays (CUDA
    events): the same replays for every candidate."""
    return statistics.median(engine.decode_step_s(replays) for _ in range(rounds))
