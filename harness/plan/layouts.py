"""Storage layouts of the compression variants, as data: what a variant stores per weight, what it
computes in, and what hardware it needs. The planner counts bytes and FLOPs from these entries.

Bytes of one quantized linear weight of shape (out_features, in_features):

    values   = in * out * kept_fraction * value_bits / 8
    metadata = in * out * kept_fraction * meta_bits_per_kept / 8
    scales   = out * groups * scale_bytes_per_group,  groups = ceil(in / group_size), or 1 per output
               channel when group_size is None

- int4 g128 (int4-wo, int4-awq, w4a8): 4 bits per weight + a bf16 scale and a bf16 zero point per group
  of 128 inputs: 0.5 + 4/128 = 0.53125 bytes per weight.
- int8 (int8-wo, int8-dq): 1 byte per weight + one bf16 scale per output channel.
- fp8 e4m3 (fp8-wo, fp8-dq): 1 byte per weight + one fp32 scale per output channel (torchao's float8
  scales are fp32).
- 2:4: half the values are kept; each kept value carries a 2-bit position inside its group of four
  (the cuSPARSELt / CUTLASS metadata: 16 bits per 8 kept values), so
  bytes = in * out / 2 * (value_bits + 2) / 8 = 0.5625 x dense at bf16, 0.3125 x bf16 at fp8/int8.
- unstructured-50: dense storage, dense kernels; no memory or speed gain is projected.

Never quantized: the embedding table (a lookup; it stays in the baseline format) and norms/biases.
The lm_head takes the variant's quantization (never its sparsity) unless it is tied to the embedding
or a policy keeps it. Layers a policy keeps stay in the baseline format (2 bytes on GPU).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

BASELINE = None  # value_bits / compute_format: "the profile's baseline format" (bf16 on GPU, fp32 on CPU)
FORMAT_BITS = {"fp32": 32, "bf16": 16, "fp16": 16}


class VariantError(ValueError):
    """An unknown variant or policy name, with the valid names."""


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    value_bits: int | None          # bits per stored weight value; None = baseline format
    compute_format: str | None      # format the matmul runs in; None = baseline format (weight-only)
    requires: tuple[str, ...] = ()  # profile features that must be True
    group_size: int | None = None   # None = one scale set per output channel
    scale_bytes_per_group: float = 0.0
    kept_fraction: float = 1.0
    meta_bits_per_kept: float = 0.0
    sparse_kernels: bool = False    # prefill may use the hardware's 2:4 sparse rate
    note: str = ""

    def value_bits_for(self, baseline_format: str) -> int:
        return self.value_bits if self.value_bits is not None else FORMAT_BITS[baseline_format]

    def compute_for(self, baseline_format: str) -> str:
        return self.compute_format or baseline_format

    def linear_bytes(self, in_features: int, out_features: int, baseline_format: str) -> float:
        n = in_features * out_features
        values = n * self.kept_fraction * self.value_bits_for(baseline_format) / 8
        meta = n * self.kept_fraction * self.meta_bits_per_kept / 8
        groups = -(-in_features // self.group_size) if self.group_size else 1
        return values + meta + out_features * groups * self.scale_bytes_per_group

    def dense(self) -> "Layout":
        """The same quantization without pruning (for the lm_head, which is never pruned)."""
        return replace(self, kept_fraction=1.0, meta_bits_per_kept=0.0, sparse_kernels=False)


_INT4_G128 = dict(value_bits=4, group_size=128, scale_bytes_per_group=4.0)   # bf16 scale + bf16 zero
_INT8_PC = dict(value_bits=8, scale_bytes_per_group=2.0)                      # bf16 scale per channel
_FP8_PC = dict(value_bits=8, scale_bytes_per_group=4.0)                       # fp32 scale per channel
_2TO4 = dict(kept_fraction=0.5, meta_bits_per_kept=2.0, sparse_kernels=True)
_SPARSE_NOTE = "roofline ceiling; on the lab H100, cuSPARSELt 2:4 was slower than dense at decode sizes"

LAYOUTS: dict[str, Layout] = {x.name: x for x in (
    Layout("baseline", "unquantized: bf16 on GPU profiles, fp32 on CPU profiles", BASELINE, BASELINE),
    Layout("int8-wo", "int8 per-channel weights, bf16 scale per output channel; bf16 compute", compute_format=BASELINE, **_INT8_PC),
    Layout("int4-wo", "int4 weights, group 128, bf16 scale + zero per group; bf16 compute",
           compute_format=BASELINE, requires=("int4_weight_kernels",), **_INT4_G128),
    Layout("int4-awq", "AWQ int4 (same layout as int4-wo: g128, scale + zero per group)",
           compute_format=BASELINE, requires=("int4_weight_kernels",), **_INT4_G128),
    Layout("fp8-wo", "fp8 e4m3 weights, fp32 scale per output channel; bf16 compute",
           compute_format=BASELINE, requires=("fp8",), **_FP8_PC),
    Layout("fp8-dq", "fp8 e4m3 weights + dynamic per-row fp8 activations; fp8 matmul",
           compute_format="fp8", requires=("fp8",), **_FP8_PC),
    Layout("w4a8", "int4 g128 weights + dynamic fp8 activations; fp8 matmul",
           compute_format="fp8", requires=("fp8", "int4_weight_kernels"), **_INT4_G128),
    Layout("int8-dq", "W8A8: int8 per-channel weights + dynamic int8 activations; int8 matmul",
           compute_format="int8", requires=("int8",), **_INT8_PC),
    Layout("sparse-2:4", "2:4 magnitude pruning: half the values + 2-bit index per kept value",
           BASELINE, BASELINE, requires=("sparse_2to4",), note=_SPARSE_NOTE, **_2TO4),
    Layout("sparse-2:4-wanda", "2:4 Wanda pruning (same layout as sparse-2:4)",
           BASELINE, BASELINE, requires=("sparse_2to4",), note=_SPARSE_NOTE, **_2TO4),
    Layout("unstructured-50", "50% unstructured pruning: dense storage, dense kernels", BASELINE, BASELINE,
           note="dense storage and kernels: no memory or speed gain projected"),
    Layout("sparse-2:4+fp8-dq", "2:4 + fp8 e4m3 values (2-bit index per kept value) + fp8 activations",
           compute_format="fp8", requires=("sparse_2to4", "fp8"), note=_SPARSE_NOTE, **_FP8_PC, **_2TO4),
    Layout("sparse-2:4+int8-dq", "2:4 + int8 values (2-bit index per kept value) + int8 activations",
           compute_format="int8", requires=("sparse_2to4", "int8"), note=_SPARSE_NOTE, **_INT8_PC, **_2TO4),
)}


@dataclass(frozen=True)
class Policy:
    """Layers kept in the baseline format whatever the variant stores elsewhere."""

    name: str
    description: str
    keep_linears: frozenset[str] = frozenset()   # names from ArchShape.linear_shapes()
    keep_end_blocks: bool = False                # first and last decoder blocks
    keep_lm_head: bool = False


POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("keep-attn", "attention projections (q, k, v, o) stay in the baseline format",
           keep_linears=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})),
    Policy("keep-ends", "first and last decoder blocks and the lm_head stay in the baseline format",
           keep_end_blocks=True, keep_lm_head=True),
)}


@dataclass(frozen=True)
class Variant:
    name: str                       # as written: "int4-wo@keep-attn"
    layout: Layout
    policies: tuple[Policy, ...] = ()

    def keeps(self, linear: str, block: int, num_blocks: int) -> bool:
        return any(linear in p.keep_linears or (p.keep_end_blocks and block in (0, num_blocks - 1))
                   for p in self.policies)

    @property
    def keeps_lm_head(self) -> bool:
        return any(p.keep_lm_head for p in self.policies)


def valid_names() -> str:
    return (f"variants: {', '.join(LAYOUTS)}; optional policy suffixes: "
            f"{', '.join('@' + p for p in POLICIES)} (e.g. int4-wo@keep-attn)")


def parse_variant(text: str) -> Variant:
    name, *suffixes = text.strip().split("@")
    if name not in LAYOUTS:
        raise VariantError(f"unknown variant {name!r}; {valid_names()}")
    pols = []
    for s in suffixes:
        if s not in POLICIES:
            raise VariantError(f"unknown policy '@{s}' in {text!r}; {valid_names()}")
        pols.append(POLICIES[s])
    return Variant(text.strip(), LAYOUTS[name], tuple(pols))


def parse_variants(text: str) -> list[Variant]:
    """Comma-separated names, in the order given, duplicates dropped."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise VariantError(f"no variant given; {valid_names()}")
    return [parse_variant(n) for n in dict.fromkeys(names)]

