"""The registry of variants. A Variant declares what it needs (so a cell can be `unsupported` before
any model is loaded) and how to apply itself to a model (returning the kernel that will run)."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
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
    # probe(device_type, compute_capability) -> why the installed stack cannot run the kernel, or None:
    # imports, compiled ops and one tiny layer, so `unsupported` names the real failure before loading.
    probe: Callable[[str, tuple[int, int] | None], str | None] | None = field(default=None, compare=False)
    # Whether the GPU engine may fuse q/k/v and gate/up into one linear before apply(); False for
    # variants that calibrate through transformers' own forward (it needs the unfused modules).
    fusable: bool = True
    no_kernel_note: str = ""          # appended to the reason on devices outside requires.devices

    def unsupported_reason(self, device_type: str, compute_capability: tuple[int, int] | None,
                           profile=None) -> str | None:
        """Why this variant cannot run here, or None. Checked before any model is loaded."""
        why = self._static_reason(device_type, compute_capability, profile)
        if why is None and self.probe is not None:
            found = self.probe(device_type, tuple(compute_capability) if compute_capability else None)
            if found:
                return f"{self.name}: {found}"
        return why

    def _static_reason(self, device_type: str, compute_capability, profile) -> str | None:
        r = self.requires
        if device_type not in r.devices:
            note = f": {self.no_kernel_note}" if self.no_kernel_note else ""
            return f"{self.name}: no kernel on {device_type} (runs on {', '.join(r.devices)}){note}"
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
    """What apply() may use besides the model: the device, dtype, calibration batches and the
    mixed-precision policy (modules it keeps in high precision)."""
    device_type: str
    dtype: object
    calibration_ids: object | None = None   # LongTensor (n, seq) from the corpus tail, seeded
    policy: "Policy | None" = None

    def keeps(self, fqn: str) -> bool:
        return self.policy is not None and self.policy.keeps(fqn)

    def linear_filter(self, module: nn.Module, fqn: str) -> bool:
        """filter_fn for torchao.quantize_ and our own passes: every nn.Linear the policy does not keep."""
        return isinstance(module, nn.Linear) and not self.keeps(fqn)


BUILTIN_POLICIES = ("keep-attn", "keep-ends")
_ATTN = re.compile(r"\.self_attn\.(q|k|v|o|qkv)_proj$")  # qkv_proj: the GPU engine's fused projection
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Policy:
    """Modules kept in high precision, by fully qualified name.

    keep-attn: every attention projection (q/k/v/o_proj, or the fused qkv_proj).
    keep-ends: the first and the last decoder block, and lm_head.
    A policy file lists one fnmatch pattern per line (e.g. `model.layers.0.*`, `lm_head`); # comments.
    """
    name: str
    patterns: tuple[str, ...] = ()
    attn: bool = False
    layers: tuple[int, ...] = ()

    @classmethod
    def builtin(cls, name: str, num_layers: int | None) -> "Policy":
        if name == "keep-attn":
            return cls(name, attn=True)
        if num_layers is None:
            raise ValueError("keep-ends needs the model's number of layers")
        return cls(name, patterns=("lm_head",), layers=(0, num_layers - 1))

    @classmethod
    def from_file(cls, path: Path) -> "Policy":
        if not path.is_file():
            raise UnknownVariantError(f"policy file {path} not found (built-in policies: {', '.join(BUILTIN_POLICIES)})")
        pats = tuple(line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
        pats = tuple(p for p in pats if p)
        if not pats:
            raise UnknownVariantError(f"policy file {path} lists no module patterns")
        return cls(str(path), patterns=pats)

    def keeps(self, fqn: str) -> bool:
        if self.attn and _ATTN.search(fqn):
            return True
        if self.layers:
            m = _LAYER.search(fqn)
            if m and int(m.group(1)) in self.layers:
                return True
        return any(fnmatch.fnmatchcase(fqn, p) for p in self.patterns)


REGISTRY: dict[str, Variant] = {}


def register(v: Variant) -> Variant:
    if v.name in REGISTRY:
        raise ValueError(f"variant {v.name!r} registered twice")
    REGISTRY[v.name] = v
    return v


def get_variant(name: str) -> Variant:
    """A registered variant; `base@policy` names resolve to the base variant (see split_policy)."""
    base, _ = split_policy(name)
    try:
        return REGISTRY[base]
    except KeyError:
        raise UnknownVariantError(f"unknown variant {base!r}; valid variants: {', '.join(REGISTRY)} "
                                  f"(optionally with @{'|@'.join(BUILTIN_POLICIES)} or @path/to/policy.txt)") from None


def split_policy(name: str) -> tuple[str, str | None]:
    base, sep, pol = name.partition("@")
    return base, (pol if sep else None)


def policy_for(name: str, num_layers: int | None = None) -> Policy | None:
    """The Policy named after '@' in a variant name, or None."""
    _, pol = split_policy(name)
    if pol is None:
        return None
    if pol in BUILTIN_POLICIES:
        return Policy.builtin(pol, num_layers)
    return Policy.from_file(Path(pol))


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
        _, pol = split_policy(n)
        if pol is not None and pol not in BUILTIN_POLICIES:
            Policy.from_file(Path(pol))
        if n not in seen:
            seen.append(n)
    return seen
