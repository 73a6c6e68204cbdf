"""Quality guardrails: perplexity, KL divergence and top-1 agreement against the baseline, a
verdict per variant, and the per-layer sensitivity scan (sensitivity.py, `harness sensitivity`).

Use from a sweep, per model (figures in records, never recomputed by a report):

    settings = QualitySettings(...).for_run(quick)
    ref = reference_for(loaded, corpus_name, corpus_text, device, dtype, settings)  # None: synthetic
    ...for each variant instance, outside the timed region:
    result = evaluate(model, ref) if ref else not_meaningful()   # skipped() under --no-quality
    Record(..., **record_fields(result, settings), quality=QualityDetail(...))   # see record_detail

Importing the package is light (no torch): the settings are imported here, and the names of
evaluate.py (which needs torch) are loaded on first use, so `harness report` and `harness compare`
never pull torch in through the CLI's option definitions.
"""
from __future__ import annotations

import importlib
import sys
import types

from harness.quality.settings import QualitySettings, SensitivitySettings

_FROM_EVALUATE = ("QualityReference", "QualityResult", "evaluate", "not_meaningful", "record_detail",
                  "record_fields", "reference_for", "cached_reference", "skipped", "verdict")

__all__ = ["QualitySettings", "SensitivitySettings", *_FROM_EVALUATE]


def __getattr__(name: str):
    if name not in _FROM_EVALUATE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod = importlib.import_module("harness.quality.evaluate")
    for n in _FROM_EVALUATE:
        globals()[n] = getattr(mod, n)
    return globals()[name]


class _Package(types.ModuleType):
    """The submodule harness.quality.evaluate shares its name with the function evaluate(); importing
    the submodule binds the package attribute `evaluate` to the module. Keep it the function, as it
    was when this package imported evaluate.py eagerly (`quality.evaluate(model, ref)` callers)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType) and hasattr(value, "evaluate"):
            value = value.evaluate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
