"""The timed region of a cell, defined once.

Outside it: model instantiation, variant application, tokenization, warm-up passes, file output.
Inside it: repeated passes (prefill + decode), until at least `min_repeats` passes AND `min_seconds`
of timed work are done. RSS is sampled and energy read around the whole window.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from harness.meters import stats
from harness.meters.memory import RssSampler
# The timed loop's settings are declared with every other run option.
from harness.options import (DEFAULT_MAX_REPEATS, DEFAULT_MIN_REPEATS, DEFAULT_MIN_SECONDS,  # noqa: F401
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
    peak_rss_bytes: int | None
    energy_j: float | None
    decode_energy_j: float | None
    energy_source: str
    energy_method: str
    last_tokens: list[list[int]]
    engine_name: str = ""
    timing_source: str = ""
    window: object | None = None       # the energy window around the timed loop (GPU), if one was given

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

    @property
    def j_per_token_decode(self) -> float | None:
        if self.decode_energy_j is None or self.decode_tokens_per_pass == 0:
            return None
        return self.decode_energy_j / (self.decode_tokens_per_pass * self.repeats)


def measure(engine, ids, new_tokens: int, settings: MeterSettings, energy_reader=None,
            setup_s: float = 0.0, window=None, sample_rss: bool = True, hold_s: float = 0.0) -> Measurement:
    """`window`: a meter with begin()/end() (the GPU energy meter) wrapped around the timed loop;
    the loop then runs at least `window.min_window_s`. `sample_rss=False` turns the RSS sampler off
    (for measuring the meters' own overhead). `hold_s`: a further minimum length of the timed loop
    (a meters-off repetition runs as long as the meters-on ones it is compared with)."""
    t_setup = time.perf_counter()
    for _ in range(settings.warmup):
        engine.run_pass(ids, new_tokens)
    setup_s += time.perf_counter() - t_setup

    rss = RssSampler() if sample_rss else None
    min_seconds = max(settings.min_seconds, hold_s, getattr(window, "min_window_s", 0.0) if window else 0.0)
    prefill, decode, tpot = [], [], []
    decode_e: float | None = 0.0 if energy_reader and energy_reader.source != "unavailable" else None
    if rss:
        rss.begin()
    if window is not None:
        window.begin("full-loop")
    e0 = energy_reader.read() if energy_reader else None
    t0 = time.perf_counter()
    n = 0
    result = None
    while n < settings.max_repeats and (n < settings.min_repeats or time.perf_counter() - t0 < min_seconds):
        result = engine.run_pass(ids, new_tokens)
        prefill.append(result.prefill_s)
        decode.append(sum(result.step_s))
        tpot.extend(result.step_s)
        if decode_e is not None:
            decode_e = None if result.decode_energy_j is None else decode_e + result.decode_energy_j
        n += 1
    win = window.end() if window is not None else None
    timed = time.perf_counter() - t0
    energy = energy_reader.joules(e0, energy_reader.read()) if energy_reader else None
    rss_window = rss.end() if rss else None
    return Measurement(
        batch_size=ids.shape[0], prompt_tokens=ids.shape[1], new_tokens=new_tokens, repeats=n,
        timed_s=timed, setup_s=setup_s, prefill_s_samples=prefill, decode_s_samples=decode,
        tpot_s_samples=tpot, peak_rss_bytes=rss_window.peak_rss_bytes if rss_window else None, energy_j=energy,
        decode_energy_j=decode_e if new_tokens > 1 else None,
        energy_source=energy_reader.source if energy_reader else "unavailable",
        energy_method=energy_reader.method if energy_reader else "",
        last_tokens=result.tokens.tolist() if result is not None else [],
        engine_name=engine.name, timing_source=engine.timing_source, window=win)
