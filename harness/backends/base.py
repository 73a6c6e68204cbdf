"""What a backend is, to the cell pipeline (harness.pipeline). Imports no torch.

A backend turns (model spec, variant) into a `Prepared` model on a device, once per group of cells;
the prepared model builds an `Engine` per cell geometry and answers what the record needs to say
about it (kernel, bytes, quality). The pipeline owns everything else: the fit check's outcome, the
meters, the timed region and the record. A backend never switches on another backend's name.

Adding a backend is one folder (`harness/backends/<name>/`) plus one `register_backend` line; a
backend from outside the package registers itself the same way from a plugin module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class CellSkip(Exception):
    """A cell (or a whole group) that cannot run here: `unsupported` or `does-not-fit`, with the reason.
    Raised by Backend.prepare() or Prepared.check_cell()."""

    def __init__(self, status: str, reason: str, **fields: Any):
        super().__init__(reason)
        self.status, self.reason, self.fields = status, reason, fields


@dataclass
class PassResult:
    prefill_s: float                      # prompt forward + first token: time to first token
    step_s: list[float]                   # one entry per decode step (each yields one token per row)
    tokens: Any                           # (batch, new_tokens) greedy ids, first from prefill
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """Generates greedily with a KV cache, EOS ignored. `run_pass` is one prefill + decode pass;
    `run_prefill` the prompt forward + first token only (the prefill loop of the two-loop energy
    split). `setup_s`: compile/capture time spent building it (outside every timed region)."""
    name: str
    timing_source: str
    setup_s: float

    def run_pass(self, ids: Any, new_tokens: int) -> PassResult: ...

    def run_prefill(self, ids: Any) -> None: ...


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine
    notes: tuple[str, ...] = ()           # why a faster path was not used
    fresh: bool = True                    # False: reused from the previous cell of the same geometry
    facts: dict = field(default_factory=dict)   # for Record.engine: tuning, compile mode, ...


class Prepared(Protocol):
    """One model instance with the variant applied, on one device."""
    device: str                           # "cpu", "cuda:0"
    device_type: str                      # "cpu" | "cuda" | ... (which meters apply)
    dtype: str                            # compute dtype of the unquantized parts, e.g. "bfloat16"
    kernel: str                           # what runs the linear layers
    weight_bytes: int | None              # resident bytes of parameters and buffers, from the tensors
    shape: Any                            # harness.models ArchShape, or None
    facts: dict                           # load_s, apply_s, calibration_s, weights_note, ... for the record
    prepare_s: float

    def check_cell(self, cell) -> int | None:
        """KV-cache bytes of the cell (None if unknown); raises CellSkip when it cannot fit."""

    def prompt(self, cell) -> tuple[Any, str]:
        """(input ids (batch, prompt_tokens), where they came from)."""

    def engine(self, cell) -> EngineChoice: ...

    def release_engine(self) -> None: ...

    def quality(self) -> Any:
        """A harness.quality QualityResult, or None where this backend does not evaluate quality."""

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def prepare(self, model_spec: str, variant: str, settings, profile, model_cache: dict) -> Prepared:
        """Load (through `model_cache`, one load per spec and process), apply the variant, evaluate
        quality; raise CellSkip for a group that cannot run here."""
