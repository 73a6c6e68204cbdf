"""Quantization variants: torchao configs on CUDA and CPU, int4 weight-only through torch's CPU kernel.

The entries (names, requirements, layouts) are in catalog.py; this module holds their apply and probe
functions, which the registry imports on first use. Each variant has a probe:
before any model is loaded, the probe quantizes one small linear on the target device and runs it,
so a missing kernel or package makes the cell `unsupported` with the library's own message rather
than a failure mid-sweep. Probe results are cached per device type.

Every apply passes `ctx.linear_filter`, so mixed-precision policies (@keep-attn, @keep-ends, files)
hold for every variant; the returned kernel names the config and the tensor types that now hold the
weights, and layers_changed counts the linears that really changed, both measured from the model.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from harness.variants import awq, int4_cpu
from harness.variants.inspect import count_converted, linear_weight_types, targeted_linears
from harness.variants.registry import ApplyContext, ApplyResult, NothingApplied

INT4_GROUP = int4_cpu.GROUP_SIZE


def _by_device(probe: Callable[[str], str | None]) -> Callable[[str, tuple[int, int] | None], str | None]:
    """These probes depend on the device type only."""
    return lambda device_type, compute_capability: probe(device_type)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _probe_dtype(device_type: str) -> torch.dtype:
    return torch.bfloat16 if device_type == "cuda" else torch.float32


def _probe_torchao(make_config: Callable[[], object], device_type: str) -> str | None:
    """Quantize a 256x256 linear with the config on the device and run it; None if that works."""
    try:
        from torchao.quantization import quantize_
    except ImportError as e:
        return f"torchao is not importable ({_first_line(e)})"
    try:
        cfg = make_config()
        dtype = _probe_dtype(device_type)
        m = nn.Sequential(nn.Linear(256, 256, bias=False, device=device_type, dtype=dtype))
        quantize_(m, cfg)
        m(torch.randn(2, 256, device=device_type, dtype=dtype))
    except Exception as e:  # noqa: BLE001  (any failure means no usable kernel; its message is the reason)
        return f"torchao {_config_name(make_config)} does not run on {device_type}: {_first_line(e)}"
    return None


def _config_name(make_config: Callable[[], object]) -> str:
    try:
        return type(make_config()).__name__
    except Exception:  # noqa: BLE001
        return getattr(make_config, "__name__", "config")


def _torchao_kernel(model: nn.Module, label: str) -> str:
    return f"torchao {label} -> {linear_weight_types(model)}"


# -- torchao configs, built lazily so importing this module never needs torchao ----------------------
def _int8_wo():
    from torchao.quantization import Int8WeightOnlyConfig
    return Int8WeightOnlyConfig()


def _int8_dq():
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    return Int8DynamicActivationInt8WeightConfig()


def _int4_wo_cuda():
    from torchao.quantization import Int4WeightOnlyConfig
    # the default "plain" packing needs the mslk package (PyPI: mslk-cuda, the `gpu` extra); tile_packed_to_4d
    # (tinygemm) runs without it
    return Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d")


def _fp8_wo():
    from torchao.quantization import Float8WeightOnlyConfig
    return Float8WeightOnlyConfig()


def _fp8_dq():
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


def _w4a8():
    from torchao.quantization import Float8DynamicActivationInt4WeightConfig
    return Float8DynamicActivationInt4WeightConfig()


_LABELS = {
    _int8_wo: "Int8WeightOnlyConfig",
    _int8_dq: "Int8DynamicActivationInt8WeightConfig",
    _int4_wo_cuda: f"Int4WeightOnlyConfig(group_size={INT4_GROUP}, int4_packing_format=tile_packed_to_4d)",
    _fp8_wo: "Float8WeightOnlyConfig",
    _fp8_dq: "Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())",
    _w4a8: "Float8DynamicActivationInt4WeightConfig",
}


def _quantize(model: nn.Module, make_config: Callable[[], object], ctx: ApplyContext) -> int:
    """torchao quantize_ on the linears the policy does not keep; returns how many changed."""
    from torchao.quantization import quantize_

    targets = targeted_linears(model, ctx.linear_filter)
    quantize_(model, make_config(), filter_fn=ctx.linear_filter)
    return count_converted(model, targets)


def _torchao_variant(make_config: Callable[[], object]):
    """(apply, probe) for a variant that is one torchao config."""
    def apply(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
        n = _quantize(model, make_config, ctx)
        return ApplyResult(kernel=_torchao_kernel(model, _LABELS[make_config]), layers_changed=n)

    @functools.lru_cache(maxsize=None)
    def probe(device_type: str) -> str | None:
        return _probe_torchao(make_config, device_type)

    return apply, probe


# -- int4 weight-only: torch's CPU kernel or torchao's tinygemm packing on CUDA -----------------------
def quantize_int4(model: nn.Module, ctx: ApplyContext) -> tuple[str, int]:
    """Round-to-nearest int4, group 128, on every linear the policy does not keep; returns the kernel
    and how many linears changed."""
    if ctx.device_type == "cpu":
        n = int4_cpu.swap_linears(model, ctx.linear_filter, INT4_GROUP)
        return int4_cpu.kernel_summary(model), n
    from harness.variants import gpu_kernels

    # tinygemm, with its 32-bit output-index limit handled (gpu_kernels.RowChunked)
    r = gpu_kernels.apply_kernel("int4-wo", "tinygemm", model, ctx)
    return r.kernel, r.layers_changed


def apply_int4_wo(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    """CPU: torch's int4 kernel. CUDA: the fastest available int4 kernel, measured (gpu_kernels.py)."""
    if ctx.device_type == "cpu":
        kernel, n = quantize_int4(model, ctx)
        return ApplyResult(kernel=kernel, layers_changed=n)
    from harness.variants import gpu_kernels

    return gpu_kernels.apply_auto("int4-wo", model, ctx)


def apply_fp8_wo(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    from harness.variants import gpu_kernels

    return gpu_kernels.apply_auto("fp8-wo", model, ctx)


def _explicit(fmt: str, kernel: str):
    """(apply, probe) of `fmt[kernel]`."""
    def apply(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
        from harness.variants import gpu_kernels

        return gpu_kernels.apply_kernel(fmt, kernel, model, ctx)

    def probe(device_type: str, compute_capability) -> str | None:
        from harness.variants import gpu_kernels

        return gpu_kernels.probe(fmt, kernel, device_type)

    return apply, probe


apply_int4_wo_tinygemm, probe_int4_wo_tinygemm = _explicit("int4-wo", "tinygemm")
apply_int4_wo_cutlass, probe_int4_wo_cutlass = _explicit("int4-wo", "cutlass")
apply_int4_wo_gemlite, probe_int4_wo_gemlite = _explicit("int4-wo", "gemlite")
apply_fp8_wo_torchao, probe_fp8_wo_torchao = _explicit("fp8-wo", "torchao")
apply_fp8_wo_gemlite, probe_fp8_wo_gemlite = _explicit("fp8-wo", "gemlite")


@functools.lru_cache(maxsize=None)
def probe_int4(device_type: str) -> str | None:
    if device_type == "cpu":
        return int4_cpu.probe()
    return _probe_torchao(_int4_wo_cuda, device_type)


def apply_int4_awq(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    rep = awq.awq_scale_(model, ctx)
    if rep.scaled_linears == 0:
        # int4 without any AWQ scale is int4-wo; recording it as int4-awq would be a silent lie
        raise NothingApplied(f"int4-awq: no linear was AWQ-scaled: {awq.why_unscaled(model, rep)}")
    kernel, n = quantize_int4(model, ctx)
    return ApplyResult(kernel=f"AWQ-scaled ({rep.scaled_linears} linears) + {kernel}", layers_changed=n,
                       calibration_s=rep.calibration_s, notes=rep.note())


apply_int8_wo, _probe_int8_wo = _torchao_variant(_int8_wo)
apply_int8_dq, _probe_int8_dq = _torchao_variant(_int8_dq)
_, _probe_fp8_wo = _torchao_variant(_fp8_wo)
apply_fp8_dq, _probe_fp8_dq = _torchao_variant(_fp8_dq)
apply_w4a8, _probe_w4a8_config = _torchao_variant(_w4a8)


@functools.lru_cache(maxsize=None)
def _probe_w4a8(device_type: str) -> str | None:
    """torchao 0.18 takes its fp8 x int4 kernels from the mslk package; say so when that is the cause."""
    import importlib.util

    why = _probe_w4a8_config(device_type)
    if why and "mslk" in why and importlib.util.find_spec("mslk") is None:
        return (f"torchao Float8DynamicActivationInt4WeightConfig needs the mslk package, which is not installed "
                f"(pip install mslk-cuda, or pip install .[gpu]) ({why})")
    return why


# probe(device_type, compute_capability), as the registry calls them (catalog.py names these)
probe_int8_wo = _by_device(_probe_int8_wo)
probe_int8_dq = _by_device(_probe_int8_dq)
probe_int4_wo = _by_device(probe_int4)
probe_fp8_wo = _by_device(_probe_fp8_wo)
probe_fp8_dq = _by_device(_probe_fp8_dq)
probe_w4a8 = _by_device(_probe_w4a8)
