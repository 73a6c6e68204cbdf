"""The timed region of a cell, defined once.

Outside it: model instantiation, variant application, tokenization, warm-up passes, file output.
Inside it: repeated passes (prefill + decode), until at least `min_repeats` passes AND `min_seconds`
of timed work are done (and at least the energy meter's minimum window). Every meter of the cell is
a window around that whole loop: begun in order, ended in reverse order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from harness.meters import stats

# The timed loop's settings are declared with every other run option.
from harness.options import (DEFAULT_MAX_REPEATS, DEFAULT_MIN_REPEATS, DEFAULT_MIN_SECONDS,  # noqa: F401,E402
                             DEFAULT_WARMUP, MeterSettings)


@dataclass(frozen=True)
class Measurement:
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    repeats: int
    timed_s: float
    setup_s: float
    prefill_s_samples: list[float]
    decode_s_samples: list[float]
    tpot_s_samples: list[float]
    last_tokens: list[list[int]]
    engine_name: str = ""
    timing_source: str = ""
    windows: dict[str, Any] = field(default_factory=dict)   # meter name -> its end() result

    @property
    def decode_tokens_per_pass(self) -> int:
        return self.batch_size * (self.new_tokens - 1)

    @property
    def decode_tok_s(self) -> float | None:
        total = sum(self.decode_s_samples)
        return self.decode_tokens_per_pass * len(self.decode_s_samples) / total if total > 0 else None

    @property
    def decode_tok_s_per_pass(self) -> list[float]:
        return [self.decode_tokens_per_pass / s for s in self.decode_s_samples if s > 0]

    @property
    def prefill_tok_s(self) -> float | None:
        m = stats.median(self.prefill_s_samples)
        return self.batch_size * self.prompt_tokens / m if m else None


def abort_windows(windows: Sequence) -> None:
    """Close every open window after a failure inside the region, so the next cell starts clean."""
    for w in reversed(list(windows)):
        try:
            (getattr(w, "abort", None) or w.end)()
        except Exception:  # noqa: BLE001  (closing after a failure must not mask the failure)
            pass


def measure(engine, ids, new_tokens: int, settings, windows: Sequence = (), setup_s: float = 0.0,
            hold_s: float = 0.0) -> Measurement:
    """`windows`: meters (begin()/end()) wrapped around the timed loop; a window with `min_window_s`
    (an energy counter) makes the loop last at least that long. `hold_s`: a further minimum length
    (a meters-off repetition runs as long as the meters-on ones it is compared with)."""
    t_setup = time.perf_counter()
    for _ in range(settings.warmup):
        engine.run_pass(ids, new_tokens)
    setup_s += time.perf_counter() - t_setup

    min_seconds = max([settings.min_seconds, hold_s] + [getattr(w, "min_window_s", 0.0) or 0.0 for w in windows])
    prefill, decode, tpot = [], [], []
    opened = []
    try:
        for w in windows:
            w.begin()
            opened.append(w)
        t0 = time.perf_counter()
        n = 0
        result = None
        while n < settings.max_repeats and (n < settings.min_repeats or time.perf_counter() - t0 < min_seconds):
            result = engine.run_pass(ids, new_tokens)
            prefill.append(result.prefill_s)
            decode.append(sum(result.step_s))
            tpot.extend(result.step_s)
            n += 1
        results = {}
        while opened:
            w = opened.pop()
            results[w.name] = w.end()
        timed = time.perf_counter() - t0
    except BaseException:
        abort_windows(opened)
        raise
    return Measurement(
        batch_size=ids.shape[0], prompt_tokens=ids.shape[1], new_tokens=new_tokens, repeats=n,
        timed_s=timed, setup_s=setup_s, prefill_s_samples=prefill, decode_s_samples=decode,
        tpot_s_samples=tpot, last_tokens=result.tokens.tolist() if result is not None else [],
        engine_name=engine.name, timing_source=engine.timing_source, windows=results)
