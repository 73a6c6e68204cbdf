"""The non-GEMM cost of a decode step, fitted from step profiles (bench/profile_step.py JSON), for
calibrations built from kernel curves alone.

A kernel curve times the linear layers only; a decode step also runs attention over the cache, norms,
rotary and the cache write, the activation, sampling, and idles between kernels inside its graph. From a
profile of the engine's own decode graph: non-GEMM seconds = step wall time (CUDA events) - the GEMM
group's kernel time. It is held per step for the profiled model's layer count and scaled by layers on
another model; it is taken as constant in M (measured at batch 1: the attention's cache read grows with
the batch, and that read is already in the projection's KV / copy term).

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
import statistics
from pathlib import Path

from harness.models.spec import shape_of
from harness.plan.curves import DeviceCalibration
from harness.plan.roofline import gemm_bytes, weight_bytes
from harness.variants import parse_variant

GEMM_GROUP = "gemm (cuBLAS/CUTLASS/nvjet)"   # bench/profile_step.py's group of the matrix-product kernels


def none(layers: int = 32) -> dict:
    return {"non_gemm_s": 0.0, "low_s": 0.0, "high_s": 0.0, "layers": layers, "kernel_error": 0.0,
            "sources": [], "method": "none: kernel curves only; the non-GEMM work of a step is omitted (optimistic)"}


def read_profile(path: str | Path) -> dict:
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("phase", "decode") != "decode":   # bench/profile_step.py --phase prefill: not a decode step
            raise ValueError(f"a {d.get('phase')} profile, and the step cost is a decode step's")
        step_ms = float(d["step_wall_ms_cuda_events"])
        gemm_ms = float(d["groups"][GEMM_GROUP]["ms_per_step"])
        return {"file": str(p), "model": d["model"], "variant": d["variant"], "batch": int(d["batch"]),
                "prompt": int(d.get("prompt", 0)), "step_ms": step_ms, "gemm_ms": gemm_ms,
                "non_gemm_ms": step_ms - gemm_ms, "kernel": d.get("kernel")}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: not a bench/profile_step.py profile ({type(e).__name__}: {e})") from None


def curve_gemm_ms(cal: DeviceCalibration, model: str, variant: str, m: int, kernel: str | None = None) -> float | None:
    """GEMM milliseconds of one decode step of `model` at M per the variant's kernel curve, or None. A
    format that picks its kernel (int4-wo) has curves per explicit kernel only: the one the profile's
    `kernel` names, or the only one there is."""
    from harness.plan.curves import curve_is_kernel, kernel_named
    from harness.variants import explicit_kernels

    kc = [c for c in cal.curves if c.variant == variant and c.phase == "kernel"]
    if not kc:
        ran, names = kernel_named(kernel), set(explicit_kernels(variant))
        kc = [c for c in cal.curves if c.phase == "kernel" and c.variant in names
              and (ran is None or curve_is_kernel(c, ran))]
        kc = kc if len(kc) == 1 else []
    at = kc[0].at(m) if kc else None
    if at is None:
        return None
    shape = shape_of(model)
    gb = gemm_bytes(shape, weight_bytes(shape, parse_variant(variant), "bf16"))
    copy = cal.datasheet_bandwidth_bytes_per_s * cal.copy_fraction
    return gb * (1 + at[0]) / copy * 1e3


def fit(profile_paths: list[str | Path], cal: DeviceCalibration) -> dict:
    """The step-cost entry of a calibration file from the profiles (see the module doc)."""
    if not profile_paths:
        raise ValueError("no step profiles given")
    rows = [read_profile(p) for p in profile_paths]
    layers = {shape_of(r["model"]).num_hidden_layers for r in rows}
    if len(layers) != 1:
        raise ValueError(f"step profiles of models with {sorted(layers)} layers: give one layer count")
    devs = []
    for r in rows:
        cg = curve_gemm_ms(cal, r["model"], r["variant"], r["batch"], r.get("kernel"))
        r["curve_gemm_ms"] = cg
        r["gemm_vs_curve"] = None if cg is None else r["gemm_ms"] / cg - 1
        if cg is not None:
            devs.append(abs(r["gemm_vs_curve"]))
    ng = [r["non_gemm_ms"] * 1e-3 for r in rows]
    return {"non_gemm_s": statistics.median(ng), "low_s": min(ng), "high_s": max(ng), "layers": layers.pop(),
            "kernel_error": max(devs) if devs else 0.0, "sources": [r["file"] for r in rows], "by_profile": rows,
            "method": "non_gemm = step wall ms (CUDA events) - GEMM group ms, per profile of the engine's decode "
                      "graph (torch.profiler); value: median, low/high: min/max over the profiles; kernel_error: "
                      "max |profile GEMM ms / kernel-curve GEMM ms - 1|; constant in M, scaled by layers"}
