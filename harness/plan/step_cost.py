"""The non-GEMM cost of a decode step, fitted from step profiles (bench/profile_step.py JSON), for
calibrations built from kernel curves alone.

A kernel curve times the linear layers only; a decode step also runs attention over the cache, norms,
rotary and the cache write, the activation, sampling, and idles between kernels inside its graph. The
projection (harness/plan/transfer.py) counts the attention's read of the whole static cache as KV bytes
at the copy bandwidth; from a profile of the engine's own decode graph, the rest: non-GEMM seconds = step
wall time (CUDA events) - the GEMM group's kernel time - the profiled cell's KV bytes / copy bandwidth. It
is held per step for the profiled model's layer count and scaled by layers on another model, and taken
as constant in M and context (lab H200, 2026-12-03: 0.65-0.87 ms over batch 1-32 and caches of 192-2,112
tokens; the attention group's time over the same profiles is a line in KV bytes read at about the copy
bandwidth: `attention_vs_kv`, kept as the evidence for the KV term).

The term: `non_gemm_s` the median over the profiles, `low_s` / `high_s` their min and max. Beside it,
`kernel_error`: the largest |profile GEMM time / the kernel curve's GEMM time for the profiled cell - 1|
over the profiles (how far GEMMs timed alone in a CUDA graph are from the same GEMMs inside the step);
projections widen the GEMM term by it. Both come from the profiles' GEMM and non-GEMM split only, never
from an end-to-end tokens/s.

`none()` states a zero cost explicitly (kernel curves only: the projection omits the non-GEMM work and is
optimistic); a calibration without a step_cost entry gives no decode projection from kernel curves.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from harness.models.spec import shape_of
from harness.plan.curves import DeviceCalibration
from harness.plan.roofline import gemm_bytes, kv_cache_bytes, weight_bytes
from harness.variants import parse_variant

GEMM_GROUP = "gemm (cuBLAS/CUTLASS/nvjet)"   # bench/profile_step.py's group of the matrix-product kernels


def none(layers: int = 32) -> dict:
    return {"non_gemm_s": 0.0, "low_s": 0.0, "high_s": 0.0, "layers": layers, "kernel_error": 0.0,
            "sources": [], "method": "none: kernel curves only; the non-GEMM work of a step is omitted (optimistic)"}


ATTENTION_GROUP = "attention"
# bench/profile_step.py's --new default: the new tokens (the static cache beyond the prompt) of profiles
# written before it recorded them
PROFILE_NEW_DEFAULT = 64
_ATTENTION_NAME = re.compile(r"flash|fmha|sdpa|attention")


def read_profile(path: str | Path, phase: str = "decode") -> dict:
    """One bench/profile_step.py JSON of `phase` (decode: one step; prefill: one whole prompt's prefill):
    its wall ms, GEMM ms and attention ms. Profiles written before bench/profile_step.py grouped attention
    first have cuDNN's Hopper SDPA kernel (..._sdpa_sm90_flash_fprop_wgmma_...) in the GEMM group: a top
    kernel of that group whose name says attention is moved to attention here."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("phase", "decode") != phase:   # --phase prefill profiles a prefill, not a decode step
            want = "the step cost is a decode step's" if phase == "decode" else "the prefill cost is a prefill's"
            raise ValueError(f"a {d.get('phase', 'decode')} profile, and {want}")
        step_ms = float(d["step_wall_ms_cuda_events"])
        gemm_ms = float(d["groups"][GEMM_GROUP]["ms_per_step"])
        attn_ms = float(d["groups"].get(ATTENTION_GROUP, {}).get("ms_per_step", 0.0))
        moved = sum(float(k["ms_per_step"]) for k in d.get("top_kernels", [])
                    if k.get("group") == GEMM_GROUP and _ATTENTION_NAME.search(k["name"].lower()))
        return {"file": str(p), "model": d["model"], "variant": d["variant"], "batch": int(d["batch"]),
                "prompt": int(d.get("prompt", 0)), "new": int(d.get("new", PROFILE_NEW_DEFAULT)), "step_ms": step_ms, "gemm_ms": gemm_ms - moved,
                "attention_ms": attn_ms + moved, "non_gemm_ms": step_ms - (gemm_ms - moved), "kernel": d.get("kernel"),
                "prefill_path": prefill_path(d.get("prefill_choice")),
                **({"attention_moved_from_gemm_ms": moved} if moved else {})}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: not a bench/profile_step.py profile ({type(e).__name__}: {e})") from None


def prefill_path(choice: dict | None) -> str:
    """"compiled" or "eager": the prefill a profile or a record's engine.prefill ran (profiles and records
    from before CudaGraphEngine.choose_prefill ran the eager one and carry no choice)."""
    return str((choice or {}).get("chosen") or "eager")


def curve_gemm_ms(cal: DeviceCalibration, model: str, variant: str, m: int, kernel: str | None = None,
                  head_m: int | None = None) -> float | None:
    """GEMM milliseconds of one step of `model` at M per the variant's kernel curve, or None. A format that
    picks its kernel (int4-wo) has curves per explicit kernel only: the one the profile's `kernel` names,
    or the only one there is. head_m: the lm_head's rows where they differ from M (a prefill runs it on
    the last token of each prompt: M = the batch)."""
    from harness.plan.kernel_names import curve_is_kernel, kernel_named
    from harness.plan.roofline import lm_head_gemm_bytes
    from harness.variants import explicit_kernels

    kc = [c for c in cal.curves if c.variant == variant and c.phase == "kernel"]
    if not kc:
        ran, names = kernel_named(kernel), set(explicit_kernels(variant))
        kc = [c for c in cal.curves if c.phase == "kernel" and c.variant in names
              and (ran is None or curve_is_kernel(c, ran))]
        kc = kc if len({(c.variant, c.kernel) for c in kc}) == 1 else []
    if not kc:
        return None
    shape = shape_of(model)
    wb = weight_bytes(shape, parse_variant(variant), "bf16")
    gb = gemm_bytes(shape, wb)
    hb = lm_head_gemm_bytes(shape, wb) if head_m is not None else 0
    at = cal.sized_kernel_at(kc[0].variant, kc[0].kernel, m, shape.block_linear_params())
    ah = cal.sized_kernel_at(kc[0].variant, kc[0].kernel, head_m, shape.block_linear_params()) if hb else None
    if at is None or (hb and ah is None):
        return None
    copy = cal.datasheet_bandwidth_bytes_per_s * cal.copy_fraction
    return ((gb - hb) * (1 + at[0][0]) + (hb * (1 + ah[0][0]) if hb else 0)) / copy * 1e3


def fit(profile_paths: list[str | Path], cal: DeviceCalibration) -> dict:
    """The step-cost entry of a calibration file from the profiles (see the module doc)."""
    if not profile_paths:
        raise ValueError("no step profiles given")
    rows = [read_profile(p) for p in profile_paths]
    layers = {shape_of(r["model"]).num_hidden_layers for r in rows}
    if len(layers) != 1:
        raise ValueError(f"step profiles of models with {sorted(layers)} layers: give one layer count")
    copy = cal.datasheet_bandwidth_bytes_per_s * cal.copy_fraction
    devs = []
    for r in rows:
        r["kv_bytes"] = kv_cache_bytes(shape_of(r["model"]), r["prompt"] + r["new"], r["batch"], "bf16")
        r["kv_ms"] = r["kv_bytes"] / copy * 1e3
        r["non_gemm_ms"] -= r["kv_ms"]          # the projection's KV / copy term: not counted twice
        cg = curve_gemm_ms(cal, r["model"], r["variant"], r["batch"], r.get("kernel"))
        r["curve_gemm_ms"] = cg
        r["gemm_vs_curve"] = None if cg is None else r["gemm_ms"] / cg - 1
        if cg is not None:
            devs.append(abs(r["gemm_vs_curve"]))
    ng = [r["non_gemm_ms"] * 1e-3 for r in rows]
    return {"non_gemm_s": statistics.median(ng), "low_s": min(ng), "high_s": max(ng), "layers": layers.pop(),
            "kernel_error": max(devs) if devs else 0.0, "sources": [r["file"] for r in rows], "by_profile": rows,
            **({"attention_vs_kv": attention_vs_kv(rows)} if len({r["kv_bytes"] for r in rows}) > 1 else {}),
            "method": "non_gemm = step wall ms (CUDA events) - GEMM group ms - KV bytes of the profiled cache / "
                      "copy bandwidth, per profile of the engine's decode graph (torch.profiler); value: median, "
                      "low/high: min/max over the profiles; kernel_error: max |profile GEMM ms / kernel-curve GEMM "
                      "ms - 1|; constant in M and context, scaled by layers"}


def attention_vs_kv(rows: list[dict]) -> dict:
    """The profiles' attention-group ms as a line in the KV bytes their cache holds: the fixed part and
    the bandwidth the slope implies (evidence for the projection's KV / copy term, not used by it)."""
    icpt, slope, res = _line([float(r["kv_bytes"]) for r in rows], [r["attention_ms"] * 1e-3 for r in rows])
    return {"fixed_s": icpt, "read_bytes_per_s": 1 / slope if slope > 0 else None, "largest_relative_residual": res,
            "method": "least squares of attention-group seconds on KV bytes (batch x (prompt + new) x KV bytes per token)"}


# Two prefill profiles determine both lines exactly (no residual to size an interval from): the projection
# then carries this stated relative spread on the non-GEMM prefill term, labelled as such.
PREFILL_PRIOR = 0.25


def _line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """(intercept, slope, largest |relative residual|) of a least-squares line through (xs, ys)."""
    n, mx, my = len(xs), statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    icpt = my - slope * mx
    res = max(abs(icpt + slope * x - y) / y for x, y in zip(xs, ys) if y > 0) if n > 2 else 0.0
    return icpt, slope, res


def prefill_seconds(pc: dict, batch: int, prompt: int, layers: int | None = None,
                    widths: tuple[int, int] | None = None) -> float:
    """Non-GEMM seconds of one prefill of `batch` prompts of `prompt` tokens per a prefill_cost entry:
    fixed + per_token x tokens + attention_fixed + attention_per_p2 x batch x prompt^2, scaled by layers;
    with the model's `widths` (ArchShape.prefill_widths), the per-token term also by its token width and the
    attention's by its attention width against the profiled model's (entries fitted before 2026-12-03
    evening carry no widths: layers only)."""
    per = layers / pc["layers"] if layers and pc.get("layers") else 1.0
    wt, wa = (widths[0] / pc["token_width"], widths[1] / pc["attention_width"]) if widths and pc.get("token_width") \
        else (1.0, 1.0)
    t = batch * prompt
    return per * (pc["fixed_s"] + pc["per_token_s"] * t * wt + pc["attention_fixed_s"]
                  + pc["attention_per_p2_s"] * batch * prompt * prompt * wa)


def fit_prefill_paths(profile_paths: list[str | Path], cal: DeviceCalibration) -> list[dict]:
    """One prefill cost (fit_prefill) per prefill path the profiles ran (eager, compiled), each from that
    path's profiles: the engine runs whichever it measured faster, so the projection keeps both."""
    by_path: dict[str, list[dict]] = {}
    for p in profile_paths:
        r = read_profile(p, "prefill")
        by_path.setdefault(r["prefill_path"], []).append(r)
    return [_fit_prefill_rows(rows, cal) for _, rows in sorted(by_path.items())]


def fit_prefill(profile_paths: list[str | Path], cal: DeviceCalibration) -> dict:
    """The prefill_cost entry of a calibration file from bench/profile_step.py --phase prefill profiles at
    two or more token counts: the non-GEMM, non-attention time (norms, rotary, the residual adds, the
    activation, the KV write, launches) as a line in tokens (B x P), the attention as a line in B x P^2
    (causal attention's work), both scaled on another model by layers and by width (prefill_seconds).
    kernel_error: as for decode, the largest |profile GEMM ms / the kernel curve's GEMM ms at M = B x P - 1|."""
    return _fit_prefill_rows([read_profile(p, "prefill") for p in profile_paths], cal)


def _fit_prefill_rows(rows: list[dict], cal: DeviceCalibration) -> dict:
    """fit_prefill over profiles already read (read_profile)."""
    layers = {shape_of(r["model"]).num_hidden_layers for r in rows}
    if len(layers) != 1:
        raise ValueError(f"prefill profiles of models with {sorted(layers)} layers: give one layer count")
    widths = {shape_of(r["model"]).prefill_widths() for r in rows}
    if len(widths) != 1:
        raise ValueError("prefill profiles of models of different widths: give one model's")
    tokens = [r["batch"] * r["prompt"] for r in rows]
    if len(set(tokens)) < 2:
        raise ValueError("prefill profiles at two or more token counts (batch x prompt) are needed for a line")
    work = [float(r["batch"] * r["prompt"] ** 2) for r in rows]
    if len(set(work)) < 2:
        raise ValueError("prefill profiles at two or more batch x prompt^2 (attention's work) are needed for a line")
    paths = {r["prefill_path"] for r in rows}
    if len(paths) != 1:
        raise ValueError(f"prefill profiles of {' and '.join(sorted(paths))} prefills: give profiles of one prefill path")
    rest = [(r["non_gemm_ms"] - r["attention_ms"]) * 1e-3 for r in rows]
    att = [r["attention_ms"] * 1e-3 for r in rows]
    f0, f1, r1 = _line([float(t) for t in tokens], rest)
    a0, a1, r2 = _line(work, att)
    devs = []
    for r in rows:
        cg = curve_gemm_ms(cal, r["model"], r["variant"], r["batch"] * r["prompt"], r.get("kernel"), head_m=r["batch"])
        r["curve_gemm_ms"] = cg
        r["gemm_vs_curve"] = None if cg is None else r["gemm_ms"] / cg - 1
        if cg is not None:
            devs.append(abs(r["gemm_vs_curve"]))
    spread = max(r1, r2) if len(rows) > 2 else PREFILL_PRIOR
    token_width, attention_width = widths.pop()
    return {"fixed_s": f0, "per_token_s": f1, "attention_fixed_s": a0, "attention_per_p2_s": a1,
            "layers": layers.pop(), "token_width": token_width, "attention_width": attention_width, "kernel_error": max(devs) if devs else 0.0, "spread": spread,
            "prefill_path": paths.pop(),
            "spread_source": "largest relative residual of the two lines" if len(rows) > 2 else
                             f"stated prior of {PREFILL_PRIOR:.0%}: two profiles fit the lines exactly",
            "sources": [r["file"] for r in rows], "by_profile": rows,
            "method": "per prefill profile: rest = wall ms - GEMM ms - attention ms, a line in tokens (B x P); "
                      "attention ms a line in B x P^2; least squares; scaled by layers, the per-token term by "
                      "hidden + intermediate and the attention's by heads x head dim; prefill = KV write / "
                      "block GEMMs through the kernel curve at M = B x P + lm_head at M = B + these (the KV write is in rest)"}
