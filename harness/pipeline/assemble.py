"""One Record from what a cell measured: the timed loop, every meter window, the two-loop energy
split, bandwidth and MBU/MFU, the VRAM budget, quality, and the planner's weight bytes beside the
measured ones. Every backend's cells are assembled here, alike."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.meters import stats
from harness.meters.bandwidth import (achieved_bandwidth, achieved_flops, decode_bytes_per_step, mbu,
                                      mean_decode_context, mfu, prefill_flops)
from harness.meters.two_loop import LoopEnergy, split_gross_and_net

DEFINITIONS = ("ttft = prompt forward + first greedy token; decode tokens/s = batch x (new_tokens - 1) "
               "decode steps / decode seconds; EOS ignored")
_PLAN_FORMATS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def plan_format(dtype: str) -> str:
    """The compute dtype as the planner and profiles name formats: bf16, fp16, fp32."""
    return _PLAN_FORMATS.get(dtype, dtype)


def compute_format(variant: str, dtype: str) -> str:
    """The format whose peak bounds prefill: the variant's compute format (fp8/int8 activations), or
    the baseline dtype for weight-only variants (harness.variants.compute_format)."""
    from harness.variants import compute_format as variant_format

    return variant_format(variant, plan_format(dtype))


def timing_fields(m) -> dict[str, Any]:
    tpot = m.tpot_s_samples
    return dict(
        decode_tok_s=m.decode_tok_s, decode_tok_s_stdev=stats.stdev(m.decode_tok_s_per_pass),
        prefill_tok_s=m.prefill_tok_s, ttft_s=stats.median(m.prefill_s_samples),
        ttft_s_iqr=stats.iqr(m.prefill_s_samples), tpot_p50_s=stats.percentile(tpot, 50),
        tpot_p90_s=stats.percentile(tpot, 90), tpot_p99_s=stats.percentile(tpot, 99),
        tpot_iqr_s=stats.iqr(tpot), repeats=m.repeats, timed_s=m.timed_s, setup_s=m.setup_s,
        timing_source=m.timing_source, prefill_s_samples=m.prefill_s_samples,
        decode_s_samples=m.decode_s_samples, tpot_s_samples=tpot)


def energy_fields(full, prefill, n_pre: int, m, cell, idle) -> tuple[dict, dict]:
    """Record fields and section entries from the full-loop window, the prefill-loop window (None where
    it was not run) and idle power (None off the GPU), by the two-loop split."""
    pre = LoopEnergy.from_window(prefill, n_pre) if prefill is not None else LoopEnergy(None, 0.0, 0)
    idle_w = getattr(idle, "power_w", None)
    gross, net = split_gross_and_net(pre, LoopEnergy.from_window(full, m.repeats), cell.prompt_tokens,
                                     cell.new_tokens, cell.batch_size, idle_w)
    method = full.method
    if prefill is not None:
        method += (f"; two-loop split: full-loop window {full.duration_s:.1f} s ({m.repeats} passes), "
                   f"prefill-loop window {prefill.duration_s:.1f} s ({n_pre} passes)")
    flags = (list(prefill.flags) if prefill is not None else []) + list(full.flags)
    if full.energy_j is not None:
        flags += list(gross.reasons)
    fields = dict(energy_j=full.energy_j, j_per_token_decode=gross.j_per_token_decode,
                  j_per_token_prefill=gross.j_per_token_prefill, power_mean_w=full.mean_power_w,
                  power_peak_w=full.peak_power_w, idle_power_w=idle_w, energy_source=full.source,
                  energy_method=method, energy_flags=flags)
    detail = {"j_per_output_token": gross.j_per_output_token,
              "power_timeline": full.timeline.to_json() if full.timeline is not None else None,
              "idle_power_method": idle.method if idle is not None else None}
    if net is not None:
        detail.update(net_basis=net.basis, net_j_per_token_decode=net.j_per_token_decode,
                      net_j_per_token_prefill=net.j_per_token_prefill)
    return fields, {"energy": detail}


def bandwidth_fields(gpu, profile, shape, weight_bytes: int, kv_per_token: float, context_len: float, cell,
                     decode_tok_s, ttft_s, fmt: str) -> tuple[dict, dict]:
    """Achieved decode bandwidth (bytes read per step x steps/s), MBU against the copy bandwidth measured
    in this run, and prefill MFU against the profile's peak for the variant's compute format."""
    if decode_tok_s is None:
        return {}, {}
    per_step = decode_bytes_per_step(weight_bytes, kv_per_token, context_len, cell.batch_size)
    bw = achieved_bandwidth(per_step, decode_tok_s / cell.batch_size)
    copy = gpu.copy_bw.value_per_s if gpu is not None else None
    peak_bw = getattr(profile, "bandwidth_bytes_per_s", None)
    peak = profile.peak(fmt) if hasattr(profile, "peak") else None
    flops = achieved_flops(prefill_flops(shape, cell.batch_size, cell.prompt_tokens), ttft_s) if shape else None
    return ({"achieved_bandwidth_bytes_per_s": bw, "mbu": mbu(bw, copy), "mfu": mfu(flops, peak)},
            {"bandwidth": {"copy_bandwidth_bytes_per_s": copy,
                           "copy_bandwidth_method": gpu.copy_bw.method if gpu else None,
                           "share_of_profile_peak": mbu(bw, peak_bw), "decode_bytes_per_step": per_step,
                           "decode_context_tokens": context_len, "prefill_flop_per_s": flops, "mfu_format": fmt}})


def vram_budget_fields(window, prepared, kv_bytes, cell) -> tuple[dict, dict]:
    from harness.meters.vram import vram_budget
    from harness.plan.roofline import workspace_bytes

    shape = prepared.shape
    act = (workspace_bytes(shape, cell.prompt_tokens, cell.batch_size, plan_format(prepared.dtype), chunk_tokens=None)
           if shape is not None else None)
    budget = vram_budget(window, prepared.weight_bytes, kv_bytes if shape is not None else None, act)
    if budget is None:
        return {}, {}
    return {"vram_expected_bytes": budget.expected_bytes}, {"memory": {"budget": budget.as_dict()}}


def planned_weight_bytes(shape, variant: str, dtype: str) -> int | None:
    """The planner's projection of the variant's resident weight bytes, shown beside the measured
    figure; None without a shape, or where the variant has no layout (e.g. one a test registered)."""
    from harness.plan.roofline import weight_bytes
    from harness.variants import VariantError, parse_variant

    base = _PLAN_FORMATS.get(dtype)
    if shape is None or base is None:
        return None
    try:
        spec = parse_variant(variant)
    except VariantError:
        return None
    return weight_bytes(shape, spec, base).total if spec.layout is not None else None


@dataclass
class CellOutcome:
    """Everything one measured cell produced, for assemble_record."""
    prepared: Any                 # harness.backends.base.Prepared
    measurement: Any              # harness.pipeline.timed.Measurement
    choice: Any                   # harness.backends.base.EngineChoice
    kv_bytes: int | None
    prompt_source: str
    meters: Any = None            # harness.pipeline.meters.CellMeters, or None with meters off
    prefill: Any = None           # the prefill-loop energy window, or None where none ran
    prefill_passes: int = 0
    gpu: Any = None               # the run's GpuRunMeters (CUDA with meters on)
    idle: Any = None              # IdlePower of this model (GPU)


def _meter_fields(o: CellOutcome, cell, fields: dict, sections: dict, extra: dict) -> None:
    m, meters, prepared = o.measurement, o.meters, o.prepared
    if meters is None:
        if prepared.device_type == "cuda":
            fields["peak_vram_bytes"] = prepared.allocator_peak_bytes()
            _merge(sections, {"memory": {"peak_vram_method": "torch.cuda.max_memory_allocated (meters off)"}})
        return
    for w in meters.windows:
        if w is not meters.energy and w.name in m.windows:
            _split_into(w.record_fields(m.windows[w.name]), fields, sections, extra)
    if meters.energy is not None:
        ef, ex = energy_fields(m.windows["energy"], o.prefill, o.prefill_passes, m, cell, o.idle)
        fields.update(ef)
        _merge(sections, ex)
    _prefill_loop_clocks(meters, o.prefill, extra)
    if meters.vram is not None:
        vf, vx = vram_budget_fields(m.windows["vram"], prepared, o.kv_bytes, cell)
        fields.update(vf)
        _merge(sections, vx)


def assemble_record(cell, ctx, settings, o: CellOutcome):
    """The Record of a measured cell."""
    from harness.records import SECTIONS, build_section
    from harness.sweep import cell_record

    m, prepared, choice = o.measurement, o.prepared, o.choice
    fields = timing_fields(m)
    extra: dict[str, Any] = {"definitions": DEFINITIONS,
                             "first_row_tokens": m.last_tokens[0][:32] if m.last_tokens else []}
    sections: dict[str, dict] = {}
    _meter_fields(o, cell, fields, sections, extra)
    shape = prepared.shape
    if prepared.device_type == "cuda" and shape is not None:
        # the static cache is read whole each step (masked); a dynamic cache only up to the context
        ctx_len = (cell.prompt_tokens + cell.new_tokens if choice.facts.get("static_cache")
                   else mean_decode_context(cell.prompt_tokens, cell.new_tokens))
        bf, bx = bandwidth_fields(o.gpu, ctx.profile, shape, prepared.weight_bytes,
                                  shape.kv_bytes_per_token(prepared.dtype_bytes), ctx_len, cell,
                                  fields["decode_tok_s"], fields["ttft_s"], compute_format(cell.variant, prepared.dtype))
        fields.update(bf)
        _merge(sections, bx)
    q = prepared.quality()
    if q is not None:
        from harness import quality

        fields.update(quality.record_fields(q, settings.quality))
        sections["quality"] = quality.record_detail(q, settings.quality)
    facts = prepared.facts
    _merge(sections, {"engine": {
        "load_s": facts.get("load_s"), "apply_s": facts.get("apply_s"),
        "calibration_tokens": facts.get("calibration_tokens"), "fused_projections": facts.get("fused_projections"),
        "layers_changed": facts.get("layers_changed"), "variant_notes": facts.get("variant_notes"),
        "build_peak_bytes": facts.get("build_peak_bytes"),
        "compile_mode": choice.facts.get("compile_mode"),
        "coordinate_descent_tuning": choice.facts.get("coordinate_descent_tuning"),
        "decode_attention": choice.facts.get("decode_attention"),
        "compile_choice": choice.facts.get("compile_choice"), "prefill": choice.facts.get("prefill"),
        "reused": not choice.fresh,
        "notes": list(choice.notes)}})
    typed = {}
    for name, d in sections.items():
        typed[name], unknown = build_section(SECTIONS[name], d) if isinstance(d, dict) else (d, {})
        extra.update({f"{name}.{k}": v for k, v in unknown.items()})
    return cell_record(cell, ctx, device=prepared.device, dtype=prepared.dtype, kernel=prepared.kernel,
                       decode_path=m.engine_name, weights_note=facts.get("weights_note", ""),
                       prompt_source=o.prompt_source, weight_bytes=prepared.weight_bytes, kv_cache_bytes=o.kv_bytes,
                       calibration_s=facts.get("calibration_s"),
                       planned_weight_bytes=planned_weight_bytes(shape, cell.variant, prepared.dtype),
                       extra=extra, **typed, **fields)


def _prefill_loop_clocks(meters, prefill, extra: dict) -> None:
    """The clock summary of the prefill-only loop (the two-loop split's second window), beside the timed
    loop's in extra.clocks; its flag joins the cell's flags."""
    cw = next((w for w in meters.windows if w.name == "clocks"), None)
    pl = cw.summary(getattr(prefill, "timeline", None), "the prefill-only loop") if cw and prefill else None
    if pl is None:
        return
    c = dict(extra.get("clocks") or {"flags": []})
    c["prefill_loop"] = pl
    c["flags"] = list(c.get("flags") or []) + pl["flags"]
    extra["clocks"] = c


def _merge(sections: dict, new: dict) -> None:
    for name, d in new.items():
        sections.setdefault(name, {}).update(d)


def _split_into(values: dict, fields: dict, sections: dict, extra: dict) -> None:
    """A meter's values: `section.field` into that typed section, Record fields where the Record has
    them, `extra` otherwise."""
    from harness.records import FIELD_NAMES, SECTIONS

    for k, v in values.items():
        section, dot, name = k.partition(".")
        if dot and section in SECTIONS:
            _merge(sections, {section: {name: v}})
        elif k in FIELD_NAMES:
            fields[k] = v
        else:
            extra[k] = v
