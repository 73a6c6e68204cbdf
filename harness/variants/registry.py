"""The registry of variants. A Variant declares what it needs (so a cell can be `unsupported` before
any model is loaded) and how to apply itself to a model (returning the kernel that will run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn


class UnknownVariantError(ValueError):
    pass


@dataclass(frozen=True)
class Requirements:
    devices: tuple[str, ...] = ("cpu", "cuda")     # torch device types with a kernel
    min_compute_capability: tuple[int, int] | None = None
    needs_torchao: bool = False
    feature: str | None = None                      # profile feature that must be true (e.g. "fp8")


@dataclass(frozen=True)
class ApplyResult:
    kernel: str                      # tensor type or op the linear layers now run
    calibration_s: float | None = None
    notes: str = ""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    requires: Requirements
    apply: Callable[[nn.Module, "ApplyContext"], ApplyResult] = field(compare=False)

    def unsupported_reason(self, device_type: str, compute_capability: tuple[int, int] | None,
                           profile=None) -> str | None:
        """Why this variant cannot run here, or None. Checked before any model is loaded."""
        r = self.requires
        if device_type not in r.devices:
            return f"{self.name}: no kernel on {device_type} (runs on {', '.join(r.devices)})"
        if r.min_compute_capability and device_type == "cuda":
            if compute_capability is None or compute_capability < r.min_compute_capability:
                need = ".".join(map(str, r.min_compute_capability))
                return f"{self.name}: needs compute capability >= {need}, this GPU has {compute_capability}"
        if r.needs_torchao:
            try:
                import torchao  # noqa: F401
            except ImportError as e:
                return f"{self.name}: torchao is not importable ({e})"
        if r.feature and profile is not None and hasattr(profile, "supports"):
            if profile.supports(r.feature) is False:
                return f"{self.name}: profile {profile.id} does not support {r.feature}"
        return None


@dataclass(frozen=True)
class ApplyContext:
    """What apply() may use besides the model: the device, dtype and calibration batches."""
    device_type: str
    dtype: object
    calibration_ids: object | None = None   # LongTensor (n, seq) from the corpus, seeded


REGISTRY: dict[str, Variant] = {}


def register(v: Variant) -> Variant:
    if v.name in REGISTRY:
        raise ValueError(f"variant {v.name!r} registered twice")
    REGISTRY[v.name] = v
    return v


def get_variant(name: str) -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownVariantError(f"unknown variant {name!r}; valid variants: {', '.join(REGISTRY)}") from None


def parse_variant_list(text: str) -> list[str]:
    """'baseline,int8-wo' or 'all' -> names in registry order for 'all', in the user's order otherwise."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownVariantError(f"no variants given; valid variants: {', '.join(REGISTRY)}, or 'all'")
    if names == ["all"]:
        return list(REGISTRY)
    seen: list[str] = []
    for n in names:
        get_variant(n)
        if n not in seen:
            seen.append(n)
    return seen
