"""Facts measured from a model's tensors (resident bytes, the tensor types of linear weights), and the one
swap of its linear modules that the kernel variants share."""
from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
from torch import nn


def _leaf_tensors(t: torch.Tensor):
    """Plain tensors that hold a (possibly subclassed, e.g. torchao quantized) tensor's data."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) is not torch.Tensor and type(t) is not nn.Parameter:
        names, _ = t.__tensor_flatten__()
        for n in names:
            inner = getattr(t, n)
            if isinstance(inner, torch.Tensor):
                yield from _leaf_tensors(inner)
        return
    if t.layout == torch.strided:
        yield t
    else:  # sparse layouts: count every component
        for part in ("values", "indices", "crow_indices", "col_indices"):
            fn = getattr(t, part, None)
            if fn is not None:
                try:
                    yield fn()
                except RuntimeError:
                    pass


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer as stored, each storage counted once (tied weights); meta
    tensors (a model still being built, layerwise.py) hold no memory and count 0."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_meta:
            continue
        for leaf in _leaf_tensors(t):
            try:
                key = (leaf.untyped_storage().data_ptr(), leaf.untyped_storage().nbytes())
                nbytes = leaf.untyped_storage().nbytes()
            except (RuntimeError, NotImplementedError):
                key, nbytes = (id(leaf), 0), leaf.numel() * leaf.element_size()
            if key in seen:
                continue
            seen.add(key)
            total += nbytes
    return total


def is_plain_linear(m: nn.Module) -> bool:
    """An nn.Linear whose weight is still an ordinary tensor (not quantized, packed or swapped out)."""
    return isinstance(m, nn.Linear) and type(m.weight) in (nn.Parameter, torch.Tensor)


def targeted_linears(model: nn.Module, keep_filter) -> list[str]:
    """Names of the plain linears keep_filter(module, fqn) selects, taken before a pass changes them."""
    return [fqn for fqn, m in model.named_modules() if is_plain_linear(m) and keep_filter(m, fqn)]


def count_converted(model: nn.Module, fqns: list[str]) -> int:
    """How many of the named modules are no longer plain linears: what a quantization pass really did
    (torchao may leave a layer as it was without raising)."""
    mods = dict(model.named_modules())
    return sum(1 for f in fqns if f in mods and not is_plain_linear(mods[f]))


def linear_weight_types(model: nn.Module) -> str:
    """'Int8Tensor x210, Tensor x1' style summary of the weight tensor types of nn.Linear layers."""
    c = Counter(type(m.weight).__name__ if type(m.weight) is not nn.Parameter else f"Tensor[{m.weight.dtype}]"
                for m in model.modules() if isinstance(m, nn.Linear))
    return ", ".join(f"{k} x{v}" for k, v in c.most_common())


# Shape-only ops that say nothing about which kernel did the work.
_TRIVIAL_OPS = {"aten::view", "aten::t", "aten::transpose", "aten::reshape", "aten::as_strided", "aten::empty",
                "aten::empty_strided", "aten::flatten", "aten::expand", "aten::unsqueeze", "aten::squeeze",
                "aten::_unsafe_view", "aten::detach", "aten::alias", "aten::contiguous", "aten::resolve_conj",
                "aten::resolve_neg", "aten::lift_fresh", "aten::slice", "aten::select", "aten::permute"}


def ops_that_ran(model: nn.Module, dtype: torch.dtype, top: int = 4) -> str:
    """The aten ops one MLP projection of `model` dispatches for a one-token input, by CPU time.

    Measured with torch.profiler (CPU activity only, so cheap on GPU too): it shows what a tensor
    subclass really does, e.g. torchao's CPU int8 path is `aten::_to_copy` (int8 -> fp32 weight on
    every call) followed by `aten::mm`."""
    from torch.profiler import ProfilerActivity, profile

    target = next((m for n, m in model.named_modules() if n.endswith("down_proj")), None)
    if target is None:
        target = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if target is None:
        return ""
    p = next(iter(target.buffers()), None) if not isinstance(target, nn.Linear) else target.weight
    in_features = getattr(target, "in_features", None)
    if p is None or in_features is None:
        return ""
    x = torch.randn(1, 1, in_features, dtype=dtype, device=p.device)
    with torch.inference_mode():
        target(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            target(x)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") and e.key not in _TRIVIAL_OPS]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return ", ".join(e.key for e in events[:top])


def swap_linears(model: nn.Module, keep, make: Callable[[nn.Linear], nn.Module]) -> int:
    """Replace every plain linear keep(module, fqn) selects by make(linear); returns how many."""
    names = set(targeted_linears(model, keep))
    targets = [(f, m) for f, m in model.named_modules() if f in names]
    for fqn, m in targets:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(m))
    return len(targets)
