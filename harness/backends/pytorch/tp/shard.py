"""Megatron-style tensor parallelism of a Llama-family model, in place, for one rank of N.

Per layer: q/k/v and gate/up are column-parallel (each rank keeps a contiguous slice of the heads /
intermediate features: output rows of the weight), o_proj and down_proj row-parallel (the matching
slice of input columns) followed by an all-reduce of their partial sums: two all-reduces per layer,
of B x T x hidden each. Embedding, norms and lm_head are replicated, so every rank computes the same
logits and the same greedy tokens; rank 0's are the cell's.

The rank's model.config says the per-rank head counts (and head_dim explicitly), so the lean decoder
(harness.backends.pytorch.lean.LeanDecoder) runs unchanged on the shard, its KV cache split by KV
head. Contiguous head slices keep GQA groups whole: q heads [r*H/N, (r+1)*H/N) use KV heads
[r*K/N, (r+1)*K/N) exactly when K % N == 0.
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn


def tp_unsupported(config, world: int) -> str | None:
    """None if a model with this config shards across `world` ranks, else why not."""
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    if world < 1:
        return f"tensor parallelism needs at least 1 rank, got {world}"
    if kv % world:
        return f"{kv} KV heads do not split across {world} GPUs (num_key_value_heads % gpus != 0)"
    if heads % world:
        return f"{heads} attention heads do not split across {world} GPUs"
    if config.intermediate_size % world:
        return f"intermediate size {config.intermediate_size} does not split across {world} GPUs"
    return None


def all_reduce_sum(y: torch.Tensor, group=None) -> torch.Tensor:
    """Sum over ranks. Traced by torch.compile as a functional collective (inductor lowers it to
    c10d_functional ops, which a CUDA graph captures with NCCL >= 2.9); eager: in-place c10d."""
    if torch.compiler.is_compiling():
        import torch.distributed._functional_collectives as fc

        return fc.all_reduce(y, "sum", group if group is not None else dist.group.WORLD)
    dist.all_reduce(y, group=group)
    return y


class RowParallel(nn.Module):
    """A linear holding a slice of the input features; its partial outputs are summed over ranks."""

    def __init__(self, linear: nn.Module, group=None):
        super().__init__()
        self.linear, self.group = linear, group

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(self.linear(x), self.group)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    lin.requires_grad_(False)
    return lin


def column_slice(lin: nn.Linear, rank: int, world: int) -> nn.Linear:
    n = lin.out_features // world
    rows = slice(rank * n, (rank + 1) * n)
    return _linear(lin.weight[rows], lin.bias[rows] if lin.bias is not None else None)


def row_slice(lin: nn.Linear, rank: int, world: int) -> nn.Linear:
    """The input-column slice; a bias is added once, on rank 0, before the sum."""
    n = lin.in_features // world
    bias = lin.bias if (lin.bias is not None and rank == 0) else None
    return _linear(lin.weight[:, rank * n:(rank + 1) * n], bias)


def shard_model(model: nn.Module, rank: int, world: int, group=None) -> nn.Module:
    """Shard `model` (unfused projections) in place for `rank`; returns it."""
    cfg = model.config
    why = tp_unsupported(cfg, world)
    if why:
        raise ValueError(why)
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        if hasattr(a, "qkv_proj") or hasattr(m, "gate_up_proj"):
            raise ValueError("shard before fusing projections (lean.fuse_projections)")
        a.q_proj, a.k_proj, a.v_proj = (column_slice(x, rank, world) for x in (a.q_proj, a.k_proj, a.v_proj))
        a.o_proj = RowParallel(row_slice(a.o_proj, rank, world), group)
        m.gate_proj, m.up_proj = (column_slice(x, rank, world) for x in (m.gate_proj, m.up_proj))
        m.down_proj = RowParallel(row_slice(m.down_proj, rank, world), group)
    local = copy.deepcopy(cfg)
    local.num_attention_heads, local.num_key_value_heads = heads // world, kv // world
    local.head_dim = head_dim
    local.intermediate_size = cfg.intermediate_size // world
    local.tp_world_size = world
    model.config = local
    return model
