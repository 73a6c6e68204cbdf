"""Moved: storage layouts are data on the variant registry's entries (harness/variants/layout.py,
catalog.py) and names are parsed by harness/variants/spec.py. These names stay importable from here for
code written against the planner's old module; new code imports harness.variants."""
from harness.variants.layout import FORMAT_BITS, Layout
from harness.variants.policy import POLICIES, Policy
from harness.variants.spec import VariantSpec, parse_variant, parse_variants, valid_names
from harness.variants.registry import VariantError

__all__ = ["FORMAT_BITS", "POLICIES", "Layout", "Policy", "VariantError", "VariantSpec", "parse_variant",
           "parse_variants", "valid_names"]
