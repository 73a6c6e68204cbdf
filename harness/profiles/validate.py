"""Validation of one parsed profile document into a `Profile`: the key table below is the schema.

Each key has a parser that checks type, unit and range and converts to SI; any problem raises a
`ProfileError` naming the file, the key (dotted for nested keys) and the problem.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from harness.profiles.schema import (BASELINE_FORMATS, CC_RE, CLASSES, FEATURES, FORMATS, ID_RE,
                                     MIN_BANDWIDTH_BYTES_PER_S, MIN_MEMORY_BYTES, ORT_EPS,
                                     REQUIRED_DENSE_FORMATS, TERA, Npu, Profile, ProfileError)


def _type_name(v: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
            dict: "a mapping"}.get(type(v), type(v).__name__)


def _number(path, key, v, *, unit: str, integer: bool = False, minimum: float | None = None,
            hint: str = "") -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        want = "an integer" if integer else "a number"
        tip = f"; units go in the key name, so write the bare number in {unit}" if isinstance(v, str) else ""
        raise ProfileError(path, key, f"wrong unit or type: expected {want} in {unit}, got {_type_name(v)} {v!r}{tip}")
    if v < 0:
        raise ProfileError(path, key, f"negative value {v!r}: must be >= 0 ({unit})")
    if minimum is not None and v < minimum:
        raise ProfileError(path, key, f"implausibly small {v!r} {unit}{hint}")
    return v


def _opt_number(path, key, v, **kw):
    return None if v is None else _number(path, key, v, **kw)


def _string(path, key, v) -> str:
    if not isinstance(v, str):
        raise ProfileError(path, key, f"expected a string, got {_type_name(v)} {v!r}")
    return v


def _opt_bool(path, key, v) -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise ProfileError(path, key, f"expected true, false or null, got {_type_name(v)} {v!r}")
    return v


def _mapping(path, key, v) -> dict:
    if not isinstance(v, dict):
        raise ProfileError(path, key, f"expected a mapping, got {_type_name(v)} {v!r}")
    return v


def _str_list(path, key, v) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ProfileError(path, key, f"expected a list of strings, got {_type_name(v)} {v!r}")
    return tuple(_string(path, f"{key}[{i}]", x) for i, x in enumerate(v))


def _tflops_map(path, key, v, *, required: tuple[str, ...] = (), known: tuple[str, ...] | None = FORMATS):
    """{format: TFLOPS | null} -> {format: FLOP/s | None}."""
    m = _mapping(path, key, v)
    out = {}
    for k, x in m.items():
        if known is not None and k not in known:
            raise ProfileError(path, f"{key}.{k}", f"unknown format name {k!r}; known formats: {', '.join(known)}")
        out[k] = None if x is None else _number(path, f"{key}.{k}", x, unit="TFLOPS (TOPS for int formats)") * TERA
    missing = [f for f in required if f not in m]
    if missing:
        raise ProfileError(path, f"{key}.{missing[0]}", f"missing key (write null if not published); "
                                                         f"required formats: {', '.join(required)}")
    if known is not None:  # canonical order; a dense map carries every format (None = not published)
        out = {f: out.get(f) for f in known if f in out or required}
    return MappingProxyType(out)


def _id(path, key, v):
    s = _string(path, key, v)
    if not ID_RE.match(s):
        raise ProfileError(path, key, f"{s!r} is not a valid id: lower-case letters, digits, '.', '-'")
    return s


def _choice(allowed, what: str):
    """A validator for a string that must be one of `allowed`."""
    def check(path, key, v):
        s = _string(path, key, v)
        if s not in allowed:
            raise ProfileError(path, key, f"unknown {what} {s!r}; one of {', '.join(allowed)}")
        return s
    return check


_class = _choice(CLASSES, "class")


def _memory(path, key, v):
    return _opt_number(path, key, v, unit="bytes", integer=True, minimum=MIN_MEMORY_BYTES,
                       hint=" (looks like GB: this key takes bytes, e.g. 80_000_000_000)")


def _bandwidth(path, key, v):
    return _opt_number(path, key, v, unit="bytes/s", minimum=MIN_BANDWIDTH_BYTES_PER_S,
                       hint=" (looks like GB/s: this key takes bytes/s, e.g. 3_350_000_000_000)")


def _power(path, key, v):
    if v == 0:
        raise ProfileError(path, key, "power of 0 W: write null if not published")
    return _opt_number(path, key, v, unit="W")


def _cc(path, key, v):
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        raise ProfileError(path, key, f"expected a quoted string like '9.0', got the number {v!r} "
                                      "(as a number 8.10 would read as 8.1)")
    s = _string(path, key, v)
    if not CC_RE.match(s):
        raise ProfileError(path, key, f"{s!r} is not a compute capability like '9.0'")
    return s


def _features(path, key, v):
    m = _mapping(path, key, v)
    for k, x in m.items():
        if k not in FEATURES:
            raise ProfileError(path, f"{key}.{k}", f"unknown feature {k!r}; known: {', '.join(FEATURES)}")
        _opt_bool(path, f"{key}.{k}", x)
    return MappingProxyType({f: m.get(f) for f in FEATURES})


def _sources(path, key, v):
    s = _str_list(path, key, v)
    if not s:
        raise ProfileError(path, key, "at least one source is required (where the figures come from)")
    return s


def _npu(path, key, v):
    if v is None:
        return None
    m = _mapping(path, key, v)
    allowed = ("tops", "precision", "sparse", "unverified_tops", "notes")
    for k in m:
        if k not in allowed:
            raise ProfileError(path, f"{key}.{k}", f"unknown key; allowed: {', '.join(allowed)}")
    if "tops" not in m:
        raise ProfileError(path, f"{key}.tops", "missing key (write null if not published)")
    prec = m.get("precision")
    return Npu(tops=_opt_number(path, f"{key}.tops", m["tops"], unit="TOPS"),
               precision=None if prec is None else _string(path, f"{key}.precision", prec),
               sparse=_opt_bool(path, f"{key}.sparse", m.get("sparse")),
               unverified_tops=_opt_number(path, f"{key}.unverified_tops", m.get("unverified_tops"), unit="TOPS"),
               notes=_string(path, f"{key}.notes", m.get("notes", "")))


def _eps(path, key, v):
    eps = _str_list(path, key, v)
    for i, e in enumerate(eps):
        if e not in ORT_EPS:
            raise ProfileError(path, f"{key}[{i}]", f"unknown ONNX Runtime execution provider {e!r}; known: {', '.join(ORT_EPS)}")
    return eps


_baseline = _choice(BASELINE_FORMATS, "baseline format")


def _memory_options(path, key, v):
    if not isinstance(v, list):
        raise ProfileError(path, key, f"expected a list of byte counts, got {_type_name(v)} {v!r}")
    return tuple(_memory(path, f"{key}[{i}]", x) for i, x in enumerate(v))


def _bandwidth_variants(path, key, v):
    m = _mapping(path, key, v)
    return MappingProxyType({str(k): _bandwidth(path, f"{key}.{k}", x) for k, x in m.items()})


def _power_range(path, key, v):
    if not isinstance(v, list) or len(v) != 2:
        raise ProfileError(path, key, f"expected [min_w, max_w], got {v!r}")
    return tuple(_number(path, f"{key}[{i}]", x, unit="W") for i, x in enumerate(v))


def _derived(path, key, v):
    m = _mapping(path, key, v)
    if "basis" not in m:
        raise ProfileError(path, f"{key}.basis", "derived estimates need a 'basis' saying how they were derived")
    return MappingProxyType(dict(m))


@dataclass(frozen=True)
class Key:
    name: str                     # key in the YAML file
    attr: str                     # Profile attribute
    parse: Callable[[Any, str, Any], Any]
    required: bool = False


KEYS: tuple[Key, ...] = (
    Key("id", "id", _id, True),
    Key("name", "name", _string, True),
    Key("class", "class_", _class, True),
    Key("memory_bytes", "memory_bytes", _memory, True),
    Key("bandwidth_bytes_per_s", "bandwidth_bytes_per_s", _bandwidth, True),
    Key("peak_dense_tflops", "peak_flops", lambda p, k, v: _tflops_map(p, k, v, required=REQUIRED_DENSE_FORMATS), True),
    Key("power_w", "power_w", _power, True),
    Key("compute_capability", "compute_capability", _cc, True),
    Key("features", "features", _features, True),
    Key("sources", "sources", _sources, True),
    Key("vendor", "vendor", _string),
    Key("memory_type", "memory_type", _string),
    Key("memory_options_bytes", "memory_options_bytes", _memory_options),
    Key("bandwidth_variants_bytes_per_s", "bandwidth_variants_bytes_per_s", _bandwidth_variants),
    Key("peak_sparse_tflops", "peak_sparse_flops", lambda p, k, v: MappingProxyType({}) if v is None else _tflops_map(p, k, v)),
    Key("peak_other_tflops", "peak_other_flops", lambda p, k, v: _tflops_map(p, k, v, known=None)),
    Key("sparse_2to4_speedup", "sparse_2to4_speedup", lambda p, k, v: _opt_number(p, k, v, unit="x (ratio)")),
    Key("npu", "npu", _npu),
    Key("power_range_w", "power_range_w", _power_range),
    Key("gfx_target", "gfx_target", lambda p, k, v: None if v is None else _string(p, k, v)),
    Key("baseline_format", "baseline_format", _baseline),
    Key("software", "software", _str_list),
    Key("onnxruntime_eps", "onnxruntime_eps", _eps),
    Key("nvml_names", "nvml_names", _str_list),
    Key("cpu_model_names", "cpu_model_names", _str_list),
    Key("derived_estimates", "derived_estimates", _derived),
    Key("notes", "notes", _string),
)
KEY_NAMES = tuple(k.name for k in KEYS)


def profile_from_mapping(data: Any, path: str | Path) -> Profile:
    """Validate one parsed YAML document into a Profile; raise ProfileError naming file, key, problem."""
    if not isinstance(data, dict):
        raise ProfileError(path, "<document>", f"expected a mapping of keys, got {_type_name(data)}")
    for k in data:
        if k not in KEY_NAMES:
            near = difflib.get_close_matches(str(k), KEY_NAMES, n=1, cutoff=0.5)
            tip = f" (did you mean {near[0]!r}? units go in the key name)" if near else ""
            raise ProfileError(path, str(k), f"unknown key{tip}; known keys: {', '.join(KEY_NAMES)}")
    values = {}
    for spec in KEYS:
        if spec.name not in data:
            if spec.required:
                raise ProfileError(path, spec.name, "missing required key (write null where a figure is not published)")
            continue
        values[spec.attr] = spec.parse(path, spec.name, data[spec.name])
    folder = Path(path).parent.name
    if folder in CLASSES and folder != values["class_"]:
        raise ProfileError(path, "class", f"class {values['class_']!r} but the file lives in the {folder!r} folder")
    return Profile(**values, source_file=str(path))
