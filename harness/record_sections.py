"""Typed detail sections of a Record (schema 3): how its figures were made, grouped by who makes them.

Each section is a frozen dataclass whose fields default to None ("not known": never 0) or to an
empty tuple; a Record always holds one of each, empty where nothing filled it. They are stored as
nested objects in records.jsonl and as JSON strings in the flat CSV/Parquet view. Import them from
`harness.records`, which re-exports them.

Schema 2 kept these facts as untyped keys of `Record.extra`; `split_legacy_extra` maps those keys
onto the sections (the 2 -> 3 upgrade uses it, and so may a producer still building that dict).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any


@dataclass(frozen=True)
class EngineInfo:
    """How the engine that ran the cell was prepared (all outside the timed region)."""
    load_s: float | None = None                  # model load: read weights and instantiate
    apply_s: float | None = None                 # variant application, calibration included
    calibration_tokens: int | None = None        # tokens the variant's calibration passes saw
    layers_changed: int | None = None            # linear layers the variant transformed (0 only for baseline)
    fused_projections: bool | None = None        # q/k/v and gate/up each fused into one matmul
    compile_mode: str | None = None              # inductor mode of the compiled step; None: not compiled
    coordinate_descent_tuning: bool | None = None
    decode_attention: str | None = None          # attention of the compiled decode step: sdpa | flex
    compile_choice: dict[str, Any] | None = None  # chosen configuration, each candidate's step time, source
    prefill: dict[str, Any] | None = None         # eager or compiled prefill: chosen, both times, source
    reused: bool | None = None                   # built by an earlier measurement of the same cell
    notes: tuple[str, ...] = ()                  # why a faster decode path was not used
    variant_notes: str | None = None             # what the variant's apply chose or found (kernel choice, AWQ)
    build_peak_bytes: int | None = None          # layer-by-layer build: the CUDA allocator's peak over it (before
                                                 # the timed window, whose peak is Record.peak_vram_bytes)


@dataclass(frozen=True)
class EnergyDetail:
    """Beside the gross energy fields of the Record: the idle-subtracted split and the power trace."""
    net_basis: str | None = None                 # e.g. "net (idle 120 W subtracted)"
    net_j_per_token_decode: float | None = None  # gross minus idle power x window, per decode token
    net_j_per_token_prefill: float | None = None  # the same, per prompt token
    j_per_output_token: float | None = None      # full-pass energy / (batch x new tokens), ML.ENERGY's figure
    idle_power_method: str | None = None         # how Record.idle_power_w was measured
    power_timeline: dict[str, Any] | None = None  # PowerTimeline.to_json(): t_s, power_w, ... columns, rate_hz


@dataclass(frozen=True)
class VramBudgetDetail:
    """Peak VRAM against what it should be: weights + KV cache + activations + runtime."""
    expected_bytes: int | None = None
    weight_bytes: int | None = None              # measured from the tensors
    kv_cache_bytes: int | None = None            # from the model shape
    activation_bytes: int | None = None          # planner formula, prefill tokens in one chunk
    runtime_bytes: int | None = None             # NVML used - torch reserved at the same moment
    peak_bytes: int | None = None
    ratio: float | None = None                   # peak / expected
    within_tolerance: bool | None = None
    tolerance: float | None = None               # ratio allowed above 1 before it is flagged
    method: str | None = None


@dataclass(frozen=True)
class MemoryDetail:
    """Where the Record's memory figures come from."""
    rss_method: str | None = None                # how peak_rss_bytes was sampled
    peak_vram_source: str | None = None          # nvml_process | nvml_device | torch_reserved | unavailable
    peak_vram_method: str | None = None          # e.g. torch.cuda.max_memory_allocated (meters off)
    torch_max_allocated_bytes: int | None = None
    torch_max_reserved_bytes: int | None = None
    nvml_process_bytes: int | None = None        # this process's NVML figure at the window's end
    vram_notes: tuple[str, ...] = ()
    budget: VramBudgetDetail | None = None       # None: a term of the budget was unknown


@dataclass(frozen=True)
class BandwidthDetail:
    """The terms of Record.achieved_bandwidth_bytes_per_s, mbu and mfu."""
    copy_bandwidth_bytes_per_s: float | None = None   # device-to-device copy measured in the same run
    copy_bandwidth_method: str | None = None
    share_of_profile_peak: float | None = None   # achieved / the profile's nominal bandwidth
    decode_bytes_per_step: float | None = None   # weights + KV cache read per decode step
    decode_context_tokens: float | None = None   # context length the KV bytes were counted for
    prefill_flop_per_s: float | None = None
    mfu_format: str | None = None                # compute format whose peak MFU divides by


@dataclass(frozen=True)
class QualityDetail:
    """How the quality figures (perplexity, KL, top-1) were made, and why the verdict is what it is."""
    reason: str | None = None                    # the verdict's reason
    scored_tokens: int | None = None             # positions scored, the same for every variant
    forward_tokens: int | None = None            # tokens run through the model (windows overlap)
    eval_s: float | None = None
    baseline_perplexity: float | None = None
    window_tokens: int | None = None
    stride_tokens: int | None = None
    reference_dtype: str | None = None           # dtype the baseline log-probs were stored in
    kl_definition: str | None = None             # units and direction of kl_mean / kl_p99
    note: str | None = None


# Record field name -> section class
SECTIONS: dict[str, type] = {"engine": EngineInfo, "energy": EnergyDetail, "memory": MemoryDetail,
                             "bandwidth": BandwidthDetail, "quality": QualityDetail}


def _section_type(hint) -> type | None:
    for t in (hint, *typing.get_args(hint)):
        if is_dataclass(t):
            return t
    return None


def build_section(cls: type, d: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(instance of cls from d, the keys of d it has no field for)."""
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in fields(cls)}
    kw, unknown = {}, {}
    for k, v in d.items():
        if k not in names:
            unknown[k] = v
            continue
        sub = _section_type(hints[k])
        if sub is not None and isinstance(v, dict):
            v, rest = build_section(sub, v)
            unknown.update({f"{k}.{x}": y for x, y in rest.items()})
        elif isinstance(names[k].default, tuple) and v is not None:
            v = tuple(v)
        kw[k] = v
    return cls(**kw), unknown


# schema-2 `extra` key -> (section, field)
_LEGACY_FLAT = {
    "load_s": ("engine", "load_s"), "apply_s": ("engine", "apply_s"),
    "calibration_tokens": ("engine", "calibration_tokens"), "fused_projections": ("engine", "fused_projections"),
    "compile_mode": ("engine", "compile_mode"), "coordinate_descent_tuning": ("engine", "coordinate_descent_tuning"),
    "engine_reused": ("engine", "reused"), "engine_notes": ("engine", "notes"),
    "j_per_output_token": ("energy", "j_per_output_token"), "idle_method": ("energy", "idle_power_method"),
    "power_timeline": ("energy", "power_timeline"),
    "rss_method": ("memory", "rss_method"), "peak_vram_source": ("memory", "peak_vram_source"),
    "peak_vram_method": ("memory", "peak_vram_method"), "vram_budget": ("memory", "budget"),
    "copy_bandwidth_bytes_per_s": ("bandwidth", "copy_bandwidth_bytes_per_s"),
    "copy_bandwidth_method": ("bandwidth", "copy_bandwidth_method"),
    "bandwidth_share_of_profile_peak": ("bandwidth", "share_of_profile_peak"),
    "decode_bytes_per_step": ("bandwidth", "decode_bytes_per_step"),
    "decode_context_for_kv_bytes": ("bandwidth", "decode_context_tokens"),
    "prefill_flop_per_s": ("bandwidth", "prefill_flop_per_s"), "mfu_format": ("bandwidth", "mfu_format"),
}
# schema-2 `extra` key holding a dict -> (section, {its key: field})
_LEGACY_NESTED = {
    "energy_net": ("energy", {"basis": "net_basis", "j_per_token_decode": "net_j_per_token_decode",
                              "j_per_token_prefill": "net_j_per_token_prefill"}),
    "vram": ("memory", {"torch_max_allocated_bytes": "torch_max_allocated_bytes",
                        "torch_max_reserved_bytes": "torch_max_reserved_bytes",
                        "process_bytes": "nvml_process_bytes", "notes": "vram_notes"}),
    "quality": ("quality", {"reason": "reason", "tokens": "scored_tokens", "forward_tokens": "forward_tokens",
                            "eval_s": "eval_s", "baseline_perplexity": "baseline_perplexity",
                            "window": "window_tokens", "stride": "stride_tokens",
                            "reference_dtype": "reference_dtype", "kl": "kl_definition", "note": "note"}),
}


def split_legacy_extra(extra: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """({section: {field: value}}, the keys no section knows) from a schema-2 `extra` dict. A nested
    key that was None (e.g. no idle-subtracted energy) leaves its fields unknown."""
    parts: dict[str, dict[str, Any]] = {}
    rest: dict[str, Any] = {}
    for key, value in extra.items():
        if key in _LEGACY_FLAT:
            section, name = _LEGACY_FLAT[key]
            parts.setdefault(section, {})[name] = value
        elif key in _LEGACY_NESTED and (value is None or isinstance(value, dict)):
            section, names = _LEGACY_NESTED[key]
            inner = parts.setdefault(section, {})
            left = {}
            for k, v in (value or {}).items():
                if k in names:
                    inner[names[k]] = v
                else:
                    left[k] = v
            if left:
                rest[key] = left
        else:
            rest[key] = value
    return parts, rest
