"""Quality guardrails: perplexity, KL divergence and top-1 agreement against the baseline, a
verdict per variant, and the per-layer sensitivity scan (sensitivity.py, `harness sensitivity`).

Use from a sweep, per model (figures in records, never recomputed by a report):

    settings = QualitySettings(...).for_run(quick)
    ref = reference_for(loaded, corpus_name, corpus_text, device, dtype, settings)  # None: synthetic
    ...for each variant instance, outside the timed region:
    result = evaluate(model, ref) if ref else not_meaningful()   # skipped() under --no-quality
    Record(..., **record_fields(result, settings), extra={..., "quality": record_extra(result, settings)})
"""
from harness.quality.evaluate import (QualityReference, QualityResult, evaluate, not_meaningful, record_extra,
                                      record_fields, reference_for, skipped, verdict)
from harness.quality.settings import QualitySettings, SensitivitySettings

__all__ = ["QualityReference", "QualityResult", "QualitySettings", "SensitivitySettings", "evaluate",
           "not_meaningful", "record_extra", "record_fields", "reference_for", "skipped", "verdict"]
