"""Quantization variants: torchao configs on CUDA and CPU, int4 weight-only through torch's CPU kernel.

Each variant declares static requirements (device, compute capability, profile feature) and a probe:
before any model is loaded, the probe quantizes one small linear on the target device and runs it,
so a missing kernel or package makes the cell `unsupported` with the library's own message rather
than a failure mid-sweep. Probe results are cached per device type.

Every apply passes `ctx.linear_filter`, so mixed-precision policies (@keep-attn, @keep-ends, files)
hold for every variant; the returned kernel names the config and the tensor types that now hold the
weights, as measured from the model.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from harness.variants import awq, int4_cpu
from harness.variants.inspect import linear_weight_types
from harness.variants.registry import ApplyContext, ApplyResult, Requirements, Variant, register

INT4_GROUP = int4_cpu.GROUP_SIZE
# tinygemm's CUDA int4 kernel (`aten._weight_int4pack_mm`) is built for sm_80 and newer.
INT4_CUDA_CC = (8, 0)
# fp8 tensor cores: Ada (8.9) and Hopper (9.0); torchao asserts the same bound for fp8 dynamic.
FP8_CC = (8, 9)


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
    # the default "plain" packing needs the mslk package, which has no usable release
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


def _torchao_variant(make_config: Callable[[], object]):
    """(apply, probe) for a variant that is one torchao config."""
    def apply(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
        from torchao.quantization import quantize_

        quantize_(model, make_config(), filter_fn=ctx.linear_filter)
        return ApplyResult(kernel=_torchao_kernel(model, _LABELS[make_config]))

    @functools.lru_cache(maxsize=None)
    def probe(device_type: str) -> str | None:
        return _probe_torchao(make_config, device_type)

    return apply, probe


# -- int4 weight-only: torch's CPU kernel or torchao's tinygemm packing on CUDA -----------------------
def quantize_int4(model: nn.Module, ctx: ApplyContext) -> str:
    """Round-to-nearest int4, group 128, on every linear the policy does not keep; returns the kernel."""
    if ctx.device_type == "cpu":
        int4_cpu.swap_linears(model, ctx.linear_filter, INT4_GROUP)
        return int4_cpu.kernel_summary(model)
    from torchao.quantization import quantize_

    quantize_(model, _int4_wo_cuda(), filter_fn=ctx.linear_filter)
    return _torchao_kernel(model, _LABELS[_int4_wo_cuda])


@functools.lru_cache(maxsize=None)
def probe_int4(device_type: str) -> str | None:
    if device_type == "cpu":
        return int4_cpu.probe()
    return _probe_torchao(_int4_wo_cuda, device_type)


def _apply_int4_wo(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    return ApplyResult(kernel=quantize_int4(model, ctx))


def _apply_int4_awq(model: nn.Module, ctx: ApplyContext) -> ApplyResult:
    rep = awq.awq_scale_(model, ctx)
    kernel = quantize_int4(model, ctx)
    return ApplyResult(kernel=f"AWQ-scaled ({rep.scaled_linears} linears) + {kernel}",
                       calibration_s=rep.calibration_s, notes=rep.note())


_apply_int8_wo, _probe_int8_wo = _torchao_variant(_int8_wo)
_apply_int8_dq, _probe_int8_dq = _torchao_variant(_int8_dq)
_apply_fp8_wo, _probe_fp8_wo = _torchao_variant(_fp8_wo)
_apply_fp8_dq, _probe_fp8_dq = _torchao_variant(_fp8_dq)
_apply_w4a8, _probe_w4a8_config = _torchao_variant(_w4a8)


@functools.lru_cache(maxsize=None)
def _probe_w4a8(device_type: str) -> str | None:
    """torchao 0.18 takes its fp8 x int4 kernels from the mslk package; say so when that is the cause."""
    import importlib.util

    why = _probe_w4a8_config(device_type)
    if why and "mslk" in why and importlib.util.find_spec("mslk") is None:
        return f"torchao Float8DynamicActivationInt4WeightConfig needs the mslk package, which is not installed ({why})"
    return why


INT4_REQUIRES = Requirements(devices=("cpu", "cuda"), min_compute_capability=INT4_CUDA_CC)
FP8_REQUIRES = Requirements(devices=("cuda",), min_compute_capability=FP8_CC, needs_torchao=True, feature="fp8")

register(Variant("int8-wo", "int8 weight-only, per-channel scales (torchao Int8WeightOnlyConfig)",
                       Requirements(needs_torchao=True), _apply_int8_wo, probe=_by_device(_probe_int8_wo)))
register(Variant("int8-dq", "int8 dynamic per-token activations x int8 per-channel weights "
                                  "(torchao Int8DynamicActivationInt8WeightConfig)",
                       Requirements(needs_torchao=True), _apply_int8_dq, probe=_by_device(_probe_int8_dq)))
register(Variant("int4-wo", "int4 weight-only, round-to-nearest, group 128 (CUDA: torchao tile_packed_to_4d; "
                                  "CPU: torch aten._weight_int4pack_mm_for_cpu)",
                       INT4_REQUIRES, _apply_int4_wo, probe=_by_device(probe_int4)))
register(Variant("int4-awq", "int4 weight-only g128 after AWQ activation-aware channel scaling "
                                   "(calibrated on corpus tokens, folded into the preceding ops)",
                       INT4_REQUIRES, _apply_int4_awq, probe=_by_device(probe_int4)))
register(Variant("fp8-wo", "fp8 e4m3 weight-only (torchao Float8WeightOnlyConfig)",
                       FP8_REQUIRES, _apply_fp8_wo, probe=_by_device(_probe_fp8_wo)))
register(Variant("fp8-dq", "fp8 e4m3 dynamic per-row activations x fp8 per-row weights "
                                 "(torchao Float8DynamicActivationFloat8WeightConfig, PerRow)",
                       FP8_REQUIRES, _apply_fp8_dq, probe=_by_device(_probe_fp8_dq)))
# fp8 x int4 kernels in torchao 0.18 come from the mslk package (preshuffled WGMMA kernels for sm_90);
# the probe reports its absence in torchao's own words.
register(Variant("w4a8", "int4 weights x fp8 dynamic activations (torchao Float8DynamicActivationInt4WeightConfig)",
                       Requirements(devices=("cuda",), min_compute_capability=(9, 0), needs_torchao=True,
                                    feature="fp8"),
                       _apply_w4a8, probe=_by_device(_probe_w4a8)))
