"""The baseline: the model as loaded, in the compute dtype. It changes no layer by definition, so it is
the one variant exempt from NothingApplied (catalog.py: changes_weights=False)."""
from __future__ import annotations

from torch import nn

from harness.variants.registry import ApplyContext, ApplyResult


def apply_baseline(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    dtype = str(ctx.dtype).replace("torch.", "")
    return ApplyResult(kernel=f"aten.linear {dtype} (dense)", layers_changed=0)


def apply_gguf_only(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    """The llama.cpp GGUF types have no torch implementation; their requirements keep them off the torch
    backends (`unsupported`), so reaching this is a caller's bug."""
    raise NotImplementedError("a llama.cpp GGUF type has no torch implementation: run it with --backends llama.cpp")
