"""Run options, declared once. `harness run`'s flags (harness/cli/run_options.py), the sweep
definition in run.json (`dataclasses.asdict`) and what the runner consumes are all these frozen
dataclasses; nothing else types an option or its default.

Field metadata, set through `opt()`:
  help            the CLI help text
  flag            the CLI flag where it is not --<field-name> (a nested group's `prefix` is added)
  choices         the valid values of a string field
  min, min_open   the numeric range (bounds a number, or every item of a comma list)
  path            "file" or "dir": the CLI takes a path
  flags           Flag(name, value, help): each flag sets the field to its value (--no-compile);
                  `conflict` is the error when two of them are given together
  prefix          a nested group whose flags are --<prefix>-<field> (quality)
  cli=False       not an option: internal, or derived from another field
  per_invocation  how this invocation runs, not what the sweep measures: on --resume it comes from
                  the command line and is never compared with the stored run

No click here, and no torch (harness.quality.settings is light once harness.quality's package
import is; see tests/test_options.py).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

from harness.models.spec import EMBEDDED_DEFAULT
from harness.quality.settings import QualitySettings

DEFAULT_WARMUP = 1
DEFAULT_MIN_REPEATS = 3
DEFAULT_MIN_SECONDS = 3.0
DEFAULT_MAX_REPEATS = 10_000
# NVML's energy counter updates about every 100 ms on the lab H100, so each window edge can be one
# period stale: ~2% worst case at 10 s (harness/meters/gpu_energy.py, anchors.md "Energy measurement
# practice"; flagged below its own DEFAULT_MIN_WINDOW_S, also 10 s).
DEFAULT_ENERGY_WINDOW_S = 10.0
# A cell of the default sweep takes seconds; a compiled 70B cell with max-autotune tens of minutes.
DEFAULT_CELL_TIMEOUT_S = 1800.0

# Variants of the default sweep: every variant with a CPU kernel on the stack the Makefile installs
# (fp8, w4a8 and the 2:4 variants have none; `--variants all` shows them as unsupported).
DEFAULT_VARIANTS = ("baseline", "int8-wo", "int8-dq", "int4-wo", "int4-awq", "unstructured-50")
# --backends auto (the default): resolved by harness run before the sweep is expanded (harness.backends.defaults).
AUTO_BACKENDS = "auto"
# The ORT rows --backends auto adds on CPU: fp32, dynamic int8 and int4 MatMulNBits, the builder's three modes
# (harness/backends/ort/recipes.py); int8-wo is the same int8 weights with fp32 activations, int8-static destroys
# quality on SmolLM2 (see recipes.py).
ORT_DEFAULT_VARIANTS = ("baseline", "int8-dq", "int4-wo")
# Meters during the timed loop: on, off, or alternate (the overhead benchmark: every repetition is
# measured once with and once without, in ABBA order so that a slow drift cancels).
METER_MODES = ("on", "off", "alternate")
TUNE_MODES = ("auto", "on", "off")
COMPILE_MODES = ("default", "max-autotune")
ISOLATION_MODES = ("process", "none")
EXECUTORS = ("local", "ray")
# How long a Ray sweep waits for a live node advertising a cell's profile before the cell is
# `unsupported: no node with profile X` (a node joining takes seconds; a fleet's nightly slot minutes).
DEFAULT_RAY_NODE_TIMEOUT_S = 60.0

# --quick: a small workload for smoke tests; applied only to options the user did not set. Keyed by
# the options' parameter names (flag without dashes), values as typed on the command line.
QUICK = {"batch": "1", "prompt_tokens": "32", "new_tokens": "16", "warmup": 1, "repeats": 2, "min_seconds": 0.5}


@dataclass(frozen=True)
class Flag:
    name: str        # e.g. --no-compile
    value: Any       # what the field becomes when the flag is given
    help: str


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory=None, **meta) -> Any:
    """A dataclass field with its CLI metadata (see the module docstring for the keys)."""
    md = {"help": help, **meta}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass(frozen=True)
class MeterSettings:
    """The timed loop of a cell (harness.pipeline.timed)."""
    warmup: int = opt(DEFAULT_WARMUP, "Untimed passes per cell.", min=0)
    min_repeats: int = opt(DEFAULT_MIN_REPEATS, "Minimum timed passes per cell.", flag="--repeats", min=1)
    min_seconds: float = opt(DEFAULT_MIN_SECONDS, "Minimum timed seconds per cell (passes repeat until both "
                             "minimums are met).", min=0)
    max_repeats: int = opt(DEFAULT_MAX_REPEATS, cli=False)


@dataclass(frozen=True)
class SweepAxes:
    """What is measured: expanded by harness.sweep.expand into an ordered list of cells."""
    models: tuple[str, ...] = opt((EMBEDDED_DEFAULT,), "smollm2-135m (embedded, real weights), synthetic:<preset>, "
                                  "a safetensors folder or a .gguf file.", flag="--model")
    variants: tuple[str, ...] = opt(DEFAULT_VARIANTS, "Comma list of variant names, or 'all'.")
    batch_sizes: tuple[int, ...] = opt((1,), "Batch sizes, comma list.", flag="--batch", min=1)
    prompt_tokens: tuple[int, ...] = opt((128,), "Prompt lengths, comma list.", min=1)
    new_tokens: tuple[int, ...] = opt((32,), "Generated tokens per pass, comma list.", min=1)
    backends: tuple[str, ...] = opt((AUTO_BACKENDS,), "pytorch (the harness engine: eager on CPU, a compiled step "
                                    "in a CUDA graph on GPU), transformers-generate (transformers' eager generate(), "
                                    "what users get by default, for comparison), ort (ONNX Runtime through "
                                    "onnxruntime-genai, the [ort] extra) and/or llama.cpp (GGUF files through "
                                    "llama-cpp-python, the [llama] extra); plugins add more. auto: pytorch, plus ort "
                                    f"for {'/'.join(ORT_DEFAULT_VARIANTS)} on a local CPU run of the embedded default "
                                    "model when onnxruntime-genai imports (harness.backends.defaults; one line says "
                                    "why when it does not).")
    backend_variants: tuple[str, ...] = opt((), "Comma list of backend=variant pairs (ort=baseline,ort=int4-wo): a "
                                            "backend named here runs only the variants paired with it, the others "
                                            "are left out of the sweep (no record); a backend not named runs every "
                                            "variant. --backends auto sets it for ort when it adds ort.")
    repetitions: int = opt(1, "Measure each cell this many times on the same prepared engine (one record each; "
                           "the report gives their coefficient of variation).", min=1)
    meters: str = opt("on", choices=METER_MODES, flags=(
        Flag("--no-meters", "off", "Turn off energy windows, the power sampler and the RSS sampler."),
        Flag("--meter-overhead", "alternate", "Benchmark the meters' own cost: measure every repetition once with "
             "meters and once without (ABBA order, equal windows); the report compares decode tok/s.")),
        conflict="--meter-overhead compares meters on with meters off; it cannot run with --no-meters")

    def __post_init__(self) -> None:
        if self.repetitions < 1:
            raise ValueError(f"repetitions must be at least 1, got {self.repetitions}")
        if self.meters not in METER_MODES:
            raise ValueError(f"meters must be one of {', '.join(METER_MODES)}, got {self.meters!r}")
        from harness.backends import backend_names   # the backend registry (torch-free)

        if AUTO_BACKENDS in self.backends and len(self.backends) > 1:
            raise ValueError(f"--backends {AUTO_BACKENDS} stands alone, got {','.join(self.backends)}")
        unknown = [b for b in self.backends if b not in backend_names() and b != AUTO_BACKENDS]
        if unknown:
            raise ValueError(f"unknown backend(s) {unknown}; valid backends: {AUTO_BACKENDS}, {', '.join(backend_names())}")
        stray = sorted(set(self.variants_by_backend()) - set(self.backends))
        if stray and self.backends != (AUTO_BACKENDS,):      # auto: checked once it is resolved
            raise ValueError(f"--backend-variants names backend(s) {stray} that are not in --backends "
                             f"{','.join(self.backends)}")
        for name in ("models", "variants", "backends", "batch_sizes", "prompt_tokens", "new_tokens"):
            if not getattr(self, name):
                raise ValueError(f"sweep axis {name} is empty")
        for name in ("batch_sizes", "prompt_tokens", "new_tokens"):
            bad = [v for v in getattr(self, name) if v < 1]
            if bad:
                raise ValueError(f"sweep axis {name} needs positive integers, got {bad}")

    def variants_by_backend(self) -> dict[str, tuple[str, ...]]:
        """--backend-variants as {backend: its variants, in the order given}."""
        out: dict[str, tuple[str, ...]] = {}
        for pair in self.backend_variants:
            backend, sep, variant = pair.partition("=")
            if not sep or not backend.strip() or not variant.strip():
                raise ValueError(f"--backend-variants takes backend=variant pairs, got {pair!r}")
            out[backend.strip()] = out.get(backend.strip(), ()) + (variant.strip(),)
        return out


ISOLATION_HELP = ("process: each model group runs in a spawned worker process supervised by the parent, a crash "
                  "becomes a failed record; none: in this process, for debugging")


@dataclass(frozen=True)
class RunSettings:
    """How every cell is measured; picklable, so a worker process gets the same settings."""
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.")
    meter: MeterSettings = opt(factory=MeterSettings)
    gpus: int = opt(1, "Tensor-parallel ranks per cell: one process per GPU (NCCL), the lean decoder sharded "
                    "Megatron-style (KV heads must split evenly). With --device cpu: gloo ranks on CPU, for "
                    "tests. A machine with fewer GPUs records the cells as unsupported.", min=1)
    corpus: str | None = opt(None, "UTF-8 text file for prompts and calibration (default: pydoc_data.topics "
                             "prose).", path="file")
    cpu_power_w: float | None = opt(None, "CPU package power for the energy estimate when RAPL is unreadable "
                                    "(default: profile's).", min=0, min_open=True)
    # refuse a model whose weights need more than 90% of free memory
    memory_headroom: float = opt(0.10, cli=False)
    compile: bool = opt(True, flags=(Flag("--no-compile", False, "GPU: capture the decode step as a CUDA graph "
                                          "without compiling it first."),))
    tune: str = opt("auto", "GPU: inductor coordinate-descent tuning of the compiled step. auto: compile with "
                    "and without, time both on the same decode replays, keep the faster, and remember the choice "
                    "on disk (per GPU, shape, batch and library versions). H200 8B bf16 batch 1: tuned "
                    "186.9-220.2 tok/s across processes, untuned 211.2-213.4; H100: tuned faster.",
                    choices=TUNE_MODES)
    compile_mode: str = opt("default", "GPU: inductor mode of the compiled step. max-autotune benchmarks Triton "
                            "GEMM templates against cuBLAS and can fuse a weight's dequantization into them "
                            "(minutes per cell).", choices=COMPILE_MODES)
    # False: no cell has meters on (no GPU meters are opened at all); set from SweepAxes.meters
    meters: bool = opt(True, cli=False)
    energy_window_s: float = opt(DEFAULT_ENERGY_WINDOW_S, "GPU: minimum seconds of each NVML energy window (full "
                                 "loop and prefill-only loop).", min=0.5)
    quality: QualitySettings = opt(factory=QualitySettings, prefix="quality")
    isolation: str = opt("process", ISOLATION_HELP, choices=ISOLATION_MODES, per_invocation=True)
    cell_timeout_s: float = opt(DEFAULT_CELL_TIMEOUT_S, "Seconds a worker may spend on one cell before it is "
                                "stopped and the cell recorded as failed (--isolation process).",
                                min=0, min_open=True, per_invocation=True)
    plugins: tuple[str, ...] = opt((), "Comma list of Python modules imported before the sweep (and by every "
                                   "worker) that register extra backends, variants or meters.",
                                   flag="--plugins", per_invocation=True)
    trust_remote_code: bool = opt(False, flags=(Flag("--trust-remote-code", True, "Allow a Hugging Face folder "
                                  "whose config.json has auto_map to run its own Python code (refused otherwise)."),),
                                  per_invocation=True)
    executor: str = opt("local", "local: this machine; ray: each model group is a Ray task on a node whose "
                        "advertised profile (`harness worker`) is the cell's; --profile a,b fans the sweep out over "
                        "several kinds of node (needs the [ray] extra).", choices=EXECUTORS, per_invocation=True)
    ray_address: str | None = opt(None, "--executor ray: the Ray cluster to join (host:port of its head; default: "
                                  "RAY_ADDRESS, else the cluster started on this machine).", flag="--address",
                                  per_invocation=True)
    ray_node_timeout_s: float = opt(DEFAULT_RAY_NODE_TIMEOUT_S, "--executor ray: seconds to wait for a live node "
                                    "with a cell's profile before its cells are unsupported.", min=0,
                                    per_invocation=True)


@dataclass(frozen=True)
class RunOptions:
    """Everything `harness run` is given. axes + settings are the sweep definition run.json keeps."""
    axes: SweepAxes = opt(factory=SweepAxes)
    settings: RunSettings = opt(factory=RunSettings)
    profile: str = opt("auto", "Hardware profile id, or auto to detect. With --executor ray, a comma list: the "
                       "sweep runs once per profile, on nodes advertising it.", per_invocation=True)
    profiles_dir: Path | None = opt(None, "Folder of profile YAML files (default: the shipped profiles/).",
                                    path="dir", per_invocation=True)
    out: Path | None = opt(None, "Output folder (default: results/<run-id>/).", path="dir", per_invocation=True)
    resume: Path | None = opt(None, "Finish the run in this folder: measure exactly the cells of its run.json that "
                              "have no record yet (the sweep definition comes from run.json).", path="dir",
                              per_invocation=True)
    retry_failed: bool = opt(False, flags=(Flag("--retry-failed", True, "With --resume: measure the cells whose "
                             "record is failed again (the old record moves to records.superseded.jsonl)."),),
                             per_invocation=True)
    quick: bool = opt(False, flags=(Flag("--quick", True, f"Small workload for smoke tests: {QUICK} unless set "
                                         "explicitly."),), per_invocation=True)

    def __post_init__(self) -> None:
        # RunSettings.meters is derived: the runner opens no meter at all when no cell has them on
        object.__setattr__(self, "settings", replace(self.settings, meters=self.axes.meters != "off"))


@dataclass(frozen=True)
class Param:
    """One CLI option (or one flag of a field's `flags`) and the field it sets."""
    path: tuple[str, ...]        # field names from RunOptions down, e.g. ("settings", "meter", "min_repeats")
    flag: str                    # --repeats
    dest: str                    # repeats (click's parameter name; QUICK's keys)
    field: dataclasses.Field
    type: Any                    # the resolved annotation
    flag_of: Flag | None = None  # set for one of a field's `flags`

    @property
    def meta(self) -> dict:
        return self.field.metadata


def params(cls=RunOptions, path: tuple[str, ...] = (), prefix: str = "") -> Iterator[Param]:
    """The CLI options of `cls` in declaration order, nested groups flattened."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        md, typ = f.metadata, hints[f.name]
        if md.get("cli", True) is False:
            continue
        if dataclasses.is_dataclass(typ):
            sub = md.get("prefix", "")
            yield from params(typ, path + (f.name,), f"{prefix}{sub}-" if sub else prefix)
            continue
        if md.get("flags"):
            for fl in md["flags"]:
                yield Param(path + (f.name,), fl.name, fl.name[2:].replace("-", "_"), f, typ, fl)
            continue
        flag = md.get("flag") or "--" + f.name.replace("_", "-")
        flag = "--" + prefix + flag[2:]
        if f.name == "enabled" and prefix:       # a group's on/off switch is the group's name: --quality
            flag = "--" + prefix.rstrip("-")
        yield Param(path + (f.name,), flag, flag[2:].replace("-", "_"), f, typ)


def by_field() -> dict[tuple[str, ...], list[Param]]:
    """params() grouped by the field they set (a field with `flags` has several)."""
    out: dict[tuple[str, ...], list[Param]] = {}
    for p in params():
        out.setdefault(p.path, []).append(p)
    return out


def get_path(obj, path: tuple[str, ...]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def set_path(obj, path: tuple[str, ...], value) -> Any:
    """A copy of frozen `obj` with the field at `path` replaced."""
    if len(path) == 1:
        return replace(obj, **{path[0]: value})
    return replace(obj, **{path[0]: set_path(getattr(obj, path[0]), path[1:], value)})


def _convert(typ, value):
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ) and isinstance(value, dict):
        return from_dict(typ, value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if Path in typing.get_args(typ) and isinstance(value, str):
        return Path(value)
    return value


def from_dict(cls, data: dict, where: str = ""):
    """`cls` from its `dataclasses.asdict` form (run.json). Missing keys take today's default, so an
    option added later reads old files; an unknown key is an error naming it."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {unknown} (written by a newer harness?)")
    return cls(**{k: _convert(hints[k], v) for k, v in data.items()})


def sweep_dict(o: RunOptions) -> dict:
    """The sweep definition as run.json stores it."""
    return {"axes": dataclasses.asdict(o.axes), "settings": dataclasses.asdict(o.settings)}


def show(value) -> str:
    """A value as it is typed on the command line (comma lists joined)."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def differences(stored: RunOptions, given: RunOptions, paths: set[tuple[str, ...]]) -> list[str]:
    """What the command line sets differently from the stored sweep (per-invocation options aside)."""
    out = []
    for path, ps in by_field().items():
        if path not in paths or ps[0].meta.get("per_invocation"):
            continue
        a, b = get_path(stored, path), get_path(given, path)
        if a != b:
            out.append(f"{'/'.join(p.flag for p in ps)}: {'.'.join(path[1:])} is {show(a)} in the run, "
                       f"{show(b)} on the command line")
    return out
