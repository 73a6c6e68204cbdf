"""Sensitivity scan: apply a variant to one group (a decoder block or one linear layer) at a time,
measure how far the output moves from the baseline (mean KL), rank the groups, and measure mixed
models that keep the k most sensitive groups in high precision (k = 0..K).

Groups are named by fnmatch patterns of module names, exactly what a policy file lists, so the
proposed policy is the list of the kept groups' patterns and `variant@policy.txt` reproduces the
mixed model the scan measured.
"""
from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from harness.quality.evaluate import QualityReference, evaluate
from harness.quality.settings import QualitySettings
from harness.variants.inspect import tensor_bytes
from harness.variants.registry import NothingApplied, ApplyContext, Policy, Variant

GRANULARITIES = ("block", "linear")
_BLOCK = re.compile(r"^(?P<prefix>(?:.*\.)?layers\.(?P<index>\d+))\.")


@dataclass(frozen=True)
class Group:
    name: str                      # "model.layers.3", "model.layers.3.mlp.down_proj", "lm_head"
    patterns: tuple[str, ...]      # fnmatch patterns of the module names it covers


@dataclass(frozen=True)
class OnlyPolicy(Policy):
    """Keeps every module except those matching `only`: the variant touches one group alone."""
    only: tuple[str, ...] = ()

    def keeps(self, fqn: str) -> bool:
        return not any(fnmatch.fnmatchcase(fqn, p) for p in self.only)


@dataclass(frozen=True)
class GroupScore:
    group: Group
    kl_mean: float                 # nats, the variant on this group alone
    kl_p99: float
    top1_agreement: float
    weight_bytes: int              # resident bytes of the model with only this group changed


@dataclass(frozen=True)
class MixStep:
    k: int                         # most sensitive groups kept in high precision
    kept: tuple[str, ...]          # their names
    patterns: tuple[str, ...]      # the policy that keeps them
    kl_mean: float
    kl_p99: float
    top1_agreement: float
    perplexity: float
    weight_bytes: int
    bytes_saved: int               # baseline bytes - this model's bytes (measured from the tensors)
    kl_recovered: float            # KL at k = 0 minus KL here


@dataclass
class SensitivityReport:
    model: str
    variant: str
    granularity: str
    tokens: int
    baseline_bytes: int
    baseline_perplexity: float
    ranked: list[GroupScore]       # most sensitive first
    steps: list[MixStep]           # k = 0..K
    proposed_k: int
    target_kl: float | None
    elapsed_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def proposed(self) -> MixStep:
        return self.steps[self.proposed_k]


def linear_groups(model: nn.Module, granularity: str) -> list[Group]:
    """Every nn.Linear, grouped by decoder block ('block') or one group each ('linear'), in module
    order. Linears outside the decoder blocks (lm_head) are their own group at either granularity."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} not in {GRANULARITIES}")
    groups: list[Group] = []
    seen_blocks: set[str] = set()
    for fqn, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        m = _BLOCK.match(fqn)
        if granularity == "block" and m:
            block = m.group("prefix")
            if block not in seen_blocks:
                seen_blocks.add(block)
                groups.append(Group(block, (f"{block}.*",)))
        else:
            groups.append(Group(fqn, (fqn,)))
    if not groups:
        raise ValueError("the model has no nn.Linear layers to scan")
    return groups


def propose_k(steps: list[MixStep], target_kl: float | None) -> int:
    """The fewest kept groups (at least 1, so the policy file is never empty) whose mixed model's
    mean KL meets the target; the largest measured k when none does or no target is set."""
    last = steps[-1].k
    if target_kl is None:
        return last
    for s in steps[1:]:
        if s.kl_mean <= target_kl:
            return s.k
    return last


def scan(make_model: Callable[[], nn.Module], variant: Variant, token_ids: torch.Tensor,
         settings: QualitySettings, *, device_type: str, dtype: torch.dtype, granularity: str = "block",
         top_k: int = 8, calibration_ids: torch.Tensor | None = None, target_kl: float | None = None,
         model_name: str = "", progress: Callable[[str], None] = lambda s: None) -> SensitivityReport:
    """Scan every group, then measure the mixed models for k = 0..top_k.

    `make_model` returns a fresh baseline instance on the target device each call (the variant
    rewrites it in place). Every figure comes from evaluate() on the same reference positions.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    t0 = time.perf_counter()
    base = make_model()
    groups = linear_groups(base, granularity)
    progress(f"baseline reference: {settings.tokens} positions, window {settings.window}")
    reference = QualityReference.build(base, token_ids, settings)
    baseline_bytes = tensor_bytes(base)
    del base

    def run(policy: Policy):
        model = make_model()
        try:
            variant.apply(model, ApplyContext(device_type, dtype, calibration_ids, policy))
        except NothingApplied:
            pass   # the policy keeps every group (the last mixed step): this model is the baseline

        res = evaluate(model, reference)
        nbytes = tensor_bytes(model)
        del model
        return res, nbytes

    scores: list[GroupScore] = []
    for i, g in enumerate(groups):
        started = time.perf_counter()
        res, nbytes = run(OnlyPolicy(f"only:{g.name}", only=g.patterns))
        scores.append(GroupScore(g, res.kl_mean, res.kl_p99, res.top1_agreement, nbytes))
        progress(f"[{i + 1}/{len(groups)}] {g.name}: KL {res.kl_mean:.5f} "
                 f"({time.perf_counter() - started:.1f} s, {len(groups) - i - 1} groups left)")
    # Stable sort: equal KL keeps module order, so the ranking is deterministic.
    ranked = sorted(scores, key=lambda s: -s.kl_mean)

    k_max = min(top_k, len(ranked))
    steps: list[MixStep] = []
    for k in range(k_max + 1):
        kept = ranked[:k]
        patterns = tuple(p for s in kept for p in s.group.patterns)
        res, nbytes = run(Policy(f"sensitivity-top{k}", patterns=patterns))
        kl0 = steps[0].kl_mean if steps else res.kl_mean
        steps.append(MixStep(k, tuple(s.group.name for s in kept), patterns, res.kl_mean, res.kl_p99,
                             res.top1_agreement, res.perplexity, nbytes, baseline_bytes - nbytes,
                             kl0 - res.kl_mean))
        progress(f"[mix k={k}/{k_max}] KL {res.kl_mean:.5f}, {(baseline_bytes - nbytes) / 1e6:.1f} MB saved")

    notes = [reference.note] if reference.note else []
    proposed = propose_k(steps, target_kl)
    if target_kl is not None and steps[proposed].kl_mean > target_kl:
        notes.append(f"no k <= {k_max} reaches mean KL {target_kl}: proposing k = {proposed}; "
                     "raise --top-k or choose another variant")
    if target_kl is not None and steps[0].kl_mean <= target_kl:
        notes.append(f"the variant alone (k = 0) already meets mean KL {target_kl}: "
                     "the policy is a further margin, not a necessity")
    return SensitivityReport(model_name, variant.name, granularity, reference.positions, baseline_bytes,
                             reference.perplexity, ranked, steps, proposed, target_kl,
                             time.perf_counter() - t0, notes)
