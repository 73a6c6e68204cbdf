"""Variant registry: name -> layout, requirements and apply. Unknown names are errors listing the valid
ones. Importing this package imports no torch: implementations load on first apply or probe.

    spec = parse_variant("int4-wo@keep-attn")          # once, where the name comes in
    spec.unsupported_reason(device_type, cc, profile)  # before loading a model
    spec.apply(model, spec.context(device_type, dtype, calibration_ids, num_layers))
    spec.layout, spec.compute_format("bf16")           # the planner's bytes, the meters' MFU peak
"""
from harness.variants.layout import FORMAT_BITS, Layout
from harness.variants.policy import POLICIES, Policy, PolicyError
from harness.variants.registry import (REGISTRY, ApplyContext, ApplyResult, NothingApplied, Requirements,
                                       UnknownVariantError, Variant, VariantError, register)
from harness.variants.spec import (VariantSpec, compute_format, explicit_kernels, get_variant, parse_variant,
                                   parse_variant_list,
                                   parse_variants, policy_for, split_policy, valid_names, variant_names)
from harness.variants import catalog  # noqa: F401  (registers every variant)

__all__ = ["FORMAT_BITS", "POLICIES", "REGISTRY", "ApplyContext", "ApplyResult", "Layout", "NothingApplied",
           "Policy", "PolicyError", "Requirements", "UnknownVariantError", "Variant", "VariantError", "VariantSpec",
           "compute_format", "explicit_kernels", "get_variant", "parse_variant", "parse_variant_list", "parse_variants", "policy_for",
           "register", "split_policy", "valid_names", "variant_names"]
