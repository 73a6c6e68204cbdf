"""Whether a timed window ran at full clock: the SM clock of the window's power timeline against the
board's maximum (nvmlDeviceGetMaxClockInfo), and NVML's clock event reasons (power cap, thermal,
hardware slowdown) sampled with it.

Why: a kernel microbenchmark is short and runs at the maximum clock; a long, heavy cell can hold the
board at its power limit, and its compute-bound kernels then run slower than the planner's curves say.
On the lab H200 (results/reference/h200/session6-20261203/qwen-int4-b32-p2048) qwen2.5-7b int4-wo
(CUTLASS) at batch 32, prompt 2048 drew 677 W mean against the 700 W limit and its SM clock had a median
of 1,455 MHz of 1,980 over the timed window (mostly its 65,536-token prefills); the decode steps after
each prefill started at 1.27x the cell's lower-quartile step. 8B bf16 batch 1 ran at 1,980 MHz throughout.

The summary covers the busy samples (GPU-idle bit clear where reasons were read) of every GPU of the
cell, over the timed loop (prefill and decode passes) and, where the two-loop energy split ran one,
over the prefill-only loop (back-to-back prefills: the sustained clock of a compute-bound phase). A flag
is raised when their median SM clock is below FULL_CLOCK_FRACTION of the maximum; it names the reasons
NVML gave in at least REASON_SHARE of the busy samples.
"""
from __future__ import annotations

import statistics

GPU_IDLE = 0x1
# NVML clock event reasons (nvmlClocksEventReason*), the ones that lower clocks under load
REASONS = {0x4: "power cap", 0x80: "hardware power brake", 0x8: "hardware slowdown",
           0x20: "software thermal slowdown", 0x40: "hardware thermal slowdown",
           0x2: "application or user clocks", 0x10: "sync boost", 0x100: "display clock"}
FULL_CLOCK_FRACTION = 0.95
REASON_SHARE = 0.2
METHOD = ("NVML SM clock (nvmlDeviceGetClockInfo) and clock event reasons (nvmlDeviceGetCurrentClocksEventReasons) "
          "sampled with the power timeline over the timed window, against nvmlDeviceGetMaxClockInfo; busy samples: "
          "GPU-idle reason clear")


def clock_summary(timeline, max_sm_hz: dict[int, float | None], window: str = "the timed window") -> dict | None:
    """The window's clock figures and flags (see the module doc), or None where the timeline has no
    SM clock readings. `max_sm_hz`: NVML index -> the board's maximum SM clock (None where unknown);
    `window`: what the timeline covers, as the flag names it."""
    if timeline is None:
        return None
    busy = [s for s in timeline.samples if s.sm_clock_hz is not None
            and not (s.clock_reasons is not None and s.clock_reasons & GPU_IDLE)]
    if not busy:
        return None
    clocks = [s.sm_clock_hz for s in busy]
    fractions = [s.sm_clock_hz / max_sm_hz[s.device] for s in busy if max_sm_hz.get(s.device)]
    known = [s.clock_reasons for s in busy if s.clock_reasons is not None]
    shares = {name: sum(1 for r in known if r & bit) / len(known) for bit, name in REASONS.items()} if known else {}
    shares = {k: v for k, v in shares.items() if v > 0}
    maxima = [v for v in max_sm_hz.values() if v]
    out = {"method": METHOD, "busy_samples": len(busy), "samples": len(timeline.samples),
           "sm_clock_median_hz": statistics.median(clocks), "sm_clock_min_hz": min(clocks),
           "max_sm_clock_hz": max(maxima) if maxima else None,
           "median_fraction_of_max": statistics.median(fractions) if len(fractions) == len(busy) else None,
           "reason_shares": shares if known else None, "flags": []}
    frac = out["median_fraction_of_max"]
    if frac is not None and frac < FULL_CLOCK_FRACTION:
        why = [f"{name} in {share:.0%} of samples" for name, share in sorted(shares.items(), key=lambda kv: -kv[1])
               if share >= REASON_SHARE]
        out["flags"].append(f"SM clock median {out['sm_clock_median_hz'] / 1e6:,.0f} MHz, {frac:.0%} of its "
                            f"{out['max_sm_clock_hz'] / 1e6:,.0f} MHz maximum, over {window}"
                            + (f" ({'; '.join(why)})" if why else "")
                            + ": compute-bound work ran below full clock")
    return out
