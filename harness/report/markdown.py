"""report.md: the run's machine and provenance, one row per cell, ratios to the baseline, notes."""
from __future__ import annotations

from pathlib import Path

from harness.records import Record, cell_key, primary, slow_path, write_view
from harness.report import claims, repeats
from harness.report.fmt import NA, gb, mb, md, ms, num, sig


def _path_note(r) -> str:
    """' (eager fallback)' on a GPU cell that did not run the compiled CUDA graph."""
    p = slow_path(r)
    return f" ({md(p)} fallback)" if p else ""


def _baseline_for(r: Record, records: list[Record]) -> Record | None:
    cell = cell_key(r, without=("variant",))
    for b in records:
        if b.variant == "baseline" and b.status == "ok" and cell_key(b, without=("variant",)) == cell:
            return b
    return None


def _ratio(a, b) -> str:
    return NA if a is None or not b else f"{a / b:.2f}x"


def _energy(r: Record) -> str:
    return f"{sig(r.j_per_token_decode)} ({md(r.energy_source)})"


def render_report(records: list[Record], run: dict) -> str:
    """One row per cell (its first meters-on repetition); repetitions and meter overhead get their
    own sections."""
    every = list(records)
    records = primary(every)
    prov = run.get("provenance", {})
    v = prov.get("versions", {})
    lines = [f"# harness run {md(run.get('run_id', ''))}", ""]
    lines += [
        f"- machine: {md(prov.get('cpu', '?'))} ({prov.get('cpu_count', '?')} logical CPUs, "
        f"{(prov.get('memory_bytes') or 0) / 2**30:.0f} GiB)"
        + (f"; GPUs: {md(', '.join(prov['gpus']))}" if prov.get("gpus") else "; no GPU"),
        f"- profile: **{md(run.get('profile', '?'))}** ({md(run.get('profile_reason', ''))})",
        f"- harness {md(prov.get('harness_version'))} at {md(str(prov.get('git_commit'))[:12])}"
        + (" (dirty)" if prov.get("git_dirty") else "")
        + md(f"; python {prov.get('python')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
             f"torchao {v.get('torchao')}"),
        f"- started {md(prov.get('utc_time'))} UTC; corpus: {md(run.get('corpus', '?'))}",
        f"- meter settings: {md(run.get('meter', {}))}",
    ] + ([f"- backends: {md(run['backends_note'])}"] if run.get("backends_note") else []) + [
        "",
        "## Results",
        "",
        "| model | variant | backend | batch | prompt | new | status | decode tok/s (± sd) | vs baseline | "
        "prefill tok/s | TTFT ms | TPOT p50 / p99 ms | weights MB (planned) | vs baseline | peak RSS MB | J/token decode (source) | kernel |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        b = _baseline_for(r, records)
        sd = f" ± {r.decode_tok_s_stdev:.1f}" if r.decode_tok_s_stdev is not None else ""
        lines.append(
            f"| {md(r.model)} | {md(r.variant)} | {md(r.backend)} | {r.batch_size} | {r.prompt_tokens} | "
            f"{r.new_tokens} | {md(r.status)}{_path_note(r)} | {num(r.decode_tok_s)}{sd if r.decode_tok_s is not None else ''} | "
            f"{_ratio(r.decode_tok_s, b.decode_tok_s if b else None)} | {num(r.prefill_tok_s)} | {ms(r.ttft_s)} | "
            f"{ms(r.tpot_p50_s)} / {ms(r.tpot_p99_s)} | {mb(r.weight_bytes)} ({mb(r.planned_weight_bytes)}) | "
            f"{_ratio(r.weight_bytes, b.weight_bytes if b else None)} | {mb(r.peak_rss_bytes)} | {_energy(r)} | "
            f"{md(r.kernel) or NA} |")
    lines += claims.render(records)
    lines += _quality_table(records)
    lines += _energy_table(records)
    lines += repeats.render(every)
    lines += _foreign_load(records)
    lines += _below_full_clock(records)
    bad = [r for r in records if r.status != "ok"]
    if bad:
        lines += ["", "## Cells that did not run", ""]
        lines += [f"- {md(r.model)} / {md(r.variant)} / {md(r.backend)} / batch {r.batch_size} / prompt "
                  f"{r.prompt_tokens}: **{md(r.status)}**: {md(r.reason)}" for r in bad]
    notes = sorted({r.weights_note for r in records if r.weights_note})
    methods = sorted({f"{r.energy_source}: {r.energy_method}" for r in records if r.energy_method})
    lines += ["", "## How these figures were measured", ""]
    lines += [f"- weights: {md(n)}" for n in notes]
    lines += [
        "- timed region: repeated passes of prefill (prompt forward + first greedy token = TTFT) and "
        "greedy decode steps with a KV cache, after warm-up; model loading, variant application, "
        "tokenization and file output are outside it. Decode tokens/s = batch x (new tokens - 1) / decode "
        "seconds; ± is the stdev over passes. Timing source: "
        + md(", ".join(sorted({r.timing_source for r in records if r.timing_source}) or [NA])) + ".",
        "- peak RSS: " + md(next((r.memory.rss_method for r in records if r.memory.rss_method), NA)) + ".",
        "- weights MB: bytes of every parameter and buffer as stored (quantized tensors' inner data, "
        "scales and zero points), tied tensors once; measured from the tensors, not computed. In brackets: "
        "the planner's projection from the storage layout (`harness plan`), for comparison.",
    ]
    lines += [f"- energy ({md(m)})" for m in methods] or ["- energy: unavailable"]
    return "\n".join(lines) + "\n"


def _quality_table(records: list[Record]) -> list[str]:
    """Speed beside quality: one row per (model, variant, backend). Every backend is scored against the
    torch fp32 (CPU) or compute-dtype (GPU) baseline's log-probs, so an ORT baseline row shows how far
    the exported graph is from torch."""
    seen, rows = set(), []
    for r in records:
        if r.status == "ok" and r.quality_verdict and (r.model, r.variant, r.backend) not in seen:
            seen.add((r.model, r.variant, r.backend))
            rows.append(r)
    if not rows:
        return []
    out = ["", "## Quality against the baseline", "",
           "| model | variant | backend | decode tok/s (first cell) | perplexity | mean KL | p99 KL | top-1 agreement | "
           "verdict | why |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {md(r.model)} | {md(r.variant)} | {md(r.backend)} | {num(r.decode_tok_s)} | {num(r.perplexity, 3)} | "
                   f"{sig(r.kl_mean)} | {sig(r.kl_p99)} | {_pct(r.top1_agreement)} | **{md(r.quality_verdict)}** | "
                   f"{md(r.quality.reason or None)} |")
    q = rows[0].quality
    if q.scored_tokens:
        out += ["", f"Quality: {q.scored_tokens} scored positions from the head of the corpus (sliding window "
                f"{q.window_tokens}, stride {q.stride_tokens}), the same positions for every variant; KL in nats, "
                f"KL(P_baseline || P_variant); baseline log-probs stored as {md(q.reference_dtype)}."]
    return out


def _foreign_load(records: list[Record]) -> list[str]:
    """Cells measured while other processes used the CPU or the GPU (harness.meters.foreign)."""
    busy = [(r, (r.extra.get("foreign_load") or {})) for r in records if r.status == "ok"]
    busy = [(r, f) for r, f in busy if f.get("flags")]
    if not busy:
        return []
    out = ["", "## Measured on a busy machine", "",
           f"{len(busy)} of {sum(r.status == 'ok' for r in records)} measured cells ran while other processes "
           "used the machine: their figures may not be comparable with a quiet run.", ""]
    out += [f"- {md(r.model)} / {md(r.variant)} / {md(r.backend)} / batch {r.batch_size}: "
            + md("; ".join(f["flags"])) for r, f in busy]
    return out


def _below_full_clock(records: list[Record]) -> list[str]:
    """Cells whose timed loop ran below the GPU's full SM clock (harness.meters.clocks)."""
    slow = [(r, r.extra.get("clocks") or {}) for r in records if r.status == "ok"]
    slow = [(r, c) for r, c in slow if c.get("flags")]
    if not slow:
        return []
    out = ["", "## Measured below full clock", "",
           f"{len(slow)} of {sum(r.status == 'ok' for r in records)} measured cells ran with the GPU's SM clock "
           "below its maximum (NVML, sampled with the power timeline): compute-bound figures there are lower "
           "than at full clock, and lower than kernel microbenchmarks (short, at full clock) project.", ""]
    out += [f"- {md(r.model)} / {md(r.variant)} / batch {r.batch_size}: " + md("; ".join(c["flags"]))
            for r, c in slow]
    return out


def _pct(x) -> str:
    return NA if x is None else f"{x:.0%}"


def _energy_table(records: list[Record]) -> list[str]:
    """GPU energy, power, VRAM and bandwidth, for cells that have any of them."""
    rows = [r for r in records if r.status == "ok" and (r.power_mean_w is not None or r.mbu is not None)]
    if not rows:
        return []
    out = ["", "## Energy, memory and bandwidth", "",
           "| model | variant | backend | batch | prompt | J/token decode (gross) | J/token decode (net of idle) | "
           "J/prompt token | mean / peak W | idle W | peak VRAM GB | vs weights + KV + workspace | build peak GB | "
           "KV cache GB | achieved GB/s | MBU | MFU (prefill) | flags |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        net = r.energy.net_j_per_token_decode
        out.append(
            f"| {md(r.model)} | {md(r.variant)} | {md(r.backend)} | {r.batch_size} | {r.prompt_tokens} | "
            f"{sig(r.j_per_token_decode)} | {sig(net)} | {sig(r.j_per_token_prefill)} | {num(r.power_mean_w, 0)} / {num(r.power_peak_w, 0)} | "
            f"{num(r.idle_power_w, 0)} | {gb(r.peak_vram_bytes)} | {_vram_vs(r)} | {gb(r.engine.build_peak_bytes)} | "
            f"{gb(r.kv_cache_bytes)} | "
            f"{num(r.achieved_bandwidth_bytes_per_s and r.achieved_bandwidth_bytes_per_s / 1e9, 0)} | {_pct(r.mbu)} | "
            f"{_pct(r.mfu)} | {md('; '.join(r.energy_flags)) or NA} |")
    out += ["", "Energy: NVML energy-counter deltas, two-loop method (decode J/token = (E_full - E_prefill) per pass / "
            "decode tokens); gross is the headline, net subtracts idle power x window. MBU = achieved decode "
            "bandwidth (weights + KV cache read per step x steps/s) / device-to-device copy bandwidth measured in "
            "the same run. MFU = prefill FLOP/s / the profile's peak for the variant's compute format. "
            "Peak VRAM vs weights + KV + workspace: workspace = activations of the prefill (planner formula) + CUDA "
            "context and libraries (NVML figure - torch reserved at the same moment); over 1.10x is flagged (allocator "
            "slack: cached or fragmented blocks, leftovers of variant application). Build peak: CUDA allocator peak "
            "over the layer-by-layer build (torch.cuda.max_memory_allocated), before the timed window; "
            f"{NA} where the cell was not built layer by layer."]
    return out


def _vram_vs(r: Record) -> str:
    b = r.memory.budget
    if b is None or b.ratio is None or b.expected_bytes is None or r.peak_vram_bytes is None:
        return NA
    return f"{b.ratio:.2f}x of {b.expected_bytes / 1e9:.2f}" + ("" if b.within_tolerance else " **over**")


def write_report(records: list[Record], run: dict, out_dir: Path) -> Path:
    """report.md, written whole under a temporary name and renamed (RecordsWriteError on failure)."""
    text = render_report(records, run)
    return write_view(Path(out_dir) / "report.md", lambda p: p.write_text(text, encoding="utf-8"), "the report")


def _machine_of(run: dict) -> str:
    prov = run.get("provenance", {})
    return ", ".join(prov.get("gpus") or []) or str(prov.get("cpu") or "?")


def _projected_md(projections: list) -> list[str]:
    from tabulate import tabulate

    from harness.report.projections import PROJECTED_LABEL, table_rows

    rows = [[md(r["profile"]), md(r["model"]), md(r["variant"]), r["batch"], r["prompt"], r["new"], md(r["status"]),
             r["decode"], r["prefill"], md(r["bound"]), r["weights"], r["fits"], md(r["reason"]) or NA]
            for r in table_rows(projections)]
    return ["", f"## {PROJECTED_LABEL.capitalize()}: profiles not measured", "",
            tabulate(rows, ["profile", "model", "variant", "batch", "prompt", "new tokens", "status", "decode tok/s",
                            "prefill tok/s", "decode bound", "weights MB", "fits", "notes"],
                     tablefmt="github", disable_numparse=True),
            "", f"Every figure in this table is {PROJECTED_LABEL} (`harness plan`'s datasheet roofline) for the "
                "cells measured above, on profiles these runs did not measure: projections, not measurements."]


def render_merged_text(records: list[Record], runs: list[dict], projections: list = ()) -> str:
    """The Markdown report of several runs side by side: their machines and profiles, then one summary
    row per variant and machine/profile (tables through tabulate, every cell escaped with md)."""
    from tabulate import tabulate

    from harness.report.html import summary

    run_rows = [[md(run.get("run_id", "?")), md(_machine_of(run)), md(run.get("profile", "?")),
                 md(str(run.get("provenance", {}).get("git_commit"))[:12]), md(run.get("provenance", {}).get("utc_time"))]
                for run in runs]
    lines = ["# harness report of " + str(len(runs)) + " runs", "", "## Runs", "",
             tabulate(run_rows, ["run", "machine", "profile", "harness commit", "started (UTC)"], tablefmt="github"),
             "", "## Summary: one row per variant, machine and profile", ""]
    rows = [[md(s.machine), md(s.profile), md(s.model), md(s.backend), md(s.variant), f"{s.cells_ok} / {s.cells}",
             s.decode_tok_s, s.decode_ratio, s.weights_mb, s.weights_ratio, md(s.j_per_token), md(s.verdict),
             md("; ".join(s.problems)) or NA] for s in summary(records)]
    lines.append(tabulate(rows, ["machine", "profile", "model", "backend", "variant", "cells ok",
                                 "decode tok/s (largest batch)", "vs baseline", "weights MB", "vs baseline",
                                 "J/token decode", "quality", "did not run"], tablefmt="github", disable_numparse=True))
    lines += ["", "Ratios: geometric mean over the variant's cells of variant / baseline of the same cell on the "
              "same machine and profile. Per-cell tables: each run's own report.md."]
    if projections:
        lines += _projected_md(list(projections))
    return "\n".join(lines) + "\n"


def render_merged(records: list[Record], runs: list[dict], out_dir: Path, projections: list = ()) -> Path:
    text = render_merged_text(records, runs, projections)
    return write_view(Path(out_dir) / "report.md", lambda p: p.write_text(text, encoding="utf-8"), "the report")
