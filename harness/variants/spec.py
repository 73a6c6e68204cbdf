"""Variant names, parsed once: `int4-wo`, `int4-wo@keep-attn`, `int4-wo@path/to/policy.txt`,
`int4-wo@keep-attn@keep-ends`, or `all` in a list. A VariantSpec holds the registry entry and the
policy (a policy file is read here, once), and answers for the whole cell: the layout and compute
format (planner, meters), the runtime policy (apply) and the requirements (unsupported before loading).
No torch here. This is the only module that splits a variant name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.variants.layout import Layout
from harness.variants.policy import POLICIES, Policy, PolicyError
from harness.variants.registry import REGISTRY, ApplyContext, ApplyResult, UnknownVariantError, Variant

ALL = "all"


@dataclass(frozen=True)
class VariantSpec:
    name: str                     # as written, stripped: "int4-wo@keep-attn"
    entry: Variant
    policy: Policy | None = None  # not yet bound to a layer count (see policy_for)
    decode_rows: int = 1          # the batch the kernel is chosen for (entry.kernel_by_batch); see for_batch

    @property
    def base(self) -> str:
        return self.entry.name

    @property
    def layout(self) -> Layout | None:
        return self.entry.layout

    def compute_format(self, baseline_format: str) -> str:
        return self.entry.compute_format(baseline_format)

    def policy_for(self, num_layers: int | None) -> Policy | None:
        """The policy bound to a model of `num_layers` decoder blocks (keep-ends needs it), or None."""
        return None if self.policy is None else self.policy.bind(num_layers)

    def context(self, device_type: str, dtype, calibration_ids=None, num_layers: int | None = None) -> ApplyContext:
        return ApplyContext(device_type, dtype, calibration_ids, self.policy_for(num_layers), self.decode_rows)

    def for_batch(self, batch: int) -> "VariantSpec":
        """This spec with its kernel chosen for `batch` rows per decode step (only where the entry
        chooses its kernel by measurement; any other spec is returned as it is)."""
        if not self.entry.kernel_by_batch or batch == self.decode_rows:
            return self
        return dataclasses.replace(self, decode_rows=batch)

    def rechooses_kernel_for(self, batch: int, device_type: str) -> bool:
        """True where a model prepared for this spec on `device_type` would run another kernel at `batch`."""
        return self.entry.kernel_by_batch and device_type == "cuda" and batch != self.decode_rows

    def apply(self, model, ctx: ApplyContext) -> ApplyResult:
        return self.entry.apply(model, ctx)

    def unsupported_reason(self, device_type: str, compute_capability, profile=None) -> str | None:
        return self.entry.unsupported_reason(device_type, compute_capability, profile)


def explicit_kernels(fmt: str) -> list[str]:
    """`int4-wo[tinygemm]`, ...: the explicit kernels of a format that chooses its kernel per batch
    (Variant.kernel_by_batch); [] for any other name."""
    entry = REGISTRY.get(fmt)
    if entry is None or not entry.kernel_by_batch:
        return []
    return [n for n, e in REGISTRY.items() if e.kernel_of == fmt]


def valid_names() -> str:
    return (f"variants: {', '.join(REGISTRY)}; optional policy suffixes: "
            f"{', '.join('@' + p for p in POLICIES)} or @path/to/policy.txt (e.g. int4-wo@keep-attn)")


def _split(text: str) -> tuple[str, list[str]]:
    base, *suffixes = text.strip().split("@")
    return base, suffixes


def _entry(base: str) -> Variant:
    try:
        return REGISTRY[base]
    except KeyError:
        raise UnknownVariantError(f"unknown variant {base!r}; {valid_names()}") from None


def _policy(suffix: str, text: str) -> Policy:
    if suffix in POLICIES:
        return POLICIES[suffix]
    try:
        return Policy.from_file(Path(suffix))
    except PolicyError as e:
        raise UnknownVariantError(f"unknown policy '@{suffix}' in {text.strip()!r}: {e}") from None


def parse_variant(text: str) -> VariantSpec:
    """One variant name -> its spec. Unknown names and missing policy files raise UnknownVariantError."""
    base, suffixes = _split(text)
    entry = _entry(base)
    return VariantSpec(text.strip(), entry, Policy.union([_policy(s, text) for s in suffixes]))


def parse_variants(text: str) -> list[VariantSpec]:
    """Comma-separated names in the order given, duplicates dropped; 'all' alone: every registered
    variant in registry order."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UnknownVariantError(f"no variants given; {valid_names()}, or '{ALL}'")
    if names == [ALL]:
        names = variant_names()
    return [parse_variant(n) for n in dict.fromkeys(names)]


def variant_names() -> list[str]:
    """Every registered variant except explicit kernel choices (`int4-wo[cutlass]`), in registry order:
    what 'all' expands to. The format's own entry (`int4-wo`) already runs the fastest measured kernel."""
    return [n for n, v in REGISTRY.items() if v.kernel_of is None]


# -- the names older call sites use, over the specs ----------------------------------------------------
def get_variant(name: str) -> Variant:
    """The registry entry of a name; `base@policy` names resolve to the base entry."""
    return _entry(_split(name)[0])


def split_policy(name: str) -> tuple[str, str | None]:
    base, suffixes = _split(name)
    return base, ("@".join(suffixes) if suffixes else None)


def policy_for(name: str, num_layers: int | None = None) -> Policy | None:
    """The policy named after '@' in a variant name, bound to `num_layers`, or None."""
    return parse_variant(name).policy_for(num_layers)


def parse_variant_list(text: str) -> list[str]:
    """'baseline,int8-wo' or 'all' -> the names, validated (policy files included)."""
    return [s.name for s in parse_variants(text)]


def compute_format(name: str, baseline_format: str) -> str:
    """The format a variant's matmuls run in, for MFU peaks: its layout's, or the baseline format."""
    return get_variant(name).compute_format(baseline_format)
