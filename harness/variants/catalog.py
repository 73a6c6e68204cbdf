"""Every registered variant: name, description, requirements, storage layout, and where its apply and
probe live. Registry order is the order `all` expands to. No torch here: the "module:function" names
are imported on first use (registry.resolve).

Every apply() uses a real kernel path, never a Python dequantize-then-matmul stand-in, reports the
tensor type that now holds the weights, and counts the layers it changed (registry.ApplyResult).
"""
from __future__ import annotations

from harness.variants import layout as L
from harness.variants.registry import Requirements, Variant, register

# tinygemm's CUDA int4 kernel (`aten._weight_int4pack_mm`) is built for sm_80 and newer.
INT4_CUDA_CC = (8, 0)
# fp8 tensor cores: Ada (8.9) and Hopper (9.0); torchao asserts the same bound for fp8 dynamic.
FP8_CC = (8, 9)
MIN_CC_24 = (8, 0)        # sparse tensor cores arrived with Ampere (sm_80)
# A GemLite linear called on more rows than this (a prefill) dequantizes its weights and runs cuBLAS
# (harness/variants/gemlite.py, which says where the figure comes from); up to it, GemLite's own kernels
GEMLITE_PREFILL_MIN_ROWS = 256
MIN_CC_FP8_24 = (9, 0)    # torchao builds its fp8 2:4 kernel for sm_90a only
NO_GPU_NOTE = ("torch's 2:4 semi-structured kernels (cuSPARSELt, CUTLASS) are CUDA-only; "
               "wanda.apply_24_mask_dense measures the masks' quality with dense kernels")

INT4_REQUIRES = Requirements(devices=("cpu", "cuda"), min_compute_capability=INT4_CUDA_CC)
FP8_REQUIRES = Requirements(devices=("cuda",), min_compute_capability=FP8_CC, needs_torchao=True, feature="fp8")
_GPU_24 = dict(devices=("cuda",), min_compute_capability=MIN_CC_24, feature="sparse_2to4")

_Q = "harness.variants.quant:"
_S = "harness.variants.sparse:"

register(Variant("baseline", "unquantized: bf16 on GPU (fp16 where bf16 is absent), fp32 on CPU",
                 Requirements(), "harness.variants.builtin:apply_baseline", layout=L.DENSE, changes_weights=False))

# -- quantization (quant.py) ---------------------------------------------------------------------------
register(Variant("int8-wo", "int8 weight-only, per-channel scales (torchao Int8WeightOnlyConfig)",
                 Requirements(needs_torchao=True), _Q + "apply_int8_wo", probe=_Q + "probe_int8_wo",
                 layout=L.INT8_WO))
register(Variant("int8-dq", "int8 dynamic per-token activations x int8 per-channel weights "
                            "(torchao Int8DynamicActivationInt8WeightConfig)",
                 Requirements(needs_torchao=True), _Q + "apply_int8_dq", probe=_Q + "probe_int8_dq",
                 layout=L.INT8_DQ))
register(Variant("int4-wo", "int4 weight-only, round-to-nearest, group 128 (CUDA: the fastest of tinygemm, "
                            "CUTLASS and GemLite measured at the model's shapes and the cell's batch; CPU: torch "
                            "aten._weight_int4pack_mm_for_cpu)",
                 INT4_REQUIRES, _Q + "apply_int4_wo", probe=_Q + "probe_int4_wo", layout=L.INT4_WO,
                 kernel_by_batch=True))
register(Variant("int4-awq", "int4 weight-only g128 after AWQ activation-aware channel scaling "
                             "(calibrated on corpus tokens, folded into the preceding ops)",
                 INT4_REQUIRES, _Q + "apply_int4_awq", probe=_Q + "probe_int4_wo", layout=L.INT4_WO))
register(Variant("fp8-wo", "fp8 e4m3 weight-only (the faster of torchao Float8WeightOnlyConfig and GemLite's "
                           "fp8 kernel, measured at the model's shapes and the cell's batch)",
                 FP8_REQUIRES, _Q + "apply_fp8_wo", probe=_Q + "probe_fp8_wo", layout=L.FP8_WO,
                 kernel_by_batch=True))
register(Variant("fp8-dq", "fp8 e4m3 dynamic per-row activations x fp8 per-row weights "
                           "(torchao Float8DynamicActivationFloat8WeightConfig, PerRow)",
                 FP8_REQUIRES, _Q + "apply_fp8_dq", probe=_Q + "probe_fp8_dq", layout=L.FP8_DQ))
# fp8 x int4 kernels in torchao 0.18 come from the mslk package (preshuffled WGMMA kernels for sm_90);
# the probe reports its absence in torchao's own words.
register(Variant("w4a8", "int4 weights x fp8 dynamic activations (torchao Float8DynamicActivationInt4WeightConfig)",
                 Requirements(devices=("cuda",), min_compute_capability=(9, 0), needs_torchao=True, feature="fp8"),
                 _Q + "apply_w4a8", probe=_Q + "probe_w4a8", layout=L.W4A8))

# -- sparsity (sparse.py) ------------------------------------------------------------------------------
register(Variant("sparse-2:4", "2:4 semi-structured sparsity, magnitude mask (2 largest |w| of every 4 "
                               "inputs), cuSPARSELt (CUTLASS on sm_8x without it)",
                 Requirements(**_GPU_24), _S + "apply_24_magnitude", probe=_S + "probe_24",
                 no_kernel_note=NO_GPU_NOTE, layout=L.SPARSE_24))
register(Variant("sparse-2:4-wanda", "2:4 semi-structured sparsity, Wanda mask (|W| x input-channel L2 norm "
                                     "on the calibration tokens), same kernels as sparse-2:4",
                 Requirements(**_GPU_24), _S + "apply_24_wanda", probe=_S + "probe_24",
                 no_kernel_note=NO_GPU_NOTE, fusable=False, layout=L.SPARSE_24))
register(Variant("unstructured-50", "50% unstructured magnitude pruning (per output row) on dense kernels "
                                    "(quality and compressibility; no speed claim)",
                 Requirements(), _S + "apply_unstructured", layout=L.UNSTRUCTURED))
register(Variant("sparse-2:4+fp8-dq", "2:4 magnitude sparsity + fp8 e4m3 per-row weights and per-token "
                                      "dynamic activations (torchao CUTLASS sm_90a kernel)",
                 Requirements(**{**_GPU_24, "min_compute_capability": MIN_CC_FP8_24}, needs_torchao=True),
                 _S + "apply_fp8_24", probe=_S + "probe_fp8_24", no_kernel_note=NO_GPU_NOTE,
                 layout=L.SPARSE_24_FP8_DQ))
register(Variant("sparse-2:4+int8-dq", "2:4 magnitude sparsity + int8 per-row weights and per-token dynamic "
                                       "activations (cuSPARSELt int8 via torch._cslt_sparse_mm)",
                 Requirements(**_GPU_24, needs_torchao=True), _S + "apply_int8_24", probe=_S + "probe_int8_24",
                 no_kernel_note=NO_GPU_NOTE, layout=L.SPARSE_24_INT8_DQ))

# -- explicit kernels of a format (gpu_kernels.py): `int4-wo[cutlass]`; left out of `all` ------------------
_K = "harness.variants.quant:"
for _fmt, _layout, _req, _kernels in (("int4-wo", L.INT4_WO, Requirements(devices=("cuda",), min_compute_capability=
                                        INT4_CUDA_CC, needs_torchao=True), ("tinygemm", "cutlass", "gemlite")),
                                       ("fp8-wo", L.FP8_WO, FP8_REQUIRES, ("torchao", "gemlite"))):
    for _k in _kernels:
        register(Variant(f"{_fmt}[{_k}]", f"{_fmt} through the {_k} kernel only (harness.variants.gpu_kernels)",
                         _req, f"{_K}apply_{_fmt.replace('-', '_')}_{_k}", probe=f"{_K}probe_{_fmt.replace('-', '_')}_{_k}",
                         layout=_layout, kernel_of=_fmt))

# -- llama.cpp GGUF types (harness/backends/llamacpp) ------------------------------------------------------
# Registered here so that the names parse and plan like any other; only the llama.cpp backend has a
# recipe for them. On the torch backends they are `unsupported` rows that say where they run.
_GGUF = Requirements(devices=("llama.cpp",))
_GGUF_ONLY = "harness.variants.builtin:apply_gguf_only"
_GGUF_NOTE = "a llama.cpp GGUF type: run it with --backends llama.cpp"
for _name, _desc, _layout in (
        ("gguf-native", "the model's own GGUF file run natively by llama.cpp, in its own tensor types "
                        "(the embedded SmolLM2: Q4_1)", L.GGUF_Q4_1),
        ("q8_0", "llama.cpp Q8_0: int8 blocks of 32 with an fp16 scale (llama_model_quantize)", L.GGUF_Q8_0),
        ("q4_0", "llama.cpp Q4_0: int4 blocks of 32 with an fp16 scale (llama_model_quantize)", L.GGUF_Q4_0),
        ("q4_k_m", "llama.cpp Q4_K_M: Q4_K super-blocks of 256, some tensors Q6_K (llama_model_quantize)",
         L.GGUF_Q4_K_M)):
    register(Variant(_name, _desc, _GGUF, _GGUF_ONLY, no_kernel_note=_GGUF_NOTE, layout=_layout))
