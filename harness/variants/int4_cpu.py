"""int4 weight-only linear layers on CPU through torch's own kernel, `aten._weight_int4pack_mm_for_cpu`.

torchao 0.18 has no working CPU int4 weight-only path (its `tile_packed_to_4d` packing needs CUDA,
`plain_int32` refuses CPU), so the CPU side of `int4-wo` / `int4-awq` swaps each nn.Linear for
`Int4PackedLinearCPU`, which holds the packed weight and calls the kernel in forward.

Numerics follow tinygemm (the scheme torchao's `Int4WeightOnlyConfig` uses on CUDA, so both devices
quantize alike): asymmetric per group of `group_size` input channels along K, q in [0, 15],
    w ~ (q - 8) * scale + zero,   scale = (max - min) / 15,   zero = min + 8 * scale.
Kernel facts (torch 2.13, probed on this machine's AVX-512 CPU):
  - `_convert_weight_to_int4pack_for_cpu(int32 (N, K), 1)` -> uint8 (N, K/2); N must divide by 16.
  - `_weight_int4pack_mm_for_cpu(x (M, K) contiguous, packed, group, scales_and_zeros (K/g, N, 2))`;
    scales_and_zeros must have x's dtype.
  - with bf16 activations it is fast (8192x2048, M=1: 0.46 ms vs 4.8 ms for the fp32 dense linear);
    with fp32 or fp16 activations it falls to a slow path (38 ms). So activations go in as bf16 and the
    output is cast back, as torchao's CUDA int4 path does (it casts activations to bf16 too).
K is zero-padded to a multiple of the group (and the activation padded to match in forward, as
torchao pads K to 1024 on CUDA); N is zero-padded to a multiple of 16 and the output sliced.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.variants.inspect import linear_weight_types

GROUP_SIZE = 128
N_MULTIPLE = 16                 # _convert_weight_to_int4pack_for_cpu: "expect N to be dividable by 16"
ACT_DTYPE = torch.bfloat16      # the kernel's fast path (see module docstring)
KERNEL = "aten._weight_int4pack_mm_for_cpu"


def _pad_to(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def pad_k(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """Zero-pad the input dimension to a whole number of groups."""
    k_pad = _pad_to(w.shape[1], group_size) - w.shape[1]
    return F.pad(w, (0, k_pad)) if k_pad else w


def tinygemm_qparams(w: torch.Tensor, group_size: int, qparam_dtype: torch.dtype
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (N, K/g, g) fp32 codes in [0, 15], scale (N, K/g, 1), offset (N, K/g, 1)) of a weight whose K
    divides by the group; w ~ q * scale + offset, offset = zero - 8 * scale.

    scale and zero are rounded to `qparam_dtype` before q is computed, so q is exact for the stored
    parameters. Source of the scheme: torchao `_choose_qparams_affine_tinygemm` /
    `_quantize_affine_tinygemm` (quant_primitives.py, 0.18).
    """
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    lo, hi = torch.aminmax(g, dim=-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_(min=1e-6).to(qparam_dtype).float()
    offset = (lo + 8 * scale).to(qparam_dtype).float() - 8 * scale
    q = (g - offset).div_(scale).round_().clamp_(0, 15)   # fresh tensor: in-place ops are safe
    return q, scale, offset


def fake_quantize(w: torch.Tensor, group_size: int = GROUP_SIZE, qparam_dtype: torch.dtype = ACT_DTYPE
                  ) -> torch.Tensor:
    """The weight the int4 kernel will effectively use, in fp32 and w's shape. For calibration
    searches (AWQ) only, never on the inference path."""
    n, k = w.shape
    q, scale, offset = tinygemm_qparams(pad_k(w, group_size), group_size, qparam_dtype)
    return q.mul_(scale).add_(offset).reshape(n, -1)[:, :k]


class Int4PackedLinearCPU(nn.Module):
    """y = x W^T + b with W stored as packed int4 (group-wise scales and zeros), computed by
    `aten._weight_int4pack_mm_for_cpu`. Packed data are buffers, so `tensor_bytes` counts them."""

    def __init__(self, in_features: int, out_features: int, group_size: int,
                 qdata: torch.Tensor, scales_and_zeros: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.k_pad = _pad_to(in_features, group_size) - in_features
        self.register_buffer("qdata", qdata)                        # uint8 (N_pad, K_pad / 2)
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # ACT_DTYPE (K_pad / g, N_pad, 2)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = GROUP_SIZE) -> "Int4PackedLinearCPU":
        w = linear.weight.detach()
        if w.device.type != "cpu":
            raise ValueError(f"Int4PackedLinearCPU runs on CPU; weight is on {w.device}")
        n, k = w.shape
        wp = pad_k(w.float(), group_size)
        n_pad = _pad_to(n, N_MULTIPLE) - n
        if n_pad:
            wp = F.pad(wp, (0, 0, 0, n_pad))
        q, scale, offset = tinygemm_qparams(wp, group_size, ACT_DTYPE)
        q = q.to(torch.int32).reshape(wp.shape)
        qdata = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)   # innerKTiles: unused on CPU
        # (N, K/g, 2) -> (K/g, N, 2): the layout of torchao's pack_tinygemm_scales_and_zeros
        zero = offset + 8 * scale
        sz = torch.stack([scale[..., 0], zero[..., 0]], -1).transpose(0, 1).contiguous().to(ACT_DTYPE)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(k, n, group_size, qdata, sz, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        a = x.reshape(-1, self.in_features).to(ACT_DTYPE)
        if self.k_pad:
            a = F.pad(a, (0, self.k_pad))
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(a.contiguous(), self.qdata, self.group_size,
                                                       self.scales_and_zeros)
        y = y[:, :self.out_features].reshape(*lead, self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def swap_linears(model: nn.Module, keep_filter, group_size: int = GROUP_SIZE) -> int:
    """Replace every nn.Linear for which keep_filter(module, fqn) is true; returns how many."""
    targets = [(fqn, m) for fqn, m in model.named_modules() if isinstance(m, nn.Linear) and keep_filter(m, fqn)]
    for fqn, m in targets:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int4PackedLinearCPU.from_linear(m, group_size))
    return len(targets)


def kernel_summary(model: nn.Module) -> str:
    """Which op runs the linear layers: the int4 modules, then the remaining nn.Linear weight types."""
    n = sum(isinstance(m, Int4PackedLinearCPU) for m in model.modules())
    rest = linear_weight_types(model)
    head = f"{KERNEL} g{GROUP_SIZE} bf16-activations (Int4PackedLinearCPU x{n})"
    return f"{head}, {rest}" if rest else head


def probe() -> str | None:
    """None if the CPU int4 kernel packs and runs here, else why not."""
    try:
        lin = nn.Linear(GROUP_SIZE, N_MULTIPLE, bias=False)
        Int4PackedLinearCPU.from_linear(lin)(torch.randn(2, GROUP_SIZE))
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        return f"{KERNEL} is not usable in torch {torch.__version__}: {type(e).__name__}: {str(e).splitlines()[0]}"
    return None
