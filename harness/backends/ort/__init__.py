"""ONNX Runtime backend: the model exported with onnxruntime-genai's model builder, run by
onnxruntime-genai's token loop on the profile's execution provider.

Why this route: the model builder is what Microsoft and the ONNX Runtime docs use to ship LLMs
(Microsoft's Phi ONNX releases on the Hugging Face hub are its output). It writes the graph
ONNX Runtime's LLM kernels are tuned for (GroupQueryAttention with a shared past/present KV buffer,
fused rotary embedding, SkipSimplifiedLayerNormalization, MatMulNBits for int4/int8 weights) plus the
genai_config.json that onnxruntime-genai's Generator reads. The PyTorch exporter (torch.onnx /
optimum) gives plain MatMul + attention subgraphs, which would measure a graph nobody deploys; it is
the fallback only for architectures the builder refuses (not implemented here: such a model is an
`unsupported` cell with the builder's own message). GGUF models go through a local Hugging Face folder
(save_pretrained) because the builder's own GGUF reader takes only float16/float32 GGUF files, and
the embedded SmolLM2 is Q4_1.

Variants (see recipes.py): baseline (fp32), int8-wo / int8-dq (builder int8: MatMulNBits 8-bit with
fp32 or int8 activations), int4-wo (builder int4: MatMulNBits, block 128 or 32, fp32 or int8
activations), int8-static (onnxruntime.quantization static QDQ, calibrated on corpus text: the builder
has no static mode).
"""
from harness.backends.ort.backend import OrtBackend, OrtPrepared, OrtUnsupported, UnknownKernelError
from harness.backends.ort.config import OrtSettings
from harness.backends.ort.eps import UnknownEpError

__all__ = ["OrtBackend", "OrtPrepared", "OrtSettings", "OrtUnsupported", "UnknownEpError", "UnknownKernelError"]
