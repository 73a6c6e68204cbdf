"""Power-capped clocks in a projection: a long, heavy prefill runs slower than the short kernel
microbenchmarks its curve comes from, and the decode steps right after it start slow while the clock
comes back.

The data (a power file, `harness calibrate --power-from`): bench/power_gpu.py on one board. `loads`: one
block's linears on one kernel at M rows, replayed back to back for seconds, each replay timed (CUDA
events); `recovery`: after a capped heavy load, a probe kernel's replays against its time after an idle
pause. Measured on the lab H100 (results/reference/h100/session9-20261208/power-8b.json, 700 W limit):
bf16 at M >= 256 and int4 CUTLASS at M = 1,024 reach the power cap about 50-100 ms into the load and
settle 8-14% slower than their first replays (SM clock 70-77% of 1,980 MHz); decode-sized loads (bf16 M =
1, 32; CUTLASS M = 32; tinygemm M = 1) stay within 2% of their first replays; after 1.6 s of bf16 M = 8,192,
CUTLASS at M = 32 runs 1.43x its idle-start time for about 65 ms, then 1.02-1.05x, 1.01x by 150 ms; bf16
M = 1 runs 1.05x, then 1.01x.

How a projection uses it (harness/plan/validate.py, a cell on a board of the power file's architecture
and power limit):

- prefill: the GEMM share of a prefill that takes T seconds at full clock is multiplied by the load's
  mean slowdown over its first T seconds (`Load.mean_slowdown`): the time the load took to do the work
  its first replays' speed does in T, over T. The load is that of the prefill's kernel family at the
  nearest measured M (log scale) on the nearest block size; beyond the load's window its steady (second
  half) slowdown continues.
- decode after it: the clock the prefill leaves is the load's depth at T (its instantaneous slowdown at T
  against its steady one, times its clock deficit 1/f - 1), as a share of the recovery run's heavy-load
  deficit; each decode step i starting tau_i after the prefill takes t x (1 + g x share x (r(tau_i) - 1)),
  r the probe's ratio at tau (the probe of the decode kernel's family at the nearest M), g the step's GEMM
  share. The pass's mean over new_tokens - 1 steps scales the decode time.

The reference speed of a load is its replays starting REF_WINDOW_MS after it began (before the controller
acts), not its single-call time: a one-call graph replay carries the launch's fixed cost. A kernel family
without a load or a probe gets no adjustment, and the projection says so. The file's board may differ
from the target (same architecture and power limit): the label says which board it came from.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness.plan.curves import CalibrationFileError
from harness.plan.kernel_names import family

FORMAT_VERSION = 1
KIND = "power"
REF_WINDOW_MS = (3.0, 30.0)     # replays starting in this window set a load's full-clock speed
CAPPED_SLOWDOWN = 1.02          # a load whose steady slowdown is below this did not reach the cap
MAX_M_RATIO = 8                 # a load or probe stands for M within this factor of its own
SATURATED_M = 1024              # ... and, from this M on, for every larger M (see PowerModel._nearest)
MIN_DEPTH = 0.02                # a clock deficit below this (98% of full clock) is replay noise, not a cap


def _block_params(preset: str) -> int | None:
    from harness.plan.kernel_log import block_shapes
    try:
        return sum(n * k for n, k in block_shapes(preset).values())
    except ValueError:
        return None


@dataclass
class Load:
    kernel: str
    m: int
    block: str
    series: list[tuple[float, float]]   # (replay start ms, replay ms)
    clock_fraction: float | None
    power_w: float | None = None

    @property
    def family(self) -> str:
        return family(self.kernel)

    @property
    def ref_ms(self) -> float:
        lo, hi = REF_WINDOW_MS
        early = [d for t, d in self.series if lo <= t <= hi] or [d for _, d in self.series[1:3]] or [self.series[0][1]]
        return statistics.median(early)

    @property
    def steady(self) -> float:
        """Replay time over the window's second half against the reference."""
        end = self.series[-1][0]
        return statistics.median(d for t, d in self.series if t >= end / 2) / self.ref_ms

    def slowdown_at(self, t_s: float) -> float:
        """The replay time at t_s into the load against the reference (the steady one beyond the window)."""
        t = t_s * 1e3
        if t > self.series[-1][0]:
            return self.steady
        return min(self.series, key=lambda p: abs(p[0] - t))[1] / self.ref_ms

    def mean_slowdown(self, t_full_s: float) -> float:
        """Time to do the work the reference speed does in t_full_s, over t_full_s."""
        if t_full_s <= 0:
            return 1.0
        ref, want = self.ref_ms, t_full_s * 1e3
        work = 0.0      # full-clock milliseconds done
        # before the reference window the load runs at the reference speed (its first replay carries the
        # graph's first-launch cost, not the clock)
        series = [(0.0, ref)] + [p for p in self.series if p[0] >= REF_WINDOW_MS[0]]
        for (t0, d0), (t1, _) in zip(series, series[1:]):
            step = (t1 - t0) * ref / d0
            if work + step >= want:
                return (t0 + (want - work) * d0 / ref) / want
            work += step
        t_end = series[-1][0]
        return (t_end + (want - work) * self.steady) / want if want > work else t_end / want

    def depth(self, t_s: float) -> float:
        """The clock deficit (1/f - 1) the load has reached t_s into it: its steady deficit, scaled by how
        far its slowdown at t_s has come towards its steady one."""
        if self.clock_fraction is None or self.steady < CAPPED_SLOWDOWN:
            return 0.0
        along = (self.slowdown_at(t_s) - 1) / (self.steady - 1)
        return max(0.0, min(1.0, along)) * (1 / self.clock_fraction - 1)


@dataclass
class Recovery:
    kernel: str
    m: int
    block: str
    heavy: str
    heavy_clock_fraction: float
    series: list[tuple[float, float, float]]   # (ms after the heavy load, probe ratio, clock-probe ratio)

    @property
    def family(self) -> str:
        return family(self.kernel)

    @property
    def heavy_depth(self) -> float:
        return 1 / self.heavy_clock_fraction - 1

    def excess(self, tau_ms: float) -> float:
        """The probe's time above its idle-start time at tau_ms after the heavy load (0 beyond the series)."""
        if tau_ms > self.series[-1][0]:
            return 0.0
        return max(0.0, min(self.series, key=lambda p: abs(p[0] - tau_ms))[1] - 1)

    @property
    def sensitivity(self) -> float | None:
        """The probe's time excess per unit of the clock probe's (least squares through the origin)."""
        pts = [(r - 1, c - 1) for _, r, c in self.series if c > 1.02]
        den = sum(c * c for _, c in pts)
        return sum(r * c for r, c in pts) / den if den else None


@dataclass
class PowerModel:
    profile: str
    arch: str
    power_limit_w: float
    board: str
    loads: list[Load]
    recoveries: list[Recovery]
    provenance: dict = field(default_factory=dict)
    path: str = ""

    def label(self, target_id: str) -> str:
        where = "measured on" if target_id == self.profile else "from"
        return f"power loads {where} {self.profile} ({self.board}, {self.power_limit_w:g} W)"

    def applies_to(self, target) -> str | None:
        """None where the model applies to `target` (a Profile), else why not."""
        if (target.compute_capability or "") != self.arch:
            return f"power file of arch {self.arch}, target {target.id} is arch {target.compute_capability}"
        if not target.power_w or abs(target.power_w - self.power_limit_w) > 0.05 * self.power_limit_w:
            return (f"power file of a {self.power_limit_w:g} W board, target {target.id} "
                    f"{target.power_w or 'unknown'} W")
        return None

    def _nearest(self, items, kernel: str, m: int, block_params: int | None):
        """The item of the kernel's family nearest in block size, then in M; only within MAX_M_RATIO of M,
        or, above the largest M measured from SATURATED_M on, that one (the H100's bf16 loads settle alike
        at M = 1,024, 2,048 and 8,192: the cap is saturated there)."""
        fam = family(kernel)
        same = [x for x in items if x.family == fam
                and (x.m / MAX_M_RATIO <= m <= x.m * MAX_M_RATIO or SATURATED_M <= x.m <= m)]
        if not same:
            return None

        def key(x):
            bp = _block_params(x.block)
            blk = abs(math.log(bp / block_params)) if bp and block_params else 0.0
            return (round(blk, 3), abs(math.log(max(1, x.m) / max(1, m))))
        return min(same, key=key)

    def load_for(self, kernel: str, m: int, block_params: int | None = None) -> Load | None:
        return self._nearest(self.loads, kernel, m, block_params)

    def recovery_for(self, kernel: str, m: int, block_params: int | None = None) -> Recovery | None:
        return self._nearest(self.recoveries, kernel, m, block_params)

    def prefill_factor(self, kernel: str, m: int, t_full_s: float, gemm_share: float | None,
                       block_params: int | None = None) -> tuple[float, str]:
        """(time factor of a prefill of T = t_full_s seconds at full clock, what it came from)."""
        ld = self.load_for(kernel, m, block_params)
        if ld is None:
            return 1.0, f"no power load of {family(kernel)} kernels near M={m:,}: prefill at full clock"
        s = ld.mean_slowdown(t_full_s)
        g = 1.0 if gemm_share is None else gemm_share
        f = 1 + g * (s - 1)
        return f, (f"prefill x{f:.3f} (load {ld.kernel.split(' (')[0]} M={ld.m} on the {ld.block} block: "
                   f"x{s:.3f} over its first {t_full_s * 1e3:.0f} ms, on {g:.0%} of the time)")

    def decode_factor(self, prefill_kernel: str, prefill_m: int, prefill_s: float, kernel: str, batch: int,
                      step_s: float, steps: int, gemm_share: float | None,
                      block_params: int | None = None) -> tuple[float, str]:
        """(time factor of a pass's decode steps after its prefill, what it came from)."""
        ld = self.load_for(prefill_kernel, prefill_m, block_params)
        if ld is None:
            return 1.0, f"no power load of {family(prefill_kernel)} kernels near M={prefill_m:,}: decode at full clock"
        depth = ld.depth(prefill_s)
        if depth < MIN_DEPTH:
            return 1.0, f"prefill below the power cap (load {ld.kernel.split(' (')[0]} M={ld.m}): decode at full clock"
        rec = self.recovery_for(kernel, batch, block_params)
        if rec is None:
            return 1.0, (f"no recovery probe of {family(kernel)} kernels near M={batch}: decode after a capped "
                         f"prefill at full clock")
        share = depth / rec.heavy_depth
        g = 1.0 if gemm_share is None else gemm_share
        t, total = 0.0, 0.0
        for _ in range(max(1, steps)):
            dt = step_s * (1 + g * share * rec.excess(t * 1e3))
            total += dt
            t += dt
        f = total / (max(1, steps) * step_s)
        return f, (f"decode x{f:.3f} after a capped prefill (clock deficit {depth:.2f}, {share:.2f} of the "
                   f"probe's; probe {rec.kernel.split(' (')[0]} M={rec.m}, {g:.0%} GEMM)")


def _load_of(d: dict, block: str) -> Load:
    return Load(d["kernel"], int(d["M"]), d.get("block", block), [(float(t), float(x)) for t, x in d["series"]],
                d.get("clock_fraction"), d.get("power_w"))


def _recovery_of(d: dict, block: str) -> Recovery:
    return Recovery(d["kernel"], int(d["M"]), d.get("block", block), d["heavy"], float(d["heavy_clock_fraction"]),
                    [(float(a), float(b), float(c)) for a, b, c in d["series"]])


def from_bench(benches: list[tuple[dict, str]], profile, commit: str = "") -> dict:
    """A power file's JSON from bench/power_gpu.py outputs ((JSON, its path) each, pooled) on the board of
    `profile`."""
    loads, recs, boards, limits = [], [], set(), set()
    for b, src in benches:
        boards.add(b["device"])
        limits.add(b.get("power_limit_w"))
        for ld in b.get("loads", []):
            loads.append({"kernel": ld["kernel"], "M": ld["M"], "block": b["model"],
                          "series": ld["replay_ms"], "clock_fraction": ld.get("clock_fraction"),
                          "power_w": ld.get("power_mean_w"), "source": src})
        for r in b.get("recovery", []):
            heavy = r["heavy_clock"].get("clock_fraction")
            if not heavy or heavy >= 1:
                continue
            recs.append({"kernel": r["probe_kernel"], "M": int(r["probe"].rpartition(":")[2]), "block": b["model"],
                         "heavy": r["heavy"], "heavy_clock_fraction": heavy,
                         "series": [[s["t_ms"], s["probe_ratio"], s["clock_ratio"]] for s in r["series"]],
                         "source": src})
    if len(limits) != 1 or None in limits:
        raise ValueError(f"power bench files disagree on (or lack) the power limit: {sorted(map(str, limits))}")
    if not profile.compute_capability:
        raise ValueError(f"profile {profile.id} has no compute capability")
    from datetime import datetime, timezone
    return {"format": FORMAT_VERSION, "kind": KIND,
            "device": {"profile": profile.id, "arch": profile.compute_capability, "power_limit_w": limits.pop(),
                       "board": ", ".join(sorted(boards))},
            "provenance": {"sources": [src for _, src in benches], "harness_commit": commit,
                           "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "method": "bench/power_gpu.py (harness/plan/power.py module doc)"},
            "loads": loads, "recovery": recs}


def write_power_file(paths, profile, out: Path, commit: str = "") -> Path:
    """The power file of bench/power_gpu.py outputs `paths` (pooled) on the board of `profile`, written to
    `out`. Raises ValueError naming the file that is not such output."""
    benches = []
    for p in map(Path, paths):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None
        if not isinstance(d, dict) or "loads" not in d:
            raise ValueError(f"{p}: no 'loads' (not bench/power_gpu.py output)")
        benches.append((d, str(p)))
    try:
        text = json.dumps(from_bench(benches, profile, commit), indent=1) + "\n"
    except KeyError as e:
        raise ValueError(f"bench/power_gpu.py output without {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def load_power(path: str | Path) -> PowerModel:
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("kind") != KIND or d.get("format") != FORMAT_VERSION:
            raise CalibrationFileError(f"{path}: not a power file (kind {d.get('kind')!r}, format {d.get('format')!r})")
        dev = d["device"]
        loads = [_load_of(x, "") for x in d["loads"]]
        recs = [_recovery_of(x, "") for x in d["recovery"]]
        if any(not ld.series for ld in loads) or any(not r.series for r in recs):
            raise CalibrationFileError(f"{path}: a load or recovery without a series")
        return PowerModel(dev["profile"], str(dev["arch"]), float(dev["power_limit_w"]), dev.get("board", ""),
                          loads, recs, d.get("provenance", {}), str(path))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, CalibrationFileError):
            raise
        raise CalibrationFileError(f"{path}: not a power file ({type(e).__name__}: {e})") from None


def power_for(models: list[PowerModel], target) -> tuple[PowerModel | None, str]:
    """The power model for `target`: its own board's where given, else one of its architecture and limit."""
    fits = [m for m in models if m.applies_to(target) is None]
    if not fits:
        why = "; ".join(m.applies_to(target) for m in models) or "no power file given"
        return None, why
    own = [m for m in fits if m.profile == target.id]
    return (own or fits)[0], ""


def power_scaled(got, models, target, factor):
    """Projection `got` (harness.plan.transfer.Projection) at the power-capped clock: `factor(model)` ->
    (time factor, note) from the power model that applies to `target`. Unchanged without power files or a
    projection; a curve fitted on end-to-end records (no GEMM share) already holds its cells' clock. From
    another board the fast end stays at full clock: whether the target reaches its cap is not measured."""
    from dataclasses import replace
    if not models or not got.ok:
        return got
    if got.gemm_share is None:
        return replace(got, source=f"{got.source}; no power adjustment (a curve from end-to-end records)")
    pm, why = power_for(list(models), target)
    if pm is None:
        return replace(got, source=f"{got.source}; no power model ({why})")
    f, note = factor(pm)
    high = got.high / f if pm.profile == target.id else got.high
    return replace(got, tok_s=got.tok_s / f, low=got.low / f, high=max(high, got.tok_s / f),
                   source=f"{got.source}; {pm.label(target.id)}: {note}")
