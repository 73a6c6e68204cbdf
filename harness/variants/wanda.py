"""Pruning masks (2:4 magnitude, 2:4 Wanda, unstructured magnitude) and the dense pruning pass.

Masks are boolean tensors shaped like the weight, True where a weight is kept. Pruning here only
zeroes weights in place: the matmul stays dense (quality experiments, and the first step of every
sparse-kernel variant in sparse.py, which then packs the zeroed weights).

Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs", github.com/locuslab/wanda)
scores W_ij by |W_ij| * ||X_j||_2, X_j being input channel j over all calibration tokens, and compares
scores within each output row (for 2:4: within each group of 4 consecutive inputs of a row). As in
its reference code, decoder blocks are pruned in order and each block is calibrated on the outputs
of the already-pruned blocks before it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from harness.variants.calibration import (InputStatsRecorder, _Stop, collect_input_stats,
                                          forward_for_calibration)
from harness.variants.registry import ApplyContext, ApplyResult

METHODS_24 = ("magnitude", "wanda")


# -- masks ----------------------------------------------------------------------------------------
def nm_mask(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the n highest scores in every group of m consecutive entries of each row (N:M sparsity)."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"{n}:{m} sparsity needs in_features divisible by {m}, got {cols}")
    groups = score.reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.reshape(rows, cols)


def magnitude_24_mask(w: torch.Tensor) -> torch.Tensor:
    """2:4 mask keeping the two largest |w| of every 4 consecutive input weights of a row."""
    return nm_mask(w.detach().abs().float())


def wanda_24_mask(w: torch.Tensor, act_norm: torch.Tensor) -> torch.Tensor:
    """2:4 mask on Wanda's score |W_ij| * ||X_j||_2; act_norm has one entry per input channel."""
    if act_norm.numel() != w.shape[1]:
        raise ValueError(f"act_norm has {act_norm.numel()} channels, weight has {w.shape[1]} inputs")
    score = w.detach().abs().float() * act_norm.detach().float().reshape(1, -1).to(w.device)
    return nm_mask(score)


def unstructured_mask(w: torch.Tensor, sparsity: float, per: str = "row") -> torch.Tensor:
    """Zero the round(sparsity * n) weights of smallest |w| in every output row (per="row") or in the
    whole layer (per="layer").

    Per row is what unstructured-50 uses: it gives the same mask whether or not the backend fused
    q/k/v or gate/up into one linear before applying the variant (the CUDA path does). The Wanda
    repo's magnitude baseline (the 14.89 ppl anchor) uses one threshold per layer: per="layer".
    Ties at the threshold are broken by position, so counts are exact even for weights dequantized
    from a GGUF file, which hold few distinct values.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if per not in ("row", "layer"):
        raise ValueError(f"per must be 'row' or 'layer', got {per!r}")
    a = w.detach().abs().float().reshape(w.shape[0] if per == "row" else 1, -1)
    k = int(sparsity * a.shape[1] + 0.5)
    if k == 0:
        return torch.ones_like(w, dtype=torch.bool)
    # stable sort: among equal |w| the earlier position is pruned first
    order = a.argsort(dim=1, stable=True)[:, :k]
    keep = torch.ones_like(a, dtype=torch.bool).scatter_(1, order, False)
    return keep.reshape(w.shape)


# -- which layers -----------------------------------------------------------------------------------
@dataclass
class LayerPlan:
    """The nn.Linear layers a pass changes, and why each other one stays dense (fqn -> reason)."""
    selected: dict[str, nn.Linear]
    dense: dict[str, str] = field(default_factory=dict)
    total: int = 0

    def summary(self) -> str:
        """'196/197 linears; dense: 1 (lm_head: tied to the embedding)' style count."""
        s = f"{len(self.selected)}/{self.total} linears"
        if self.dense:
            reasons: dict[str, list[str]] = {}
            for fqn, why in self.dense.items():
                reasons.setdefault(why, []).append(fqn)
            parts = [f"{names[0] if len(names) == 1 else f'{len(names)} layers'}: {why}"
                     for why, names in reasons.items()]
            s += f"; dense: {len(self.dense)} ({'; '.join(parts)})"
        return s


def select_linears(model: nn.Module, ctx: ApplyContext,
                   qualifies: Callable[[nn.Linear], str | None] | None = None) -> LayerPlan:
    """Every nn.Linear that ctx.linear_filter allows, is not tied to an embedding (pruning it would
    prune the embedding too) and passes `qualifies` (returns why not, or None)."""
    emb = {_storage_key(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    plan = LayerPlan({})
    for fqn, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        plan.total += 1
        if not ctx.linear_filter(mod, fqn):
            plan.dense[fqn] = "kept by the policy"
        elif _storage_key(mod.weight) in emb:
            plan.dense[fqn] = "tied to the embedding, skipped"
        elif qualifies is not None and (why := qualifies(mod)):
            plan.dense[fqn] = why
        else:
            plan.selected[fqn] = mod
    return plan


def _storage_key(t: torch.Tensor) -> tuple:
    try:
        return ("ptr", t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return ("id", id(t))


def fits_24(mod: nn.Linear) -> str | None:
    return None if mod.in_features % 4 == 0 else f"in_features {mod.in_features} not a multiple of 4"


# -- pruning passes ---------------------------------------------------------------------------------
@torch.no_grad()
def mask_24_(model: nn.Module, layers: dict[str, nn.Linear], method: str,
             calibration_ids: torch.Tensor | None = None) -> float | None:
    """Zero the pruned weights of `layers` in place with a 2:4 mask. Returns the seconds Wanda spent
    on calibration (its forwards over the calibration tokens and its scoring), None for magnitude."""
    if not layers:
        return None
    if method == "magnitude":
        for mod in layers.values():
            mod.weight.mul_(magnitude_24_mask(mod.weight))
        return None
    if method != "wanda":
        raise ValueError(f"unknown 2:4 method {method!r}; known: {', '.join(METHODS_24)}")
    if calibration_ids is None:
        raise ValueError("Wanda needs calibration token ids (ApplyContext.calibration_ids)")
    return _wanda_sequential(model, layers, calibration_ids)


@torch.no_grad()
def mask_unstructured_(layers: dict[str, nn.Linear], sparsity: float, per: str = "row") -> None:
    for mod in layers.values():
        mod.weight.mul_(unstructured_mask(mod.weight, sparsity, per))


def apply_24_mask_dense(model: nn.Module, ctx: ApplyContext, method: str = "magnitude") -> ApplyResult:
    """2:4-prune every linear that ctx allows, keeping dense weights and the dense matmul.

    For quality measurements of 2:4 masks where no sparse kernel exists (CPU): the same masks as
    sparse-2:4 / sparse-2:4-wanda, none of their speed.
    """
    plan = select_linears(model, ctx, fits_24)
    calib_s = mask_24_(model, plan.selected, method, ctx.calibration_ids)
    return ApplyResult(kernel=f"dense aten.linear, 2:4 zeros ({method} mask) on {plan.summary()}",
                       layers_changed=len(plan.selected), calibration_s=calib_s)


def _wanda_sequential(model: nn.Module, layers: dict[str, nn.Linear], ids: torch.Tensor) -> float:
    t_calib = 0.0
    blocks_fqn, blocks = decoder_blocks(model)
    in_blocks = {f for f in layers if blocks_fqn is not None and f.startswith(blocks_fqn + ".")}
    if blocks:
        t0 = time.perf_counter()
        hidden, block_kwargs = _capture_block_inputs(model, blocks, ids)
        t_calib += time.perf_counter() - t0
        for i, block in enumerate(blocks):
            mine = {f: layers[f] for f in in_blocks if f.startswith(f"{blocks_fqn}.{i}.")}
            t0 = time.perf_counter()
            if mine:
                with InputStatsRecorder(mine) as rec:
                    block(hidden, **block_kwargs[i])
                _mask_wanda(mine, rec.stats())
            out = block(hidden, **block_kwargs[i])  # this block's pruned output feeds the next one
            hidden = out[0] if isinstance(out, tuple) else out
            t_calib += time.perf_counter() - t0
    rest = {f: m for f, m in layers.items() if f not in in_blocks}
    if rest:  # outside the blocks (lm_head): one forward through the already-pruned model
        t0 = time.perf_counter()
        _mask_wanda(rest, collect_input_stats(model, ids, lambda _m, fqn: fqn in rest))
        t_calib += time.perf_counter() - t0
    return t_calib


def _mask_wanda(layers: dict[str, nn.Linear], stats: dict) -> None:
    missing = sorted(set(layers) - set(stats))
    if missing:
        raise RuntimeError(f"Wanda: no calibration input reached {', '.join(missing[:3])}")
    for fqn, mod in layers.items():
        mod.weight.mul_(wanda_24_mask(mod.weight, stats[fqn].l2_norm))


def decoder_blocks(model: nn.Module) -> tuple[str | None, list[nn.Module]]:
    """The nn.ModuleList of repeated blocks holding the most parameters (the decoder layers)."""
    best, best_n = (None, []), 0
    for fqn, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 1:
            if not any(isinstance(m, nn.Linear) for m in mod.modules()):
                continue
            n = sum(p.numel() for p in mod.parameters())
            if n > best_n:
                best, best_n = (fqn, list(mod)), n
    return best


def _capture_block_inputs(model: nn.Module, blocks: list[nn.Module], ids: torch.Tensor):
    """The hidden states entering the first block and the keyword arguments of every block
    (attention masks may differ per block, e.g. sliding-window layers), from one dense forward
    stopped after the last block."""
    hidden: list[torch.Tensor] = []
    kwargs: dict[int, dict] = {}

    def pre(i):
        def hook(_m, args, kw):
            if i == 0:
                hidden.append(args[0] if args else kw["hidden_states"])
            kwargs[i] = {k: v for k, v in kw.items() if k != "hidden_states"}
        return hook

    def stop(*_):
        raise _Stop

    handles = [b.register_forward_pre_hook(pre(i), with_kwargs=True) for i, b in enumerate(blocks)]
    handles.append(blocks[-1].register_forward_hook(stop))
    try:
        forward_for_calibration(model, ids if ids.dim() == 2 else ids.unsqueeze(0))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if not hidden or len(kwargs) != len(blocks):
        raise RuntimeError(f"Wanda: the calibration forward reached {len(kwargs)} of {len(blocks)} blocks")
    return hidden[0], kwargs
