"""Projection through calibration curves onto a device, with an interval and the curve's origin.

Transfer (harness/plan/curves.py has the model): a curve measured on device S projects onto device T of
the same architecture (equal compute capability) as

    step_s = (weights + KV) / copy_T  +  other(M) x weights / copy_S x peak_S / peak_T
    copy_T = datasheet bandwidth_T x copy_fraction_S   (T's copy bandwidth is not known before it is owned)

for decode (M = batch; KV = the cache read) and prefill (M = batch x prompt; KV = the cache written).

The interval: its fast end takes the smallest other(M) among the records at that M and the whole memory
term at T's bandwidth; its slow end the largest other(M) with the memory term at S's bandwidth (the
extra bandwidth buys nothing: a kernel limited by latency or instruction issue, such as int4 tinygemm
at M=1, runs as on S). From one device it cannot be told how much of a step scales with bandwidth, so
the interval spans both. Both ends are widened by the calibration's `transfer_error` when T is not S
(a stated prior for board-to-board differences, not fitted on T). A device of another architecture,
or an M outside the measured range, gets no projection and a note saying which curve is missing.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from harness.plan.curves import KERNEL_PLUS_PREFILL, KERNEL_PLUS_STEP, Curve, DeviceCalibration
from harness.profiles.schema import Profile

DEFAULT_TRANSFER_ERROR = 0.10   # used where a calibration file states none; see the module doc


@dataclass(frozen=True)
class Projection:
    tok_s: float | None
    low: float | None
    high: float | None
    source: str          # "curves from <profile> (<kernel>, <records|microbench>)" or the reason there is none
    kernel: str = ""     # the kernel of the curve that projected it
    gemm_share: float | None = None   # the GEMM term's share of the projected time, where the curve separates it

    @property
    def ok(self) -> bool:
        return self.tok_s is not None

    def contains(self, x: float) -> bool:
        return self.ok and self.low <= x <= self.high


def _other(cal: DeviceCalibration, cv: Curve, m: float, block_params: int | None) -> tuple[tuple, str]:
    """((other, low, high) at M, which blocks): a kernel-plus-step curve through the kernel's curves at
    the projected model's block size (DeviceCalibration.sized_kernel_at), any other curve as it is."""
    if cv.source in (KERNEL_PLUS_STEP, KERNEL_PLUS_PREFILL):
        got = cal.sized_kernel_at(cv.variant, cv.kernel, m, block_params)
        if got is not None:
            return got
    return cv.at(m), ""


def _pick(cals: list[DeviceCalibration], target: Profile, variant: str, phase: str,
          m: float, kernel: str | None = None, block_params: int | None = None,
          prefill_path: str | None = None) -> tuple[DeviceCalibration, Curve] | str:
    """The curve that projects `variant` at M. A format that chooses its kernel per batch (int4-wo) is
    projected with the curve of the kernel that ran where that is known (`kernel`: a record's kernel
    string, for validation), else with the fastest of its kernels' curves at M, as the runner chooses."""
    from harness.plan.kernel_names import curve_is_kernel, kernel_named
    from harness.variants import explicit_kernels

    arch = target.compute_capability or "unknown"
    same_arch = [c for c in cals if c.arch == arch]
    if not same_arch:
        have = ", ".join(sorted({f"{c.profile} (arch {c.arch})" for c in cals})) or "none"
        return f"no curve for {variant} on arch {arch} (calibrations: {have})"
    own = [c for c in same_arch if c.profile == target.id]
    explicit = explicit_kernels(variant)
    names = [variant] + explicit
    found = [(c, cv) for c in (own or same_arch) for n in names for cv in c.curves_for(n, phase)]
    ran = kernel_named(kernel) if explicit else None
    if ran is not None:
        found = [(c, cv) for c, cv in found if curve_is_kernel(cv, ran)]
    if not found:
        which = f" with the kernel that ran ({ran})" if ran else ""
        return f"no {phase} curve for {variant}{which} on arch {arch}"
    if prefill_path:
        # a prefill curve fitted on records holds the prefill path its records ran; another path is another
        # program (the compiled prefill against the eager one), so it has no curve there
        other = sorted({cv.prefill_path for _, cv in found if cv.prefill_path and cv.prefill_path != prefill_path})
        found = [(c, cv) for c, cv in found if not cv.prefill_path or cv.prefill_path == prefill_path]
        if not found:
            return (f"no {prefill_path}-prefill curve for {variant} on arch {arch} (its records ran "
                    f"{'/'.join(other)} prefills)")
    inside = [(c, cv) for c, cv in found if cv.at(m) is not None]
    if not inside:
        ranges = "; ".join(f"{cv.kernel} on {c.profile}: M {cv.m_range[0]}-{cv.m_range[1]}" for c, cv in found)
        return f"no {phase} curve for {variant} at M={m:g} on arch {arch} (measured {ranges})"
    # the fastest kernel at this M, as the runner chooses; of two prefill paths the faster, as the engine does
    if ((explicit and ran is None and len({cv.kernel for _, cv in inside}) > 1)
            or (phase == "prefill" and len({cv.prefill_path for _, cv in inside}) > 1)):
        return min(inside, key=lambda x: _other(x[0], x[1], m, block_params)[0][0])
    return max(inside, key=lambda x: sum(p.n for p in x[1].points))


def _label(cal: DeviceCalibration, cv: Curve, target: Profile) -> str:
    where = "measured on" if cal.profile == target.id else "curves from"
    path = f", {cv.prefill_path} prefills" if cv.prefill_path else ""
    return f"{where} {cal.profile} ({cv.kernel}, {cv.source}{path})"


def _scales(cal: DeviceCalibration, target: Profile) -> tuple[float, float, float]:
    """(copy bandwidth of the calibrated device, the target's at the same copy fraction, the compute-peak
    ratio calibrated / target that scales the time beyond memory traffic)."""
    peak_t = target.peak("bf16")
    return (cal.datasheet_bandwidth_bytes_per_s * cal.copy_fraction, target.bandwidth_bytes_per_s * cal.copy_fraction,
            cal.bf16_peak_flops / peak_t if cal.bf16_peak_flops and peak_t else 1.0)


def _err(cal: DeviceCalibration, target: Profile) -> float:
    return 0.0 if cal.profile == target.id else float(cal.provenance.get("transfer_error", DEFAULT_TRANSFER_ERROR))


def _kernel_step(cal: DeviceCalibration, cv: Curve, target: Profile, m: int, gemm_bytes: float, kv_bytes: float,
                 layers: int | None, block_params: int | None) -> Projection:
    """A decode step from a kernel curve: KV / copy + the GEMM bytes through the kernel's other(M) (at the
    model's block size where the kernel was timed at several) + the calibration's non-GEMM step cost
    (harness/plan/step_cost.py), scaled by layers / its model's layers and, on another device, by the
    compute peaks. Interval: the step cost's low..high and the GEMM term x (1 -/+ kernel_error), widened
    by transfer_error off the calibrated device."""
    (other, lo, hi), blocks = _other(cal, cv, m, block_params)
    sc = cal.step_cost
    copy_s, copy_t, scale = _scales(cal, target)
    per = (layers / sc["layers"] if layers and sc.get("layers") else 1.0) * scale
    ke = float(sc.get("kernel_error") or 0.0)

    def step(o: float, copy: float, ng: float, k: float) -> float:
        gemm = gemm_bytes / copy + o * gemm_bytes / copy_s * scale
        return kv_bytes / copy + gemm * k + ng * per

    e = _err(cal, target)
    fast = step(lo, max(copy_s, copy_t), float(sc["low_s"]), 1 - ke)
    slow = step(hi, min(copy_s, copy_t), float(sc["high_s"]), 1 + ke)
    label = (f"{_label(cal, cv, target)}{f', {blocks}' if blocks else ''}, "
             f"non-GEMM {float(sc['non_gemm_s']) * per * 1e3:.3f} ms/step")
    t = step(other, copy_t, float(sc["non_gemm_s"]), 1.0)
    gemm = gemm_bytes / copy_t + other * gemm_bytes / copy_s * scale
    return Projection(m / t, m / slow / (1 + e), m / fast * (1 + e), label, cv.kernel, gemm / t)


def _kernel_prefill(cal: DeviceCalibration, pc: dict, cv: Curve, target: Profile, batch: int, prompt: int,
                    gemm_bytes: float, head_bytes: float, layers: int | None, block_params: int | None,
                    widths: tuple[int, int] | None) -> Projection:
    """A prefill from a kernel curve: the blocks' GEMM bytes through the kernel's other(M) at M = batch x
    prompt, the lm_head's at M = batch (the last token of each prompt), plus the calibration's non-GEMM
    prefill cost `pc` (step_cost.prefill_seconds: norms, rotary, KV write, launches by tokens; attention by
    batch x prompt^2), scaled by layers and the model's `widths` and, on another device, by the compute
    peaks. Interval: the GEMM terms x (1 -/+ kernel_error), the non-GEMM term x (1 -/+ its spread), the
    memory terms at the faster / slower bandwidth, widened by transfer_error off the calibrated device."""
    from harness.plan.step_cost import prefill_seconds

    m = batch * prompt
    (o, lo, hi), blocks = _other(cal, cv, m, block_params)
    head, _ = _other(cal, cv, batch, block_params)
    if head is None:
        return Projection(None, None, None, f"no kernel curve of {cv.variant} at M={batch} (the lm_head's rows)")
    oh, loh, hih = head
    copy_s, copy_t, scale = _scales(cal, target)
    ng = prefill_seconds(pc, batch, prompt, layers, widths) * scale
    ke, sp = float(pc.get("kernel_error") or 0.0), float(pc.get("spread") or 0.0)
    body = gemm_bytes - head_bytes

    def total(ob: float, ohd: float, copy: float, k: float, n: float) -> float:
        g = body / copy + ob * body / copy_s * scale + head_bytes / copy + ohd * head_bytes / copy_s * scale
        return g * k + ng * n

    e = _err(cal, target)
    fast = total(lo, loh, max(copy_s, copy_t), 1 - ke, 1 - sp)
    slow = total(hi, hih, min(copy_s, copy_t), 1 + ke, 1 + sp)
    label = (f"{_label(cal, cv, target)}{f', {blocks}' if blocks else ''}, non-GEMM prefill {ng * 1e3:.2f} ms "
             f"of {pc.get('prefill_path', 'eager')} prefills (+/-{sp:.0%}, {pc.get('spread_source', '')})")
    t = total(o, oh, copy_t, 1.0, 1.0)
    return Projection(m / t, m / slow / (1 + e), m / fast * (1 + e), label, cv.kernel, (t - ng) / t)


def project_step(cals: list[DeviceCalibration], target: Profile, variant: str, phase: str, m: int,
                 weight_bytes: float, kv_bytes: float, gemm_bytes: float | None = None,
                 layers: int | None = None, kernel: str | None = None, block_params: int | None = None,
                 batch: int | None = None, head_bytes: float = 0.0, prefill_path: str | None = None,
                 widths: tuple[int, int] | None = None) -> Projection:
    """Tokens/s of one step of M tokens (decode: M = batch; prefill: M = batch x prompt). gemm_bytes,
    layers and block_params (the model's linear parameters per block) are used by curves derived from
    kernel curves (the others fold them into other(M)); a prefill from kernel curves also needs the batch
    and the lm_head's bytes (and `widths`, ArchShape.prefill_widths, to scale its non-GEMM cost), and takes
    the prefill cost of `prefill_path` (the path a measured cell ran) where the calibration has it, else
    the faster of its paths' projections (the engine's choice)."""
    if not target.bandwidth_bytes_per_s:
        return Projection(None, None, None, f"{target.id}: bandwidth not published")
    got = _pick(cals, target, variant, phase, m, kernel, block_params, prefill_path if phase == "prefill" else None)
    if isinstance(got, str):
        return Projection(None, None, None, got)
    cal, cv = got
    if cv.source == KERNEL_PLUS_STEP and cal.step_cost is not None:
        return _kernel_step(cal, cv, target, m, gemm_bytes or weight_bytes, kv_bytes, layers, block_params)
    if cv.source == KERNEL_PLUS_PREFILL and cal.prefill_costs:
        if not batch or not gemm_bytes:
            return Projection(None, None, None, f"prefill of {variant} from kernel curves needs the batch and GEMM bytes")
        costs = [pc for pc in cal.prefill_costs if pc.get("prefill_path", "eager") == prefill_path] or cal.prefill_costs
        ps = [_kernel_prefill(cal, pc, cv, target, batch, m // batch, gemm_bytes, head_bytes, layers, block_params,
                              widths) for pc in costs]
        best = max(ps, key=lambda p: p.tok_s or 0.0)
        if len(ps) > 1:
            best = replace(best, source=f"{best.source}; the faster of {len(ps)} prefill paths, "
                                        f"as the engine chooses by measurement")
        return best
    other, lo, hi = cv.at(m)
    copy_s, copy_t, scale = _scales(cal, target)

    def step(o: float, copy: float) -> float:
        return (weight_bytes + kv_bytes) / copy + o * weight_bytes / copy_s * scale

    e = _err(cal, target)
    return Projection(m / step(other, copy_t), m / step(hi, min(copy_s, copy_t)) / (1 + e),
                      m / step(lo, max(copy_s, copy_t)) * (1 + e), _label(cal, cv, target), cv.kernel)


def project_decode(cals: list[DeviceCalibration], target: Profile, variant: str, batch: int,
                   weight_bytes: float, kv_bytes: float, gemm_bytes: float | None = None,
                   layers: int | None = None, kernel: str | None = None, block_params: int | None = None) -> Projection:
    return project_step(cals, target, variant, "decode", batch, weight_bytes, kv_bytes, gemm_bytes, layers, kernel,
                        block_params)


def project_prefill(cals: list[DeviceCalibration], target: Profile, variant: str, tokens: int,
                    weight_bytes: float, kv_bytes: float, kernel: str | None = None, *, batch: int | None = None,
                    gemm_bytes: float | None = None, head_bytes: float = 0.0, layers: int | None = None,
                    block_params: int | None = None, prefill_path: str | None = None,
                    widths: tuple[int, int] | None = None) -> Projection:
    """A format that picks its kernel per batch (int4-wo) prefills with the kernel it picked for the decode
    batch, as the runner does (one kernel per cell, chosen at M = the batch): where `kernel` is not known
    (planning), that is the kernel of its fastest decode curve at the batch."""
    from harness.plan.kernel_names import kernel_named
    from harness.variants import explicit_kernels

    picked = None
    if kernel is None and batch and explicit_kernels(variant):
        dec = _pick(cals, target, variant, "decode", batch, None, block_params)
        if not isinstance(dec, str):
            kernel = dec[1].kernel
            picked = kernel_named(kernel)
    p = project_step(cals, target, variant, "prefill", tokens, weight_bytes, kv_bytes, gemm_bytes, layers, kernel,
                     block_params, batch, head_bytes, prefill_path, widths)
    if picked and not p.ok:
        return Projection(None, None, None, f"{variant} picks {picked} at batch {batch} (decode curves); {p.source}")
    return p


def apply_curves(rows, cals: list[DeviceCalibration], profiles: dict[str, Profile], powers=()):
    """Fill the curve_* columns of plan rows (in place; returns rows). A row without a curve gets the
    reason in curve_from and no figure. `powers` (harness/plan/power.py models): the prefill of a row's
    context projected at the power-capped clock they measured (decode is steady-state decode there: the
    steps right after a prefill, which validate-plan projects for a measured cell, are not a plan row's)."""
    from harness.plan.power import power_scaled
    for row in rows:
        p = profiles.get(row.profile)
        if p is None or row.status == "unsupported" or not cals:
            continue
        d = project_decode(cals, p, row.variant, row.batch_size, row.weight_bytes, row.kv_cache_bytes,
                           row.gemm_weight_bytes or None, row.layers or None, block_params=row.block_params or None)
        q = project_prefill(cals, p, row.variant, row.batch_size * row.context_tokens, row.weight_bytes,
                            row.kv_cache_bytes, batch=row.batch_size, gemm_bytes=row.gemm_weight_bytes or None,
                            head_bytes=row.head_weight_bytes, layers=row.layers or None,
                            block_params=row.block_params or None, widths=row.prefill_widths)
        m = row.batch_size * row.context_tokens
        q = power_scaled(q, powers, p, lambda pm: pm.prefill_factor(q.kernel, m, m / q.tok_s, q.gemm_share,
                                                                    row.block_params or None))
        row.curve_decode_tok_s, row.curve_decode_low, row.curve_decode_high = d.tok_s, d.low, d.high
        row.curve_prefill_tok_s, row.curve_prefill_low, row.curve_prefill_high = q.tok_s, q.low, q.high
        row.curve_from = d.source if d.source == q.source else f"decode: {d.source}; prefill: {q.source}"
    return rows
