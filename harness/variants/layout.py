"""Storage layouts, as data: what a variant stores per weight, what it computes in, and what hardware it
needs. Each registry entry (catalog.py) carries one; the planner counts bytes and FLOPs from it and the
GPU meters take the MFU peak from its compute format. No torch here.

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

Never quantized, except by the llama.cpp GGUF types (quantizes_embedding): the embedding table (a
lookup; it stays in the baseline format) and norms/biases.
The lm_head takes the variant's quantization (never its sparsity) unless it is tied to the embedding
or a policy keeps it. Layers a policy keeps stay in the baseline format (2 bytes on GPU).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

BASELINE = None  # value_bits / compute_format: "the profile's baseline format" (bf16 on GPU, fp32 on CPU)
FORMAT_BITS = {"fp32": 32, "bf16": 16, "fp16": 16}


@dataclass(frozen=True)
class Layout:
    description: str
    value_bits: int | None          # bits per stored weight value; None = baseline format
    compute_format: str | None      # format the matmul runs in; None = baseline format (weight-only)
    requires: tuple[str, ...] = ()  # profile features (profiles/schema.py FEATURES) that must be True
    group_size: int | None = None   # None = one scale set per output channel
    scale_bytes_per_group: float = 0.0
    kept_fraction: float = 1.0
    meta_bits_per_kept: float = 0.0
    sparse_kernels: bool = False    # prefill may use the hardware's 2:4 sparse rate
    quantizes_embedding: bool = False   # the embedding table is stored at this type too (llama.cpp's GGUF types)
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

DENSE = Layout("unquantized: bf16 on GPU profiles, fp32 on CPU profiles", BASELINE, BASELINE)
INT8_WO = Layout("int8 per-channel weights, bf16 scale per output channel; bf16 compute",
                 compute_format=BASELINE, **_INT8_PC)
INT4_WO = Layout("int4 weights, group 128, bf16 scale + zero per group; bf16 compute",
                 compute_format=BASELINE, requires=("int4_weight_kernels",), **_INT4_G128)
FP8_WO = Layout("fp8 e4m3 weights, fp32 scale per output channel; bf16 compute",
                compute_format=BASELINE, requires=("fp8",), **_FP8_PC)
FP8_DQ = Layout("fp8 e4m3 weights + dynamic per-row fp8 activations; fp8 matmul",
                compute_format="fp8", requires=("fp8",), **_FP8_PC)
W4A8 = Layout("int4 g128 weights + dynamic fp8 activations; fp8 matmul",
              compute_format="fp8", requires=("fp8", "int4_weight_kernels"), **_INT4_G128)
INT8_DQ = Layout("W8A8: int8 per-channel weights + dynamic int8 activations; int8 matmul",
                 compute_format="int8", requires=("int8",), **_INT8_PC)
SPARSE_24 = Layout("2:4 pruning: half the values + 2-bit index per kept value", BASELINE, BASELINE,
                   requires=("sparse_2to4",), note=_SPARSE_NOTE, **_2TO4)
UNSTRUCTURED = Layout("50% unstructured pruning: dense storage, dense kernels", BASELINE, BASELINE,
                      note="dense storage and kernels: no memory or speed gain projected")
SPARSE_24_FP8_DQ = Layout("2:4 + fp8 e4m3 values (2-bit index per kept value) + fp8 activations",
                          compute_format="fp8", requires=("sparse_2to4", "fp8"), note=_SPARSE_NOTE,
                          **_FP8_PC, **_2TO4)
SPARSE_24_INT8_DQ = Layout("2:4 + int8 values (2-bit index per kept value) + int8 activations",
                           compute_format="int8", requires=("sparse_2to4", "int8"), note=_SPARSE_NOTE,
                           **_INT8_PC, **_2TO4)

# llama.cpp GGUF types (harness/backends/llamacpp): block scales are fp16, and the embedding table is
# quantized like the linears (llama-quantize does, unlike the torch variants); ggml's CPU dot products
# quantize the activation row to Q8_0 / Q8_1 / Q8_K, so the matmul is int8 x int8 (compute "int8"; no
# profile feature is required: ggml has a scalar path). The planner counts the linears at the type;
# llama.cpp also quantizes the embedding and may fall back to another type for a tensor whose rows are
# not a multiple of the block (the record's weights note lists the file's real types).
_GGUF_NOTE = "llama.cpp GGUF type: runs on --backends llama.cpp only"
GGUF_Q8_0 = Layout("GGUF Q8_0: int8 values, fp16 scale per block of 32; x Q8_0 activations", 8, "int8",
                   group_size=32, scale_bytes_per_group=2.0, quantizes_embedding=True, note=_GGUF_NOTE)
GGUF_Q4_0 = Layout("GGUF Q4_0: int4 values, fp16 scale per block of 32; x Q8_0 activations", 4, "int8",
                   group_size=32, scale_bytes_per_group=2.0, quantizes_embedding=True, note=_GGUF_NOTE)
GGUF_Q4_1 = Layout("GGUF Q4_1: int4 values, fp16 scale + fp16 min per block of 32; x Q8_1 activations", 4, "int8",
                   group_size=32, scale_bytes_per_group=4.0, quantizes_embedding=True,
                   note=_GGUF_NOTE + "; projected as Q4_1 (the embedded "
                   "default's own type), other files keep theirs")
# Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins (12 bytes) + fp16 d, dmin
# (4 bytes): 144 bytes per 256 weights, 4.5 bits; Q4_K_M keeps about half of attn_v / ffn_down in Q6_K.
GGUF_Q4_K_M = Layout("GGUF Q4_K_M: Q4_K super-blocks of 256 (16 bytes of scales/mins each), some tensors Q6_K; "
                     "x Q8_K activations", 4, "int8", group_size=256, scale_bytes_per_group=16.0,
                     quantizes_embedding=True,
                     note=_GGUF_NOTE + "; projected as Q4_K throughout (the Q6_K share is not counted)")
