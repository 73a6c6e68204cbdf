"""Variant registry: name -> requirements + apply. Unknown names are errors listing the valid ones."""
from harness.variants.registry import (REGISTRY, ApplyContext, ApplyResult, Policy, Requirements, UnknownVariantError,
                                       Variant, get_variant, parse_variant_list, policy_for, register, split_policy)
from harness.variants import builtin  # noqa: F401  (registers the built-in variants)
from harness.variants import quant  # noqa: F401  (int8 / int4 / AWQ / fp8 quantization variants)

__all__ = ["REGISTRY", "ApplyContext", "Policy", "policy_for", "split_policy", "ApplyResult", "Requirements", "UnknownVariantError", "Variant", "get_variant",
           "parse_variant_list", "register"]
from harness.variants import sparse  # noqa: F401
