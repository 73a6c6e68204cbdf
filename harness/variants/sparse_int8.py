"""int8 x int8 2:4 sparse linear through cuSPARSELt (torch._cslt_compress / torch._cslt_sparse_mm).

torchao 0.18 has no int8 2:4 path: its `Int8DynamicActivationInt8WeightConfig(layout=SemiSparseLayout())`
lived on AffineQuantizedTensor, which 0.18 deleted (torchao.dtypes holds only a stub; version=1 of the
config raises), and the int8 2:4 tensor was not migrated (pytorch/ao#3258 discussion). The kernel is
still in torch's cuSPARSELt binding, so this weight tensor calls it the way torchao's removed layout
did: weights int8 per output row, activations int8 per token (torchao's Int8Tensor quantizers, as the
dense int8 dynamic variant uses), the weight scale fused as cuSPARSELt's per-row alpha, the token
scale applied to the output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchao.quantization.granularity import PerRow
from torchao.quantization.quantize_.workflows import Int8Tensor
from torchao.utils import TorchAOBaseTensor

# cuSPARSELt int8 operand constraints (torch.sparse.SparseSemiStructuredTensorCUSPARSELT,
# _DTYPE_SHAPE_CONSTRAINTS[torch.int8]): sparse rows and columns multiples of 32, dense multiples of 16.
SPARSE_MIN, DENSE_MIN = 32, 16


class Int8Sparse2x4CuSparseLtTensor(TorchAOBaseTensor):
    """A 2:4-sparse int8 weight (out, in): `packed` is cuSPARSELt's compressed values + metadata,
    `scale` the float32 per-output-row scale; reads as a tensor of the original shape and dtype."""

    tensor_data_names = ["packed", "scale"]
    tensor_attribute_names = ["original_shape", "dtype"]

    def __new__(cls, packed, scale, original_shape, dtype):
        return torch.Tensor._make_wrapper_subclass(cls, original_shape, dtype=dtype, device=packed.device,
                                                   requires_grad=False)

    def __init__(self, packed, scale, original_shape, dtype):
        super().__init__()
        self.packed, self.scale, self.original_shape = packed, scale, tuple(original_shape)

    @classmethod
    def from_hp(cls, w: torch.Tensor) -> "Int8Sparse2x4CuSparseLtTensor":
        """w: a 2:4-pruned (out, in) weight on CUDA. Zeros stay zero under symmetric quantization, so
        the int8 weight keeps the pattern (a kept weight that rounds to 0 leaves 3 zeros: still 2:4)."""
        q = Int8Tensor.from_hp(w, PerRow())
        return cls(torch._cslt_compress(q.qdata.contiguous()), q.scale.reshape(-1).float().contiguous(),
                   w.shape, w.dtype)

    def _quantization_type(self):
        return f"shape={self.original_shape}, int8 per-row weights, cuSPARSELt 2:4"


@Int8Sparse2x4CuSparseLtTensor.implements(torch.ops.aten.linear.default)
@Int8Sparse2x4CuSparseLtTensor.implements_torch_function(F.linear)
def _(func, types, args, kwargs):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    lead, k = x.shape[:-1], x.shape[-1]
    xq = Int8Tensor.from_hp(x.reshape(-1, k), PerRow())     # per-token symmetric int8
    xi, xs = xq.qdata, xq.scale.reshape(-1, 1)
    m = xi.shape[0]
    # cuSPARSELt int8 takes the dense operand only column-major (the .t() of a row-major matrix; a
    # row-major one fails with "operation not supported") and with tokens in steps of 16: seen on the
    # H100 with cuSPARSELt 0.8. Padding also keeps one decode token from being a (K, 1) column,
    # which reads as row-major.
    xi = F.pad(xi, (0, 0, 0, (-m) % DENSE_MIN)).contiguous()
    # (out, in) sparse @ (in, tokens) dense, written transposed as (tokens, out); alpha scales
    # output channel r by w.scale[r]
    y = torch._cslt_sparse_mm(w.packed, xi.t(), alpha=w.scale, out_dtype=x.dtype, transpose_result=True)[:m]
    y = (y.float() * xs).to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, w.original_shape[0])
