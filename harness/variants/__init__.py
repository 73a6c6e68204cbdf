"""Variant registry: name -> requirements + apply. Unknown names are errors listing the valid ones."""
from harness.variants.registry import (REGISTRY, ApplyResult, Requirements, UnknownVariantError, Variant,
                                       get_variant, parse_variant_list, register)
from harness.variants import builtin  # noqa: F401  (registers the built-in variants)

__all__ = ["REGISTRY", "ApplyResult", "Requirements", "UnknownVariantError", "Variant", "get_variant",
           "parse_variant_list", "register"]
