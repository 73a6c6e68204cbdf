"""The variant registry: one entry per variant, read alike by the runner, the planner and the meters.

An entry (Variant) carries its storage Layout (bytes and compute format: the planner's projection and
the meters' MFU peak) and what the runner needs: requirements, so a cell can be `unsupported` before any
model is loaded; a probe of the installed stack; and apply(model, ctx), which returns the kernel that
will run and how many layers it changed.

No torch is imported here or in catalog.py, which lists the entries: apply and probe are named as
"module:function" and imported on first use, so `harness plan` and the parsing of variant names
(spec.py) stay light.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Union

from harness.variants.layout import Layout
from harness.variants.policy import Policy  # noqa: F401  (ApplyContext.policy; older imports name it from here)


class UnknownVariantError(ValueError):
    """An unknown variant or policy name; the message lists the valid names."""


VariantError = UnknownVariantError   # the planner's name for it


class NothingApplied(RuntimeError):
    """apply() transformed no layer: every linear was kept by the policy, too small for the kernel, or
    the method found nothing to act on (AWQ in an architecture it does not know). Reporting such a
    model under the variant's name would be a silent lie; the cell is `unsupported` with `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Requirements:
    devices: tuple[str, ...] = ("cpu", "cuda")     # torch device types with a kernel
    min_compute_capability: tuple[int, int] | None = None
    needs_torchao: bool = False
    feature: str | None = None                      # profile feature that must be true (e.g. "fp8")


@dataclass(frozen=True)
class ApplyResult:
    kernel: str                      # tensor type or op the linear layers now run
    layers_changed: int              # linear layers apply() transformed, counted on the model afterwards
    calibration_s: float | None = None
    notes: str = ""


@dataclass(frozen=True)
class ApplyContext:
    """What apply() may use besides the model: the device, dtype, calibration batches and the
    mixed-precision policy (modules it keeps in high precision), bound to the model's layer count."""
    device_type: str
    dtype: object
    calibration_ids: object | None = None   # LongTensor (n, seq) from the corpus tail, seeded
    policy: "Policy | None" = None
    # rows per decode step of the cells this model serves (their batch): the M at which a variant that
    # chooses its kernel by measurement (Variant.kernel_by_batch) compares the candidates
    decode_rows: int = 1

    def keeps(self, fqn: str) -> bool:
        return self.policy is not None and self.policy.keeps(fqn)

    def linear_filter(self, module, fqn: str) -> bool:
        """filter_fn for torchao.quantize_ and our own passes: every nn.Linear the policy does not keep."""
        from torch import nn

        return isinstance(module, nn.Linear) and not self.keeps(fqn)


ApplyFn = Callable[[object, ApplyContext], ApplyResult]
ProbeFn = Callable[[str, Union[tuple, None]], Union[str, None]]


def resolve(ref):
    """A callable, or the function a "package.module:function" string names (imported now)."""
    if ref is None or callable(ref):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep:
        raise ValueError(f"{ref!r} does not name a function as 'module:function'")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Variant:
    """A registered variant. `implementation` is apply(model, ctx) or its "module:function" name."""
    name: str
    description: str
    requires: Requirements
    implementation: ApplyFn | str = field(compare=False)
    # probe(device_type, compute_capability) -> why the installed stack cannot run the kernel, or None:
    # imports, compiled ops and one tiny layer, so `unsupported` names the real failure before loading.
    probe: ProbeFn | str | None = field(default=None, compare=False)
    # Whether the GPU engine may fuse q/k/v and gate/up into one linear before apply(); False for
    # variants that calibrate through transformers' own forward (it needs the unfused modules).
    fusable: bool = True
    no_kernel_note: str = ""          # appended to the reason on devices outside requires.devices
    layout: Layout | None = None      # every registered entry has one (register() checks)
    changes_weights: bool = True      # False for baseline only: it is exempt from NothingApplied
    # "int4-wo" for "int4-wo[cutlass]": an explicit kernel choice of a format, left out of `all`
    kernel_of: str | None = None
    # the kernel is chosen by measurement at the cell's decode rows (ApplyContext.decode_rows): on CUDA
    # the pipeline prepares the model once per batch size instead of once per group
    kernel_by_batch: bool = False

    def apply(self, model, ctx: ApplyContext) -> ApplyResult:
        """Transform the model in place. Raises NothingApplied where no layer changed."""
        result = resolve(self.implementation)(model, ctx)
        if not isinstance(getattr(result, "layers_changed", None), int):
            raise TypeError(f"{self.name}: apply returned {result!r}, not an ApplyResult with layers_changed")
        if self.changes_weights and result.layers_changed == 0:
            raise NothingApplied(f"{self.name} transformed no layer ({_kept(model, ctx)}{result.kernel})")
        return result

    def compute_format(self, baseline_format: str) -> str:
        """Format the matmuls run in (fp8, int8, or the baseline format for weight-only variants)."""
        if self.layout is None:
            raise UnknownVariantError(f"variant {self.name!r} has no storage layout")
        return self.layout.compute_for(baseline_format)

    def unsupported_reason(self, device_type: str, compute_capability: tuple[int, int] | None,
                           profile=None) -> str | None:
        """Why this variant cannot run here, or None. Checked before any model is loaded."""
        why = self._static_reason(device_type, compute_capability, profile)
        probe = resolve(self.probe) if why is None else None
        if probe is not None:
            found = probe(device_type, tuple(compute_capability) if compute_capability else None)
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


def _kept(model, ctx: ApplyContext | None) -> str:
    """'policy keep-all.txt keeps 29 of 29 linears; ' where a policy is why nothing changed."""
    if ctx is None or ctx.policy is None or not hasattr(model, "named_modules"):
        return ""
    from torch import nn

    linears = [fqn for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]
    return f"policy {ctx.policy.name} keeps {sum(map(ctx.keeps, linears))} of {len(linears)} linears; "


REGISTRY: dict[str, Variant] = {}


def register(v: Variant) -> Variant:
    if v.name in REGISTRY:
        raise ValueError(f"variant {v.name!r} registered twice")
    if v.layout is None:
        raise ValueError(f"variant {v.name!r} has no storage layout (the planner and the meters need one)")
    REGISTRY[v.name] = v
    return v
