"""The compression claims the harness exists to test, checked against a run's own Records.

Each claim compares a variant with the baseline of the same cell (every cell axis but the variant:
model, backend, profile, batch, prompt, new tokens) in the same run, so an ORT int4 row is read
against the ORT fp32 baseline and a torch int4 row against the torch one. A claim with no matching
pair of ok records is "not measured in this run", never a pass. Quality verdicts ride along: a
speed-up whose variant failed the quality guard is reported as such.

Across backends: each ok record of another backend beside the ok pytorch record of the same cell
and variant (every axis but the backend) gives one line, e.g. ORT int4 vs torch int4: decode tok/s
ratio and each side's KL against the torch baseline's log-probs (both backends are scored on the same
positions against the same reference).
"""
from __future__ import annotations

from harness.variants.spec import split_policy

from dataclasses import dataclass
from typing import Callable

from harness.records import Record, cell_axes, cell_key
from harness.report.fmt import NA, md, num


@dataclass(frozen=True)
class Claim:
    text: str
    variants: tuple[str, ...]            # base variant names the claim is about (policy suffixes allowed)
    metric: str                          # Record field compared with the baseline
    holds: Callable[[float], bool]       # on the ratio variant / baseline
    wording: str                         # how the ratio is read, e.g. "{:.2f}x decode tok/s"


CLAIMS = (
    Claim("2:4 structured sparsity doubles throughput", ("sparse-2:4", "sparse-2:4-wanda"), "decode_tok_s",
          lambda r: r >= 1.9, "{:.2f}x decode tok/s (holds at >= 1.9x)"),
    Claim("INT4 weights cut memory by 75%", ("int4-wo", "int4-awq"), "_memory_bytes",
          lambda r: r <= 0.25 * 1.1, "{:.0%} of the baseline's memory (holds at <= 27.5%)"),
    Claim("FP8 gives much faster inference", ("fp8-dq", "fp8-wo"), "decode_tok_s",
          lambda r: r >= 1.3, "{:.2f}x decode tok/s (holds at >= 1.3x)"),
    Claim("quantization cuts energy per token by up to 65%", ("int8-wo", "int8-dq", "int4-wo", "int4-awq", "fp8-wo",
                                                             "fp8-dq", "w4a8"), "j_per_token_decode",
          lambda r: r <= 0.35 * 1.1, "{:.0%} of the baseline's decode J/token (a 65% cut holds at <= 38.5%)"),
)


def _memory_bytes(r: Record) -> int | None:
    """Device memory where measured (peak VRAM), else the resident weight bytes."""
    return r.peak_vram_bytes if r.peak_vram_bytes is not None else r.weight_bytes


def _value(r: Record, metric: str):
    return _memory_bytes(r) if metric == "_memory_bytes" else getattr(r, metric)


PAIR_AXES = cell_axes(without=("variant",))   # what a variant shares with its baseline


def _cell(r: Record) -> tuple:
    return cell_key(r, without=("variant",))


@dataclass(frozen=True)
class Finding:
    claim: str
    variant: str
    cell: tuple                          # in PAIR_AXES order
    ratio: float
    holds: bool
    reading: str
    quality: str


def check(records: list[Record]) -> tuple[list[Finding], list[str]]:
    """(findings, claims not measured in this run)."""
    baselines = {_cell(r): r for r in records if r.status == "ok" and r.variant == "baseline"}
    findings, missing = [], []
    for c in CLAIMS:
        found = False
        for r in records:
            base = baselines.get(_cell(r))
            if r.status != "ok" or split_policy(r.variant)[0] not in c.variants or base is None:
                continue
            a, b = _value(r, c.metric), _value(base, c.metric)
            if a is None or not b:
                continue
            ratio = a / b
            found = True
            findings.append(Finding(c.text, r.variant, _cell(r), ratio, c.holds(ratio), c.wording.format(ratio),
                                    r.quality_verdict or "not measured"))
        if not found:
            missing.append(c.text)
    return findings, missing


REFERENCE_BACKEND = "pytorch"
BACKEND_AXES = cell_axes(without=("backend",))   # what a row shares with the same variant on another backend


@dataclass(frozen=True)
class CrossBackend:
    backend: str
    cell: tuple                          # in BACKEND_AXES order (variant included)
    decode_ratio: float | None           # backend / pytorch decode tok/s
    this: Record
    torch: Record


def across_backends(records: list[Record]) -> list[CrossBackend]:
    """One entry per ok record of a non-pytorch backend with an ok pytorch record of the same cell."""
    torch = {cell_key(r, without=("backend",)): r for r in records
             if r.status == "ok" and r.backend == REFERENCE_BACKEND}
    out = []
    for r in records:
        key = cell_key(r, without=("backend",))
        t = torch.get(key)
        if r.status != "ok" or r.backend == REFERENCE_BACKEND or t is None:
            continue
        ratio = r.decode_tok_s / t.decode_tok_s if r.decode_tok_s is not None and t.decode_tok_s else None
        out.append(CrossBackend(r.backend, key, ratio, r, t))
    return out


def _kl(r: Record) -> str:
    return f"{r.kl_mean:.3g} ({md(r.quality_verdict or 'not measured')})" if r.kl_mean is not None else \
        md(r.quality_verdict or "not measured")


def _render_across(records: list[Record]) -> list[str]:
    rows = across_backends(records)
    if not rows:
        return []
    out = ["", f"Same variant on another backend, against {REFERENCE_BACKEND} (e.g. ORT int4 vs torch int4; mean KL "
           f"against the {REFERENCE_BACKEND} baseline's log-probs, same positions):", "",
           "| variant | backend vs pytorch | model / batch / prompt | decode tok/s | ratio | mean KL (verdict) |",
           "|---|---|---|---|---|---|"]
    for x in rows:
        c = dict(zip(BACKEND_AXES, x.cell))
        ratio = NA if x.decode_ratio is None else f"{x.decode_ratio:.2f}x"
        out.append(f"| {md(c['variant'])} | {md(x.backend)} vs {REFERENCE_BACKEND} | {md(c['model'])} / "
                   f"{c['batch_size']} / {c['prompt_tokens']} | {num(x.this.decode_tok_s)} vs {num(x.torch.decode_tok_s)} | "
                   f"{ratio} | {_kl(x.this)} vs {_kl(x.torch)} |")
    return out


def render(records: list[Record]) -> list[str]:
    findings, missing = check(records)
    if not findings and not missing:
        return _render_across(records)
    out = ["", "## Claims checked against this run", "",
           "| claim | variant | model / backend / batch / prompt | measured | held? | quality |", "|---|---|---|---|---|---|"]
    for f in findings:
        c = dict(zip(PAIR_AXES, f.cell))
        out.append(f"| {f.claim} | {md(f.variant)} | {md(c['model'])} / {md(c['backend'])} / {c['batch_size']} / "
                   f"{c['prompt_tokens']} | {f.reading} | **{'yes' if f.holds else 'no'}** | {md(f.quality)} |")
    if missing:
        out += ["", "Not measured in this run (no ok record of such a variant beside an ok baseline of the same cell): "
                + "; ".join(missing) + "."]
    return out + _render_across(records)
