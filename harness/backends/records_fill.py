"""Turn a Measurement into Record fields (one place, so every backend fills them alike)."""
from __future__ import annotations

from harness.backends.measure import Measurement
from harness.meters import stats

RSS_METHOD = "psutil RSS of this process, sampled every 5 ms in a thread during the timed window"
DEFINITIONS = ("ttft = prompt forward + first greedy token; decode tokens/s = batch x (new_tokens - 1) "
               "decode steps / decode seconds; EOS ignored")


def measured_fields(m: Measurement) -> dict:
    tpot = m.tpot_s_samples
    return dict(
        decode_tok_s=m.decode_tok_s, decode_tok_s_stdev=stats.stdev(m.decode_tok_s_per_pass),
        prefill_tok_s=m.prefill_tok_s, ttft_s=stats.median(m.prefill_s_samples),
        ttft_s_iqr=stats.iqr(m.prefill_s_samples), tpot_p50_s=stats.percentile(tpot, 50),
        tpot_p90_s=stats.percentile(tpot, 90), tpot_p99_s=stats.percentile(tpot, 99),
        tpot_iqr_s=stats.iqr(tpot), repeats=m.repeats, timed_s=m.timed_s, setup_s=m.setup_s,
        timing_source=m.timing_source, peak_rss_bytes=m.peak_rss_bytes, energy_j=m.energy_j,
        j_per_token_decode=m.j_per_token_decode, energy_source=m.energy_source, energy_method=m.energy_method,
        prefill_s_samples=m.prefill_s_samples, decode_s_samples=m.decode_s_samples, tpot_s_samples=tpot,
        extra={"rss_method": RSS_METHOD, "definitions": DEFINITIONS,
               "first_row_tokens": m.last_tokens[0][:32] if m.last_tokens else []})


_PLAN_FORMATS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def planned_weight_bytes(shape, variant: str, dtype_name: str) -> int | None:
    """The planner's projection of the variant's resident weight bytes, shown beside the measured
    figure; None without a shape, or where the variant has no layout (e.g. one a test registered)."""
    from harness.plan.roofline import weight_bytes
    from harness.variants import VariantError, parse_variant

    base = _PLAN_FORMATS.get(dtype_name)
    if shape is None or base is None:
        return None
    try:
        spec = parse_variant(variant)
    except VariantError:
        return None
    return weight_bytes(shape, spec, base).total if spec.layout is not None else None
