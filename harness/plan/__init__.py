"""The planner: projected memory fit and roofline tokens/s of compression variants on hardware profiles."""
from harness.plan.layouts import LAYOUTS, POLICIES, Layout, Policy, Variant, VariantError, parse_variant, parse_variants
from harness.plan.roofline import PLAN_STATUSES, PlanRow, Workload, plan, project, weight_bytes

__all__ = [
    "LAYOUTS", "PLAN_STATUSES", "POLICIES", "Layout", "PlanRow", "Policy", "Variant", "VariantError", "Workload",
    "parse_variant", "parse_variants", "plan", "project", "weight_bytes",
]
