"""Kernel efficiency curves: a calibration file per device, fitted from measured Records.

The decode model, per (variant, kernel) and tokens per step M (decode: M = batch):

    step_s = (weight_bytes + kv_bytes) / copy_bw  +  other(M) x weight_bytes / copy_bw

The first term is the memory traffic at the device's measured copy bandwidth (bytes read + written of a
device-to-device copy, measured in the same run: harness/meters); the KV cache is read whole each step
(the engine's static cache). `other(M)` is the time the step spends beyond that traffic (dequantizing,
launches, norms, attention's non-memory work), as a share of the weight-read time: a dimensionless
ratio, so it carries over to models of other sizes. It is the per-step fixed cost, fitted from the
end-to-end records; it does not shrink with more bandwidth (same chip: same SMs and clocks), so on
another device it is scaled by the ratio of the compute peaks only.

Prefill, per (variant, kernel) and M = batch x prompt: the same model with the prefill's bytes (weights
once + the KV cache written for the prompts); there other(M) is mostly the compute time, which on
another device scales with the compute peak the same way.

Between measured M a curve follows the roofline through its two neighbouring points (Curve.at); outside the measured range there is no
curve (the planner says so rather than extrapolate). File format (JSON), `FORMAT_VERSION`:

    {"format": 1, "device": {"profile", "arch", "datasheet_bandwidth_bytes_per_s", "copy_fraction",
     "bf16_peak_flops"}, "provenance": {"sources": [...], "harness_commit", "created_utc", "method"},
     "curves": [{"variant", "kernel", "phase": "decode"|"prefill", "source": "records"|"microbench",
                 "points": [{"m", "value", "low", "high", "n"}]}]}

value/low/high: other(M), median, min and max over the records at that M. Phase "kernel": one linear
layer from `harness import-microbench` records (M = its rows); a variant with a kernel curve and no
decode curve gets one derived: its kernel other(M) + the baseline's non-GEMM share (baseline decode
other(M) - baseline kernel other(M)). A file built from kernel timings alone (`harness calibrate
--from-kernels`, harness/plan/kernel_log.py) has no decode records; it carries a "step_cost" entry instead
(harness/plan/step_cost.py: non-GEMM seconds per decode step, or an explicit none) and its decode curve is
the kernel curve on the model's GEMM bytes plus that cost (harness/plan/transfer.py). Without either, a
kernel curve gives no decode projection.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from harness.plan.kernel_names import KERNEL_MARKS, curve_is_kernel, kernel_id
from harness.profiles.schema import Profile
from harness.records import Record, primary, record_prefill_path, slow_path

FORMAT_VERSION = 1
# phase of the curves of GemLite's dequantized prefill path (bench/kernels_gpu.py "dequantized prefill: ..."
# kernels: a GemLite linear called on more rows than GEMLITE_PREFILL_MIN_ROWS unpacks to bf16 and runs cuBLAS,
# harness/variants/gemlite.py), kept apart from the variant's own kernel curve, which decode uses
DEQUANT_PHASE = "kernel-dequant"
# kernel: one linear layer (harness import-microbench records)
PHASES = ("decode", "prefill", "kernel", DEQUANT_PHASE)
MICROBENCH = "microbench"
KERNEL_PLUS_STEP = "microbench kernel + non-GEMM step cost"   # decode curve derived from a kernel curve alone
KERNEL_PLUS_PREFILL = "microbench kernel + non-GEMM prefill cost"   # prefill curve derived from a kernel curve alone


class CalibrationFileError(ValueError):
    pass


@dataclass(frozen=True)
class Point:
    m: int
    value: float
    low: float
    high: float
    n: int


@dataclass
class Curve:
    variant: str
    kernel: str
    phase: str
    source: str
    points: list[Point]
    shapes: str = ""     # phase kernel: the preset whose block's linear shapes were timed (harness/plan/kernel_log.py)
    # phase prefill from records: the prefill the records ran ("eager" | "compiled", CudaGraphEngine.choose_prefill;
    # "" where the backend has no such choice or the file predates the field)
    prefill_path: str = ""

    def at(self, m: float) -> tuple[float, float, float] | None:
        """(value, low, high) at M; None outside the measured range. Between two measured M, a < M < b,
        the step's time over its memory time (1 + other) follows the roofline through both ends:
        max(that of a, that of b x M / b) -- flat while memory-bound, in proportion to M once
        compute-bound -- the shape of a GEMM's time in its rows, which an interpolation in log M would
        miss across a wide gap (bf16 at the 8B shapes: 1.1x its memory time at M = 32, 10x at 2048,
        and still 1.2x at 128)."""
        pts = sorted(self.points, key=lambda p: p.m)
        if not pts or m < pts[0].m or m > pts[-1].m:
            return None
        if (hit := next((p for p in pts if p.m == m), None)) is not None:   # a measured M is its own point, even
            return hit.value, hit.low, hit.high                             # where a smaller M was slower
        for a, b in zip(pts, pts[1:]):   # m lies strictly between two measured M here
            if a.m < m < b.m:
                mix = lambda x, y: max(1 + x, (1 + y) * m / b.m) - 1   # noqa: E731
                return mix(a.value, b.value), mix(a.low, b.low), mix(a.high, b.high)
        return None

    @property
    def block_params(self) -> int | None:
        """Linear-layer parameters of the block its kernel timings were taken at (phase kernel), or None."""
        from harness.models.presets import PRESETS
        return PRESETS[self.shapes].block_linear_params() if self.shapes in PRESETS else None

    @property
    def m_range(self) -> tuple[int, int]:
        ms = [p.m for p in self.points]
        return min(ms), max(ms)


@dataclass
class DeviceCalibration:
    profile: str
    arch: str                              # compute capability, e.g. "9.0"
    datasheet_bandwidth_bytes_per_s: float
    copy_fraction: float                   # measured copy bandwidth / datasheet bandwidth
    bf16_peak_flops: float | None
    curves: list[Curve] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    path: str = ""
    step_cost: dict | None = None          # non-GEMM seconds per decode step (harness/plan/step_cost.py)
    # non-GEMM seconds of a prefill, by tokens (step_cost.fit_prefill): one entry per prefill path profiled
    # (eager, compiled: the engine chooses the faster by measurement, CudaGraphEngine.choose_prefill)
    prefill_costs: list[dict] = field(default_factory=list)

    def curves_for(self, variant: str, phase: str) -> list[Curve]:
        found = self._own_curves(variant, phase)
        if not found and "[" in variant:
            found = self.same_kernel_curves(variant, phase)
        return found

    def _own_curves(self, variant: str, phase: str) -> list[Curve]:
        found = [c for c in self.curves if c.variant == variant and c.phase == phase]
        if not found and phase == "decode":
            derived = self.derived_decode(variant) or self.kernel_decode(variant)
            found = [derived] if derived else []
        if not found and phase == "prefill":
            derived = self.kernel_prefill(variant)
            found = [derived] if derived else []
        return found

    def same_kernel_curves(self, variant: str, phase: str) -> list[Curve]:
        """An explicit kernel (`int4-wo[tinygemm]`) without curves of its own: its format's curves where
        the kernel that ran them is that kernel (the records of `int4-wo` name tinygemm's packing), so a
        device calibrated before the kernel axis existed still projects the explicit name."""
        fmt, _, rest = variant.partition("[")
        return [Curve(variant, c.kernel, c.phase, f"{c.source}; the {fmt} curve, whose kernel is this one", c.points,
                      c.shapes, c.prefill_path)
                for c in self._own_curves(fmt, phase) if curve_is_kernel(c, rest.rstrip("]"))]

    def kernel_decode(self, variant: str) -> Curve | None:
        """Where the file states a non-GEMM step cost (even 0): the variant's kernel curve as its decode
        curve; harness/plan/transfer.py then applies it to the GEMM bytes only and adds the step cost (a
        kernel timed at several block sizes: `sized_kernel_at` takes the projected model's)."""
        kv = [c for c in self.curves if c.variant == variant and c.phase == "kernel"]
        if self.step_cost is None or not kv:
            return None
        return Curve(variant, kv[0].kernel, "decode", KERNEL_PLUS_STEP, kv[0].points)

    def kernel_prefill(self, variant: str) -> Curve | None:
        """Where the file has a prefill cost: the variant's kernel curve as its prefill curve (transfer.py
        adds the non-GEMM prefill cost). GemLite's kernels only up to GEMLITE_PREFILL_MIN_ROWS tokens: a
        larger prefill dequantizes the weights and calls cuBLAS (harness/variants/gemlite.py), projected
        from the curve of that path (phase DEQUANT_PHASE) where the file has one, else not at all."""
        from harness.variants.catalog import GEMLITE_PREFILL_MIN_ROWS

        kv = [c for c in self.curves if c.variant == variant and c.phase == "kernel"]
        if not self.prefill_costs or not kv:
            return None
        pts = kv[0].points
        if curve_is_kernel(kv[0], "gemlite"):
            above = {p.m: p for c in self.curves if c.variant == variant and c.phase == DEQUANT_PHASE
                     for p in c.points if p.m > GEMLITE_PREFILL_MIN_ROWS}
            pts = [p for p in pts if p.m <= GEMLITE_PREFILL_MIN_ROWS] + [above[m] for m in sorted(above)]
        return Curve(variant, kv[0].kernel, "prefill", KERNEL_PLUS_PREFILL, pts) if pts else None

    def sized_kernel_at(self, variant: str, kernel: str, m: float,
                        block_params: float | None) -> tuple[tuple[float, float, float], str] | None:
        """other(M) of `variant`'s kernel curves for a model whose block has `block_params` linear-layer
        parameters: one curve (or no size given) as it is; curves timed at several presets' blocks linear
        in log block parameters between the two that bracket it, the nearest one's beyond them (and the
        label says so). Returns ((value, low, high), which blocks), or None where no curve of that kernel
        covers M. A GemLite kernel above GEMLITE_PREFILL_MIN_ROWS rows runs its dequantized path: that
        path's curves (phase DEQUANT_PHASE) there."""
        from harness.variants.catalog import GEMLITE_PREFILL_MIN_ROWS

        if m > GEMLITE_PREFILL_MIN_ROWS and any(mark in kernel for mark in KERNEL_MARKS["gemlite"]):
            cs = [c for c in self.curves if c.variant == variant and c.phase == DEQUANT_PHASE and c.at(m) is not None]
            got = self._sized(cs, m, block_params)
            return None if got is None else (got[0], ", ".join(x for x in (got[1], "dequantized to bf16 + cuBLAS "
                                                                       f"above {GEMLITE_PREFILL_MIN_ROWS} rows") if x))
        cs = [c for c in self.curves if c.variant == variant and c.phase == "kernel" and c.kernel == kernel
              and c.at(m) is not None]
        return self._sized(cs, m, block_params)

    @staticmethod
    def _sized(cs: list[Curve], m: float, block_params: float | None) -> tuple[tuple[float, float, float], str] | None:
        """sized_kernel_at over the curves `cs` of one kernel that cover M."""
        if not cs:
            return None
        sized = sorted((c for c in cs if c.block_params), key=lambda c: c.block_params)
        if not sized or not block_params:
            c = max(cs, key=lambda c: len(c.points))
            return c.at(m), (f"{c.shapes} block" if c.shapes else "")
        x = math.log(block_params)
        lo_c = max((c for c in sized if math.log(c.block_params) <= x), default=sized[0], key=lambda c: c.block_params)
        hi_c = min((c for c in sized if math.log(c.block_params) >= x), default=sized[-1], key=lambda c: c.block_params)
        if lo_c is hi_c:
            near = abs(math.log(lo_c.block_params) - x) > 0.05
            return lo_c.at(m), f"{lo_c.shapes} block" + (", the nearest timed" if near else "")
        t = (x - math.log(lo_c.block_params)) / (math.log(hi_c.block_params) - math.log(lo_c.block_params))
        a, b = lo_c.at(m), hi_c.at(m)
        return (tuple(u + t * (v - u) for u, v in zip(a, b)),
                f"between the {lo_c.shapes} and {hi_c.shapes} blocks ({t:.2f} of the way in log block parameters)")

    def derived_decode(self, variant: str) -> Curve | None:
        """A decode curve for a variant measured only as a kernel: its kernel other(M) plus the non-GEMM
        share of the baseline (baseline end-to-end other(M) - baseline kernel other(M)) at the same M."""
        kv = [c for c in self.curves if c.variant == variant and c.phase == "kernel"]
        kb = [c for c in self.curves if c.variant == "baseline" and c.phase == "kernel"]
        db = [c for c in self.curves if c.variant == "baseline" and c.phase == "decode"]
        if not (kv and kb and db):
            return None
        pts = []
        for p in kv[0].points:
            b, e = kb[0].at(p.m), db[0].at(p.m)
            if b is not None and e is not None:
                pts.append(Point(p.m, p.value + e[0] - b[0], p.low + e[1] - b[0], p.high + e[2] - b[0], p.n))
        return Curve(variant, kv[0].kernel, "decode", "microbench kernel + baseline non-GEMM from records", pts) if pts else None

    def to_json(self) -> str:
        dev = {k: getattr(self, k) for k in ("profile", "arch", "datasheet_bandwidth_bytes_per_s",
                                               "copy_fraction", "bf16_peak_flops")}
        extra = {} if self.step_cost is None else {"step_cost": self.step_cost}
        extra.update({"prefill_costs": self.prefill_costs} if self.prefill_costs else {})
        return json.dumps({"format": FORMAT_VERSION, "device": dev, "provenance": self.provenance, **extra,
                           "curves": [asdict(c) for c in self.curves]}, indent=1) + "\n"


def _prefill_costs(d: dict) -> list[dict]:
    """The file's prefill costs; files written before 2026-12-03 evening hold one, as "prefill_cost"."""
    if "prefill_costs" in d:
        return list(d["prefill_costs"])
    return [d["prefill_cost"]] if d.get("prefill_cost") else []


def load_calibration(path: str | Path) -> DeviceCalibration:
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT_VERSION:
            raise CalibrationFileError(f"{path}: format {d.get('format')!r}, expected {FORMAT_VERSION}")
        dev = d["device"]
        curves = [Curve(c["variant"], c["kernel"], c["phase"], c.get("source", "records"),
                        [Point(**p) for p in c["points"]], c.get("shapes") or "", c.get("prefill_path") or "")
                  for c in d["curves"]]
        for c in curves:
            if c.phase not in PHASES or not c.points:
                raise CalibrationFileError(f"{path}: curve {c.variant}/{c.phase}: bad phase or no points")
        return DeviceCalibration(dev["profile"], str(dev["arch"]), float(dev["datasheet_bandwidth_bytes_per_s"]),
                                 float(dev["copy_fraction"]), dev.get("bf16_peak_flops"), curves,
                                 d.get("provenance", {}), str(path), d.get("step_cost"), _prefill_costs(d))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CalibrationFileError(f"{path}: not a calibration file ({type(e).__name__}: {e})") from None


def record_copy(r: Record, fallback: float | None = None) -> float | None:
    """The copy bandwidth measured in the record's run, else `fallback` (measured by `harness calibrate`)."""
    return (r.bandwidth.copy_bandwidth_bytes_per_s if r.bandwidth else None) or fallback


def other_of(r: Record, phase: str, copy_fallback: float | None = None) -> float | None:
    """other(M) of one record's decode or prefill (see the module doc), or None where a figure is missing.
    The record's KV bytes are the static cache (prompt + new tokens); prefill writes the prompt's share."""
    copy = record_copy(r, copy_fallback)
    rate = r.decode_tok_s if phase == "decode" else r.prefill_tok_s
    if not (rate and copy and r.weight_bytes):
        return None
    kv = r.kv_cache_bytes or 0
    if phase == "decode":
        step_s = r.batch_size / rate
    else:
        step_s = r.batch_size * r.prompt_tokens / rate
        kv = kv * r.prompt_tokens / max(1, r.prompt_tokens + r.new_tokens)
    mem_s = (r.weight_bytes + kv) / copy
    return max(0.0, step_s - mem_s) / (r.weight_bytes / copy)


def _points(values: dict[int, list[float]]) -> list[Point]:
    return [Point(m, statistics.median(v), min(v), max(v), len(v)) for m, v in sorted(values.items())]


def fit_device(records: Iterable[Record], profile: Profile, *, backend: str = "pytorch",
               sources: list[str] | None = None, commit: str = "",
               copy_fallback: float | None = None) -> tuple[DeviceCalibration, list[str]]:
    """Curves of one device's ok records; returns the calibration and why records were skipped."""
    skipped: list[str] = []
    curves_at: dict[tuple[str, str, str], dict[int, list[float]]] = {}   # (phase, variant, kernel) -> M -> other
    records = primary(records)
    mine = [r for r in records if r.status == "ok" and r.profile == profile.id
            and r.backend in (backend, MICROBENCH)]
    mine_ids = {id(r) for r in mine}
    copies = [c for r in mine if r.backend == backend and (c := record_copy(r, copy_fallback))]
    device_copy = copy_fallback or (statistics.median(copies) if copies else None)
    for r in records:
        where = f"{r.model} / {r.variant} / batch {r.batch_size} / prompt {r.prompt_tokens}"
        if id(r) not in mine_ids:
            skipped.append(f"{where}: status {r.status}, backend {r.backend}, profile {r.profile}")
            continue
        if slow_path(r):
            skipped.append(f"{where}: decode path {slow_path(r)} (a fallback, not the compiled CUDA graph)")
            continue
        key = (r.variant, kernel_id(r.kernel))
        kernel = r.backend == MICROBENCH     # one layer call: M = its rows, no KV (the run's copy bandwidth stands in)
        other = other_of(r, "decode", device_copy if kernel else copy_fallback)
        if other is None:
            skipped.append(f"{where}: no decode figure, weight bytes or copy bandwidth")
        else:
            curves_at.setdefault(("kernel" if kernel else "decode",) + key, {}).setdefault(r.batch_size, []).append(other)
        pre_other = None if kernel else other_of(r, "prefill", copy_fallback)
        if pre_other is not None:
            # one prefill curve per path the engine ran: the compiled prefill is another program than the eager one
            path = record_prefill_path(r) or ""
            curves_at.setdefault(("prefill",) + key + (path,), {}).setdefault(
                r.batch_size * r.prompt_tokens, []).append(pre_other)
    if not copies:
        raise CalibrationFileError(f"no usable {backend} records of {profile.id} (need decode, weight bytes, copy bandwidth)")
    curves = [Curve(v, k, ph, MICROBENCH if ph == "kernel" else "records", _points(ms), "", path[0] if path else "")
              for (ph, v, k, *path), ms in curves_at.items()]
    prov = {"sources": sources or [], "harness_commit": commit, "backend": backend,
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "method": "other(M) = (step time - (weights + KV) / copy bandwidth) / (weights / copy bandwidth), "
                      "decode M = batch, prefill M = batch x prompt; median, min, max per M"}
    copy = device_copy
    datasheet = profile.bandwidth_bytes_per_s
    if not datasheet:   # a detected CPU profile publishes none: the measured copy stands in (fraction 1)
        datasheet = copy
        prov["note"] = "profile publishes no bandwidth: datasheet_bandwidth is the measured copy bandwidth"
    cal = DeviceCalibration(profile.id, profile.compute_capability or profile.id, datasheet,
                            copy / datasheet, profile.peak("bf16"), curves, prov)
    return cal, skipped


def by_profile(records: Iterable[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r.profile, []).append(r)
    return out


def fit_all(records: Iterable[Record], profiles: Mapping[str, Profile], **kw) -> tuple[list[DeviceCalibration], list[str]]:
    """One calibration per profile present among the records (profiles not loaded are skipped)."""
    cals, skipped = [], []
    for pid, recs in by_profile(records).items():
        if pid not in profiles:
            skipped.append(f"{len(recs)} records of profile {pid!r}: not among the loaded profiles")
            continue
        try:
            cal, s = fit_device(recs, profiles[pid], **kw)
        except CalibrationFileError as e:
            skipped.append(str(e))
            continue
        cals.append(cal)
        skipped += s
    return cals, skipped
