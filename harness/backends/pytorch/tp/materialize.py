"""A synthetic model's shard built on its GPU without the whole model ever existing there: the
structure on the meta device, sliced (shard.shard_model), then materialized with seeded random
weights. This is how a model larger than one GPU (synthetic:llama-3.1-70b bf16, 141 GB, on H200s
of 139 GiB) runs tensor-parallel at all.

The weights differ from a one-GPU instance's (random either way: speed, memory and energy only),
so tokens are comparable only between runs of this path. Replicated tensors (embedding, norms,
lm_head) are drawn from one seed on every rank: they must be identical, or the ranks' partial sums
would come from different hidden states; sharded tensors from a per-rank seed.
"""
from __future__ import annotations

import torch
from torch import nn

SHARD_SEED = 20261201
INIT_STD = 0.02     # transformers' default initializer_range for Llama-family configs


def _is_sharded(name: str) -> bool:
    return ".self_attn." in name or ".mlp." in name


@torch.no_grad()
def synthetic_shard(loaded, rank: int, world: int, device: torch.device, dtype: torch.dtype, group=None) -> nn.Module:
    from harness.backends.pytorch.tp.shard import shard_model

    model = loaded.instantiate(torch.device("meta"), dtype)
    full_cfg = model.config
    std = getattr(full_cfg, "initializer_range", INIT_STD)
    shard_model(model, rank, world, group)
    model.to_empty(device=device)
    shared = torch.Generator(device).manual_seed(SHARD_SEED)
    own = torch.Generator(device).manual_seed(SHARD_SEED + 1 + rank)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.fill_(1.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.normal_(0.0, std, generator=own if _is_sharded(name) else shared)
    # to_empty left the rotary frequencies (a non-persistent buffer) uninitialized: rebuild it
    rot = model.model.rotary_emb
    with torch.device(device):
        model.model.rotary_emb = type(rot)(config=full_cfg)
    return model


def fits_one_device(loaded, dtype: torch.dtype, device: torch.device, headroom: float = 0.10) -> bool:
    """Whether the whole model fits this device's free memory (the slice-after-load path needs it)."""
    from harness.backends.pytorch.device import free_memory_bytes

    if loaded.shape is None:
        return True
    need = loaded.shape.param_count() * torch.empty((), dtype=dtype).element_size()
    return need <= free_memory_bytes(device) * (1 - headroom)
