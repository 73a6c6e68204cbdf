"""What each ONNX Runtime variant is, as data: how it is built, which kernels it may pick, which EPs run it.

Names share the torch rows' namespace, so a report can put `int4-wo` (torch) beside `int4-wo` (ort).
The builder's MatMulNBits `accuracy_level` sets the activation precision of the quantized matmul
(onnxruntime-genai 0.18 builder help): 1 = fp32, 4 = int8 (the activation is quantized per block at
run time, i.e. dynamic int8). Level 4 is a CPU EP (MLAS) kernel; other EPs compute in floating point
("Default is 4 for the CPU EP and 0 for non-CPU EPs"), so a variant that promises int8 activations
lists the CPU EP only.

int8-static destroys quality on SmolLM2-135M, and the cause is measured (bench/ort_qdq_probe.py, against
the ORT fp32 graph's own logits, 2 x 128 corpus-head tokens; 2026-12-01, onnxruntime 1.32.0): static QDQ
gives each MatMul input one u8 scale per tensor, and the down_proj inputs (SiLU(gate) * up) carry
massive activations: MinMax ranges of [-17, 3070] (layer 11), [-91, 2374] (layer 28) and [-326, 478]
(layer 29) against a median range of 10.3 over the 121 MatMul inputs, i.e. a u8 step of 12.1 where most
values are of order 1 and round to the zero point. Measured with onnxruntime.quantization's own options:
the recipe (MinMax, asymmetric u8 activations, s8 per-channel weights) KL 1.43 nats, top-1 39%; 99.999th
percentile calibration KL 1.24 (the outliers are clipped instead, and they matter); lm_head left in
fp32 KL 1.29; every down_proj left in fp32 KL 0.14 (top-1 80%), down_proj and lm_head KL 0.11, both
still over the quality guard's 0.05; 16-bit activations (QUInt16 with the com.microsoft Q/DQ ops) KL
0.0098, top-1 95%, but the CPU EP has no integer kernel for them (the QDQ pairs run as float), so that
is not an int8 speed path. ONNX Runtime does not quantize activations per channel; its SmoothQuant
option (which moves the outliers into the weights) needs Intel Neural Compressor, not a dependency
here. Through the harness's own quality path (768 corpus positions, against the torch fp32 log-probs)
the recipe's build scored KL 1.30, top-1 46%, perplexity 52.8 (fp32 ORT: 14.86, KL 3e-8); an earlier
KL of 11.7 was not reproduced with this build. So the recipe stays the standard one, is not in the
default sweep (nor in the variant registry `harness run --variants` reads), and every record of it
carries QDQ_STATIC_CAVEAT beside its failing quality verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

CPU_EP = "CPUExecutionProvider"
# EPs the model builder can target (its -e choices: cpu, cuda, dml, webgpu, NvTensorRtRtx).
BUILDER_EPS = (CPU_EP, "CUDAExecutionProvider", "DmlExecutionProvider", "WebGpuExecutionProvider",
               "NvTensorRTRTXExecutionProvider")
# Static QDQ calibration: sequences x tokens from the corpus tail (the head is quality's evaluation text).
CALIBRATION_SEQS, CALIBRATION_TOKENS = 8, 128
QDQ_STATIC_CAVEAT = ("static per-tensor int8 activations: LLM down_proj inputs carry massive outliers (SmolLM2-135M: "
                     "MinMax range up to 3070 vs a median of 10), so ordinary activations round to zero; expect "
                     "quality to fail (measured cause: harness/backends/ort/recipes.py)")


@dataclass(frozen=True)
class Kernel:
    """One way to run a variant. The name is what a record shows as the kernel choice."""
    name: str
    block_size: int | None = None        # MatMulNBits block along K (input channels)
    accuracy_level: int | None = None    # MatMulNBits activation precision, see the module docstring

    @property
    def cpu_only(self) -> bool:
        return self.accuracy_level == 4

    def builder_options(self) -> list[str]:
        opts = []
        if self.block_size is not None:
            opts.append(f"block_size={self.block_size}")
        if self.accuracy_level is not None:
            opts.append(f"accuracy_level={self.accuracy_level}")
        return opts


@dataclass(frozen=True)
class Recipe:
    variant: str
    method: str                    # "builder": the model builder quantizes; "qdq-static": onnxruntime.quantization
    precision: str                 # the builder's -p (qdq-static starts from the builder's fp32 model)
    kernels: tuple[Kernel, ...]    # the first one is the default
    eps: tuple[str, ...]           # EPs with a kernel for it
    label: str                     # kernel description; {block} {acc} filled from the kernel
    ep_note: str = ""              # why other EPs are left out
    caveat: str = ""               # a measured limitation every record of the variant carries

    def kernel(self, name: str | None) -> Kernel:
        if name is None:
            return self.kernels[0]
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(f"{self.variant}: unknown kernel {name!r}; choices: {', '.join(k.name for k in self.kernels)}")

    def ep_reason(self, kernel: Kernel, ep: str) -> str | None:
        """Why this kernel has no implementation on `ep`, or None."""
        if ep not in self.eps:
            note = self.ep_note or "the model builder targets " + ", ".join(self.eps)
            return f"{self.variant}: no recipe for {ep} ({note})"
        if kernel.cpu_only and ep != CPU_EP:
            return (f"{self.variant} ({kernel.name}): int8 activations (accuracy_level 4) are a CPU EP kernel; "
                    f"{ep} computes MatMulNBits in floating point")
        return None

    def kernel_label(self, kernel: Kernel, ep: str) -> str:
        acc = {1: "fp32 activations (accuracy_level 1)", 4: "int8 activations (accuracy_level 4)"}
        text = self.label.format(block=kernel.block_size, acc=acc.get(kernel.accuracy_level, ""))
        return f"onnxruntime {text} ({ep.removesuffix('ExecutionProvider')} EP)"


def _blocks(level: int) -> tuple[Kernel, ...]:
    return (Kernel("block128", 128, level), Kernel("block32", 32, level))


RECIPES: dict[str, Recipe] = {r.variant: r for r in [
    Recipe("baseline", "builder", "fp32", (Kernel("fp32"),), BUILDER_EPS, "fp32 MatMul"),
    Recipe("int8-wo", "builder", "int8", _blocks(1), BUILDER_EPS, "MatMulNBits int8 block {block}, {acc}"),
    Recipe("int8-dq", "builder", "int8", _blocks(4), BUILDER_EPS, "MatMulNBits int8 block {block}, {acc}"),
    Recipe("int4-wo", "builder", "int4", _blocks(1) + (Kernel("block128-int8act", 128, 4),
                                                         Kernel("block32-int8act", 32, 4)),
           BUILDER_EPS, "MatMulNBits int4 block {block}, {acc}"),
    Recipe("int8-static", "qdq-static", "fp32", (Kernel("qdq-minmax"),), (CPU_EP,),
           f"QDQ int8 static (MinMax over {CALIBRATION_SEQS}x{CALIBRATION_TOKENS} corpus-tail tokens; "
           "s8 per-channel weights, u8 per-tensor activations) on MatMul",
           ep_note="QDQ int8 matmuls fuse to integer kernels on the CPU EP; other EPs need their own QDQ recipe",
           caveat=QDQ_STATIC_CAVEAT),
]}
