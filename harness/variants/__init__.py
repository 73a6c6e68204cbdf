"""Variant registry: name -> requirements + apply. Unknown names are errors listing the valid ones."""
from harness.variants.registry import (REGISTRY, ApplyContext, ApplyResult, Policy, Requirements, UnknownVariantError,
                                       Variant, get_variant, parse_variant_list, policy_for, register, split_policy)
from harness.variants import builtin  # noqa: F401  (registers the built-in variants)

__all__ = ["REGISTRY", "ApplyContext", "Policy", "policy_for", "split_policy", "ApplyResult", "Requirements", "UnknownVariantError", "Variant", "get_variant",
           "parse_variant_list", "register"]
