"""The planner: projected memory fit and roofline tokens/s of compression variants on hardware profiles.
Variants and their storage layouts come from the one registry (harness.variants), parsed once."""
from harness.plan.roofline import PLAN_STATUSES, PlanRow, Workload, plan, project, weight_bytes
from harness.variants import (POLICIES, Layout, Policy, VariantError, VariantSpec, parse_variant, parse_variants,
                              variant_names)

__all__ = [
    "PLAN_STATUSES", "POLICIES", "Layout", "PlanRow", "Policy", "VariantError", "VariantSpec", "Workload",
    "parse_variant", "parse_variants", "plan", "project", "variant_names", "weight_bytes",
]
