"""Power and clock of sustained kernel loads, and how fast the clock comes back after a power-capped one.

    python3 bench/power_gpu.py [--model llama-3.1-8b] [--loads "bf16:1,bf16:2048,..."] [--hold-s 2.5] [--out F.json]

Why: a kernel microbenchmark (bench/kernels_gpu.py) is short and runs at the board's maximum clock; a long,
heavy phase (a 65,536-token prefill) holds the board at its power limit, its compute-bound kernels run at a
lower SM clock, and the decode steps right after it start slow while the clock comes back (lab H200,
results/reference/h200/session6-20261203/qwen-int4-b32-p2048: 1,455 MHz of 1,980 over the window, the first
step after each prefill 1.27x the lower-quartile one). The planner needs, per device: idle power, the power
a load draws per FLOP/s and per byte/s at full clock, the clock a load settles at when that power exceeds
the limit, and the clock's recovery in time after such a load. This measures them.

What runs (all in CUDA graphs, timed with CUDA events; power from the NVML energy counter, the SM clock and
clock event reasons from a 100 Hz NVML sampler, harness.meters.power_sampler):

- idle: the energy counter over `--idle-s` seconds with nothing queued.
- loads: each `kernel:M` of `--loads` replays one decoder block's four linears of `--model` (the shapes of
  bench/kernels_gpu.py; the kernel names are its prefixes) at M rows, back to back for `--hold-s` seconds:
  per-replay times over the window, FLOP/s and weight bytes/s, mean power over the window's second half,
  the SM clock median and the clock event reasons there.
- recovery: after `--heavy` (a load) held `--heavy-s` seconds, the probe `kernel:M` of each `--probes`
  entry and a clock probe (a chain of dependent 64x64 fp32 matmuls: latency-bound, little power, its time
  inversely proportional to the SM clock) replay alternately for `--probe-s` seconds; each replay's time
  against the same probe's time at full clock (measured first, after an idle pause), by its start
  time after the heavy load's last replay ended.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernels_gpu import kernels, weight_bytes  # noqa: E402

REPLAY_TARGET_US = 2000.0   # one graph replay: about this long, so per-replay events resolve the clock ramp
BATCH_S = 0.05              # replays are queued in batches of about this long, the GPU never runs dry


def kernel_maker(prefix: str):
    if "bf16 cuBLAS".startswith(prefix):
        return "bf16 cuBLAS", lambda lin: lin      # without torchao too (kernels() imports it)
    names = [k for k in kernels() if k.startswith(prefix)]
    if not names:
        raise SystemExit(f"error: no kernel starts with {prefix!r} (bench/kernels_gpu.py kernels)")
    return names[0], kernels()[names[0]]


class Graph:
    """`reps` back-to-back calls of `body` captured in one CUDA graph."""

    def __init__(self, body, reps: int):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.inference_mode():
            for _ in range(3):
                body()
        torch.cuda.current_stream().wait_stream(s)
        self.g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.g), torch.inference_mode():
            for _ in range(reps):
                body()
        self.reps = reps

    def replay(self):
        self.g.replay()


def sized_graph(body) -> tuple[Graph, float]:
    """A graph of as many calls of `body` as take about REPLAY_TARGET_US, and one call's microseconds."""
    one = Graph(body, 1)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        a.record(); one.replay(); b.record(); torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) * 1e3)
    reps = max(1, round(REPLAY_TARGET_US / best))
    g = Graph(body, reps)
    # one call's time from the sized graph itself (a one-call replay carries the launch's fixed cost)
    best = float("inf")
    for _ in range(3):
        a.record(); g.replay(); b.record(); torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) * 1e3 / reps)
    return g, best


class Block:
    """One decoder block's four linears of a preset at M rows, on one kernel."""

    def __init__(self, prefix: str, m: int, model: str):
        from harness.plan.kernel_log import block_shapes
        self.kernel, make = kernel_maker(prefix)
        self.m, self.mods, self.xs, self.flop, self.bytes = m, [], [], 0, 0
        for n, k in block_shapes(model).values():
            lin = nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
            mod = make(lin)
            self.mods.append(mod)
            self.xs.append(torch.randn(m, k, device="cuda", dtype=torch.bfloat16))
            self.flop += 2 * m * n * k
            self.bytes += weight_bytes(mod)
        self.graph, self.call_us = sized_graph(self.body)
        self.graph.est_ms = self.call_us * self.graph.reps / 1e3   # one replay, for run_replays' batches
        self.label = f"{prefix}:{m}"

    def body(self):
        for mod, x in zip(self.mods, self.xs):
            mod(x)


class ClockProbe:
    """A chain of dependent small matmuls: its time follows the SM clock, its power is small."""
    label = "clock probe"

    def __init__(self, chain: int = 64):
        # orthogonal: the chain keeps the values' size, however many replays run
        self.w = torch.linalg.qr(torch.randn(64, 64, device="cuda"))[0]
        self.x = torch.randn(64, 64, device="cuda")
        self.chain = chain
        self.graph = Graph(self.body, 1)
        self.graph.est_ms = 0.2

    def body(self):
        y = self.x
        for _ in range(self.chain):
            y = torch.mm(y, self.w)
        self.x.copy_(y)


def run_replays(graphs, seconds: float, sync: bool = True):
    """Replay `graphs` in turn for about `seconds` (host time). Returns the (graph index, start event, end
    event) of each replay; `sync` False leaves the last batch queued (a next call's replays follow it on
    the GPU with no gap)."""
    evs, t0 = [], time.perf_counter()
    per_batch = max(1, int(BATCH_S * 1e3 / max(0.05, sum(g.est_ms for g in graphs))))
    pending = None
    while time.perf_counter() - t0 < seconds:
        batch = []
        for _ in range(per_batch):
            for gi, g in enumerate(graphs):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record(); g.replay(); b.record()
                batch.append((gi, a, b))
        if pending is not None:
            pending.synchronize()
        pending = batch[-1][2]
        evs.extend(batch)
    if sync:
        torch.cuda.synchronize()
    return evs


def timed(evs, origin=None) -> list[tuple[int, float, float]]:
    """(graph index, start ms after `origin` (an event; default the first replay's start), duration ms)."""
    origin = origin or evs[0][1]
    return [(gi, origin.elapsed_time(a), a.elapsed_time(b)) for gi, a, b in evs]


def sampled(dev, fn):
    """fn() under the energy counter and a 100 Hz sampler: (fn's result, joules, seconds, timeline)."""
    from harness.meters.power_sampler import PowerSampler
    sampler = PowerSampler([dev], rate_hz=100.0)
    torch.cuda.synchronize()
    e0, t0 = dev.energy_j(), time.perf_counter()
    sampler.begin()
    out = fn()
    torch.cuda.synchronize()
    tl = sampler.end()
    e1, t1 = dev.energy_j(), time.perf_counter()
    return out, (e1 - e0) if e0 is not None and e1 is not None else None, t1 - t0, tl


def clock_figures(samples, max_hz):
    from harness.meters.clocks import REASONS
    clocks = [s.sm_clock_hz for s in samples if s.sm_clock_hz]
    reasons = [s.clock_reasons for s in samples if s.clock_reasons is not None]
    shares = {name: round(sum(1 for r in reasons if r & bit) / len(reasons), 3)
              for bit, name in REASONS.items() if reasons and any(r & bit for r in reasons)}
    med = statistics.median(clocks) if clocks else None
    return {"sm_clock_median_hz": med, "sm_clock_min_hz": min(clocks) if clocks else None,
            "clock_fraction": med / max_hz if med and max_hz else None, "reason_shares": shares,
            "power_median_w": statistics.median([s.power_w for s in samples if s.power_w]) if samples else None}


def load(dev, blk: Block, hold_s: float, max_hz):
    """One block replayed for hold_s: the second half's times, rates, power and clock."""
    evs, joules, secs, tl = sampled(dev, lambda: run_replays([blk.graph], hold_s))
    reps = timed(evs)
    total_ms = reps[-1][1] + reps[-1][2]
    late = [r for r in reps if r[1] >= total_ms / 2]
    us = statistics.median(r[2] for r in late) * 1e3 / blk.graph.reps
    samples = [s for s in tl.samples if s.t_s >= tl.duration_s() / 2]
    # the energy counter updates every ~100 ms: power over the second half from the instant-power samples,
    # checked against the counter's figure over the whole hold in the JSON
    out = {"load": blk.label, "kernel": blk.kernel, "M": blk.m, "call_us_full_clock": blk.call_us,
           "calls_per_replay": blk.graph.reps,
           "call_us_second_half": us, "slowdown": us / blk.call_us,
           "tflops": blk.flop / us / 1e6, "weight_GBps": blk.bytes / us / 1e3,
           "flop_per_call": blk.flop, "weight_bytes_per_call": blk.bytes,
           "power_mean_w": statistics.fmean(s.power_w for s in samples if s.power_w),
           "power_counter_whole_hold_w": joules / secs if joules is not None else None,
           "replay_ms": [[round(r[1], 2), round(r[2], 4)] for r in reps[:: max(1, len(reps) // 200)]],
           **clock_figures(samples, max_hz)}
    print(f"load {blk.label:22s} {us:8.1f} us/call (x{out['slowdown']:.3f} of full clock) "
          f"{out['tflops']:6.1f} TFLOP/s {out['weight_GBps']:6.0f} GB/s {out['power_mean_w']:5.0f} W "
          f"clock {(out['clock_fraction'] or 0):.2f} {out['reason_shares']}", flush=True)
    return out


def recovery(dev, heavy: Block, probe: Block, clock: ClockProbe, heavy_s: float, probe_s: float, max_hz):
    """Each probe replay's time after a held heavy load, against its time after an idle pause."""
    time.sleep(1.0)
    base = timed(run_replays([probe.graph, clock.graph], 0.2))
    ref = {gi: statistics.median(d for g, _, d in base if g == gi) for gi in (0, 1)}

    def both():
        h = run_replays([heavy.graph], heavy_s, sync=False)
        return h, run_replays([probe.graph, clock.graph], probe_s)
    (h, p), _, _, tl = sampled(dev, both)
    # the probe replays queue behind the heavy ones: their start times count from the last heavy one's end
    p = timed(p, origin=h[-1][2])
    pts = [{"t_ms": round(t, 3), "probe_ratio" if gi == 0 else "clock_ratio": round(d / ref[gi], 4)}
           for gi, t, d in p]
    series, cur = [], {}
    for q in pts:
        cur.update(q)
        if "probe_ratio" in cur and "clock_ratio" in cur:
            series.append(cur)
            cur = {}
    heavy_samples = [s for s in tl.samples if s.t_s <= heavy_s]
    out = {"heavy": heavy.label, "probe": probe.label, "probe_kernel": probe.kernel, "heavy_s": heavy_s,
           "probe_full_clock_ms": ref[0], "clock_probe_full_clock_ms": ref[1],
           "heavy_clock": clock_figures(heavy_samples[len(heavy_samples) // 2:], max_hz),
           "series": series,
           "sm_clock_after": [[round((s.t_s - heavy_s) * 1e3, 1), s.sm_clock_hz] for s in tl.samples
                              if s.t_s > heavy_s - 0.05]}
    firsts = ", ".join(f"{s['t_ms']:.0f} ms x{s['probe_ratio']:.2f}/x{s['clock_ratio']:.2f}"
                       for s in series[:: max(1, len(series) // 8)])
    print(f"recovery {probe.label} after {heavy.label} (clock {out['heavy_clock']['clock_fraction']}): {firsts}",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3.1-8b", help="preset whose block shapes the loads run")
    ap.add_argument("--loads", default="bf16:1,bf16:32,bf16:256,bf16:1024,bf16:2048,bf16:8192,"
                                       "int4 CUTLASS:32,int4 CUTLASS:1024,int4 tinygemm:1")
    ap.add_argument("--heavy", default="bf16:8192")
    ap.add_argument("--probes", default="bf16:1,bf16:32,int4 CUTLASS:32")
    ap.add_argument("--hold-s", type=float, default=2.5)
    ap.add_argument("--heavy-s", type=float, default=1.6)
    ap.add_argument("--probe-s", type=float, default=0.3)
    ap.add_argument("--idle-s", type=float, default=2.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from harness.meters.nvml import Nvml

    def spec(s):
        k, _, m = s.replace("_", " ").rpartition(":")   # "int4_CUTLASS:32": no spaces in a shell word
        if not k or not m.isdigit():
            ap.error(f"{s!r} is not kernel:M")
        return k.strip(), int(m)
    loads = [spec(s) for s in args.loads.split(",") if s.strip()]
    probes = [spec(s) for s in args.probes.split(",") if s.strip()]
    heavy = spec(args.heavy)
    torch.manual_seed(0)
    nv = Nvml()
    dev = nv.device_for_cuda(torch.cuda.current_device())
    max_hz, limit = dev.max_sm_clock_hz(), dev.power_limit_w()
    torch.cuda.synchronize()
    time.sleep(1.0)
    _, idle_j, idle_s, idle_tl = sampled(dev, lambda: time.sleep(args.idle_s))
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "model": args.model,
           "method": __doc__.split("\n\n")[2].strip(), "max_sm_clock_hz": max_hz, "power_limit_w": limit,
           "idle_w_counter": idle_j / idle_s if idle_j is not None else None,
           "idle": clock_figures(idle_tl.samples, max_hz), "loads": [], "recovery": [], "errors": []}
    print(f"{out['device']}: limit {limit} W, max SM clock {max_hz}, idle {out['idle_w_counter']} W", flush=True)
    blocks = {}

    def block(k, m):
        if (k, m) not in blocks:
            blocks[(k, m)] = Block(k, m, args.model)
        return blocks[(k, m)]
    for k, m in loads:
        try:
            time.sleep(1.0)
            out["loads"].append(load(dev, block(k, m), args.hold_s, max_hz))
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"load {k}:{m}: {type(e).__name__}: {str(e)[:300]}")
            print(out["errors"][-1], flush=True)
        if (k, m) not in probes and (k, m) != heavy:
            blocks.pop((k, m), None)
            torch.cuda.empty_cache()
    clock = ClockProbe()
    for k, m in probes:
        try:
            out["recovery"].append(recovery(dev, block(*heavy), block(k, m), clock, args.heavy_s, args.probe_s, max_hz))
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"recovery {k}:{m}: {type(e).__name__}: {str(e)[:300]}")
            print(out["errors"][-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
