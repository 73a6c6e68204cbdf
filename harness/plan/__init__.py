"""The planner: projected memory fit and roofline tokens/s of compression variants on hardware profiles.
Variants and their storage layouts come from the one registry (harness.variants), parsed once.

roofline.py  datasheet projection          curves.py    calibration file: per-kernel curves over M
calibrate.py per-variant efficiencies       transfer.py  curves onto a profile, with an interval
sources.py   run folders / files -> curves  validate.py  measured cells beside projections
multigpu.py  GPUs needed, tensor-parallel decode (interconnect.yaml)
kernel_log.py bench/kernels_gpu.py timings -> records, curves   step_cost.py non-GEMM step cost from profiles
power.py     power-capped clocks (bench/power_gpu.py loads) kernel_names.py what a kernel string names
"""
from harness.plan.roofline import PLAN_STATUSES, PlanRow, Workload, plan, project, weight_bytes
from harness.variants import (POLICIES, Layout, Policy, VariantError, VariantSpec, parse_variant, parse_variants,
                              variant_names)

__all__ = [
    "PLAN_STATUSES", "POLICIES", "Layout", "PlanRow", "Policy", "VariantError", "VariantSpec", "Workload",
    "parse_variant", "parse_variants", "plan", "project", "variant_names", "weight_bytes",
]
