"""Per-linear input activation statistics over calibration tokens, collected with forward pre-hooks.

Shared by the calibrated variants: Wanda scores weights by the L2 norm of each input channel, AWQ
scales channels by their mean |x| and searches scales on a sample of real inputs. Statistics are
accumulated in float32 whatever the model dtype (bf16 sums of thousands of squares lose digits).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class InputStats:
    """What one linear layer saw on its input, per input channel j (length in_features).

    abs_mean[j] = mean over tokens of |x_j|; l2_norm[j] = sqrt(sum over tokens of x_j^2), Wanda's
    ||X_j||_2. Both float32 on the model's device. `sample`: the first `sample_tokens` input rows
    (tokens x in_features) in the model dtype, or None when none were asked for.
    """
    n_tokens: int
    abs_mean: torch.Tensor
    l2_norm: torch.Tensor
    sample: torch.Tensor | None = None


class _Accumulator:
    def __init__(self, sample_tokens: int):
        self.sample_tokens = sample_tokens
        self.n = 0
        self.abs_sum: torch.Tensor | None = None
        self.sq_sum: torch.Tensor | None = None
        self.rows: list[torch.Tensor] = []
        self.kept = 0

    def add(self, x: torch.Tensor) -> None:
        x2 = x.detach().reshape(-1, x.shape[-1])
        xf = x2.float()
        a, s = xf.abs().sum(0), xf.square().sum(0)
        self.abs_sum = a if self.abs_sum is None else self.abs_sum + a
        self.sq_sum = s if self.sq_sum is None else self.sq_sum + s
        self.n += x2.shape[0]
        if self.kept < self.sample_tokens:
            take = x2[: self.sample_tokens - self.kept].clone()
            self.rows.append(take)
            self.kept += take.shape[0]

    def result(self) -> InputStats:
        sample = torch.cat(self.rows) if self.rows else None
        return InputStats(self.n, self.abs_sum / self.n, self.sq_sum.sqrt(), sample)


class InputStatsRecorder:
    """Context manager: while open, every forward of the given modules adds its input to the stats.

    with InputStatsRecorder({"fc": layer}) as rec:
        model(ids)
    rec.stats()["fc"].l2_norm
    """

    def __init__(self, modules: dict[str, nn.Module], sample_tokens: int = 0):
        self.modules = modules
        self.acc = {name: _Accumulator(sample_tokens) for name in modules}
        self.handles: list = []

    def __enter__(self) -> "InputStatsRecorder":
        for name, mod in self.modules.items():
            acc = self.acc[name]
            self.handles.append(mod.register_forward_pre_hook(lambda _m, args, acc=acc: acc.add(args[0])))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def stats(self) -> dict[str, InputStats]:
        """Stats of every module that ran at least once (a module never reached has none)."""
        return {name: acc.result() for name, acc in self.acc.items() if acc.n}


class _Stop(Exception):
    """Raised from a forward hook to end a calibration forward early (later layers are not needed)."""


def forward_for_calibration(model: nn.Module, ids: torch.Tensor) -> None:
    """One forward pass without a KV cache (calibration never decodes), outside autograd."""
    kwargs = {"use_cache": False} if _accepts(model, "use_cache") else {}
    with torch.no_grad():
        model(ids, **kwargs)


def collect_input_stats(model: nn.Module, ids: torch.Tensor,
                        filter_fn: Callable[[nn.Module, str], bool], *, sample_tokens: int = 0,
                        batch_rows: int | None = None, stop_after: nn.Module | None = None) -> dict[str, InputStats]:
    """Input statistics of every module for which filter_fn(module, fqn) is true, keyed by fqn.

    ids: LongTensor (sequences, tokens) on the model's device, e.g. ApplyContext.calibration_ids.
    batch_rows: sequences per forward (all at once when None) to bound activation memory.
    stop_after: a module after whose forward the pass ends (statistics of earlier layers only).
    """
    mods = {fqn: m for fqn, m in model.named_modules() if filter_fn(m, fqn)}
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    step = batch_rows or ids.shape[0]
    stop_handle = None
    if stop_after is not None:
        def _raise(*_):
            raise _Stop
        stop_handle = stop_after.register_forward_hook(_raise)
    try:
        with InputStatsRecorder(mods, sample_tokens) as rec:
            for start in range(0, ids.shape[0], step):
                try:
                    forward_for_calibration(model, ids[start:start + step])
                except _Stop:
                    pass
    finally:
        if stop_handle is not None:
            stop_handle.remove()
    return rec.stats()


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
