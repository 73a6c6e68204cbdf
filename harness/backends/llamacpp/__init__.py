"""llama.cpp backend (`--backends llama.cpp`, the `llama` extra): GGUF files run natively by
llama-cpp-python 0.3.36 (pinned; it compiles llama.cpp from source on install), the way edge users run
them, with the same meters, timed region and quality reference as the torch rows.

Variants, and how they line up with the torch / ORT names:
- `baseline`: the source GGUF dequantized to an F32 GGUF: the same fp32 values the torch baseline runs
  (transformers dequantizes the GGUF with the same gguf.quants code), so its greedy tokens and logits
  should match torch fp32's; the one name shared with the torch and ORT rows.
- `gguf-native`: the source file as shipped, in its own types (the embedded SmolLM2: Q4_1, plus one
  Q8_0 tensor and F32 norms), never dequantized.
- `q8_0`, `q4_0`, `q4_k_m`: llama.cpp's quantizer (llama_model_quantize) run on the F32 copy.

Mapping chosen: llama.cpp's own types keep their own names; `int8-wo` / `int4-wo` (and int8-dq,
int4-awq, int8-static) are `unsupported` here, with the nearest llama.cpp type in the reason. Why not
alias int8-wo -> q8_0 and int4-wo -> q4_0: on the CPU, ggml's matmul quantizes each activation row to
8 bits (Q8_0 / Q8_1 / Q8_K blocks, the weight type's vec_dot_type) and multiplies int8 x int8, so no
llama.cpp quantized row is weight-only; and its scales are per block of 32 (or 256-weight K-quant
super-blocks with 6-bit sub-scales) where torch's int8-wo is per channel and int4-wo per group of 128.
A row under a torch name would claim a kernel it does not run. Nearest rows, for a comparison table:
q8_0 ~ int8-dq (W8A8 dynamic; per-block rather than per-channel/per-token scales); q4_0 ~ ORT int4-wo
kernel block32-int8act (int4 block 32 x int8 activations); q4_k_m ~ int4-wo in storage (4.5-4.9 bits
per weight) and the common 4-bit choice the issue names.

Q4_K_M on SmolLM2: hidden size 576 is not a multiple of Q4_K's 256-weight super-block, so llama.cpp's
quantizer falls back to another type for those tensors; the record's kernel and weights note list the
types the file really holds (gguf_io.tensor_census), never just the requested name.
"""
from harness.backends.llamacpp.cell import NOT_INSTALLED, LlamaCppCellBackend, LlamaCppPrepared, unsupported_reason

__all__ = ["NOT_INSTALLED", "LlamaCppCellBackend", "LlamaCppPrepared", "unsupported_reason"]
