"""Projected figures for one (profile, variant, model, context, batch): resident bytes, memory fit and
roofline tokens/s. Every figure here is a projection from datasheet numbers, never a measurement.

Conventions, so each figure can be redone by hand:

- Weights: resident bytes from the variant's storage layout (harness/variants/layout.py), embedding and norms in the baseline
  format (bf16 on GPU, fp32 on CPU).
- KV cache: K and V of every layer for `context` tokens of `batch` sequences, KV heads only (GQA), in
  the baseline format: batch x context x 2 x layers x kv_heads x head_dim x bytes.
- Workspace: one prefill chunk of min(batch x context, 2048) tokens through the widest block
  activations (q, k, v, hidden and the two MLP up-projections) in the baseline format, plus fp32 logits
  for one token per sequence. Fused (flash) attention is assumed: no context^2 score matrix.
- Fit: weights + KV + workspace <= memory x (1 - headroom). The headroom (default 10%) stands for the
  runtime's context, allocator fragmentation and framework buffers.
- Decode step (batch tokens, at the full context: the slowest step of the generation):
  bytes = all resident weight bytes + the whole KV cache. The embedding table is counted as read, the
  convention of the lab anchor (Llama-3.1-8B bf16: 16.06 GB / 3.35 TB/s = 209 tok/s on H100 SXM).
  FLOPs = 2 x weights x batch + attention 4 x context x q_dim x layers x batch.
- Prefill (batch prompts of `context` tokens): FLOPs = 2 x weights x tokens + causal attention
  2 x context^2 x q_dim x layers x batch + the lm_head for the last token of each prompt;
  bytes = weights once + the KV cache written.
- Time = max(bytes / bandwidth, sum over matmul formats of FLOPs / peak); the larger term names the
  bound. The 2:4 sparse rate is used only where the profile has sparse tensor cores. Attention and
  kept layers run in the baseline format.
- Energy per token = power x step time / batch, power = the top of the profile's power range where
  given (a laptop SoC's 17 W base power is no upper bound), else its TDP / board power. The power is an
  upper bound; the time is the roofline's, so this is an upper estimate at the projected speed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.models.presets import ArchShape
from harness.variants.layout import DENSE, FORMAT_BITS
from harness.variants.policy import block_fqn
from harness.variants.spec import VariantSpec
from harness.profiles.schema import FEATURES, Profile

DEFAULT_HEADROOM = 0.10
PREFILL_CHUNK_TOKENS = 2048
LOGIT_BYTES = 4  # fp32 logits
PLAN_STATUSES = ("ok", "does-not-fit", "unsupported", "unknown-fit")


@dataclass(frozen=True)
class Workload:
    model: str
    shape: ArchShape
    context_tokens: int
    batch_size: int
    headroom: float = DEFAULT_HEADROOM


@dataclass
class PlanRow:
    profile: str
    profile_class: str
    variant: str
    model: str
    context_tokens: int
    batch_size: int
    status: str
    reason: str
    basis: str = "projected"           # projected | calibrated
    weight_bytes: int = 0
    gemm_weight_bytes: int = 0         # the part a decode step reads through matrix products (no embedding table)
    layers: int = 0                    # transformer blocks (the per-layer step cost of kernel curves scales with it)
    block_params: int = 0              # linear-layer parameters of one block (kernel curves are timed per block size)
    head_weight_bytes: int = 0         # the lm_head's share of gemm_weight_bytes (a prefill runs it on the last token only)
    token_width: int = 0               # ArchShape.prefill_widths: a prefill's non-GEMM cost scales by them
    attention_width: int = 0
    kv_cache_bytes: int = 0
    workspace_bytes: int = 0
    memory_need_bytes: int = 0
    memory_usable_bytes: int | None = None
    headroom: float = DEFAULT_HEADROOM
    fits: bool | None = None
    decode_tok_s: float | None = None  # aggregate over the batch
    bound: str | None = None           # the decode bound: memory | compute
    prefill_tok_s: float | None = None
    prefill_bound: str | None = None
    tpot_s: float | None = None        # time per output token of one sequence = decode step time
    energy_j_per_token_upper: float | None = None
    power_w: float | None = None
    compute_format: str = ""
    efficiency_decode: float | None = None
    efficiency_prefill: float | None = None
    calibrated_decode_tok_s: float | None = None
    calibrated_prefill_tok_s: float | None = None
    calibrated_from: str = ""
    # through kernel curves (harness/plan/transfer.py): figure, interval, and which device the curves came from
    curve_decode_tok_s: float | None = None
    curve_decode_low: float | None = None
    curve_decode_high: float | None = None
    curve_prefill_tok_s: float | None = None
    curve_prefill_low: float | None = None
    curve_prefill_high: float | None = None
    curve_from: str = ""
    # several GPUs of the profile (harness/plan/multigpu.py)
    gpus_needed: int | None = None     # smallest of 1, 2, 4, 8 that holds weights + KV (split) + workspace
    tp_gpus: int | None = None
    tp_decode_tok_s: float | None = None
    tp_curve_decode_tok_s: float | None = None
    tp_allreduce_s: float | None = None
    tp_note: str = ""
    notes: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "notes"}
        return d

    @property
    def prefill_widths(self) -> tuple[int, int] | None:
        return (self.token_width, self.attention_width) if self.token_width else None


@dataclass(frozen=True)
class Bytes:
    linear: float
    lm_head: float
    embedding: float
    other: float           # norms, biases

    @property
    def total(self) -> int:
        return round(self.linear + self.lm_head + self.embedding + self.other)


def _bytes_per(fmt: str) -> float:
    return FORMAT_BITS[fmt] / 8


def _matmuls(shape: ArchShape, v: VariantSpec, base: str) -> tuple[dict, tuple, float, float]:
    """({(compute format, sparse): block-linear params}, the lm_head's compute path, block-linear bytes,
    lm_head bytes (0 when tied to the embedding, whose bytes are counted once as the embedding)).
    The policy is asked about the module names the runtime sees (policy.block_fqn)."""
    keep, layout = DENSE, v.layout
    groups: dict[tuple[str, bool], int] = {}
    linear_bytes = 0.0
    n = shape.num_hidden_layers
    policy = v.policy_for(n)
    for b in range(n):
        for name, i, o in shape.linear_shapes():
            lay = keep if policy is not None and policy.keeps(block_fqn(name, b)) else layout
            path = (lay.compute_for(base), lay.sparse_kernels)
            groups[path] = groups.get(path, 0) + i * o
            linear_bytes += lay.linear_bytes(i, o, base)
    head = keep if (shape.tie_word_embeddings or (policy is not None and policy.keeps_lm_head)) else layout.dense()
    head_path = (head.compute_for(base), False)
    head_bytes = 0.0 if shape.tie_word_embeddings else head.linear_bytes(shape.hidden_size, shape.vocab_size, base)
    return groups, head_path, linear_bytes, head_bytes


def weight_bytes(shape: ArchShape, v: VariantSpec, base: str) -> Bytes:
    _, _, linear, head = _matmuls(shape, v, base)
    h, n = shape.hidden_size, shape.num_hidden_layers
    other = n * shape.norms_per_block * h + h
    if shape.attention_bias:
        other += n * (shape.num_attention_heads + 2 * shape.num_key_value_heads) * shape.head_dim_
    lay = v.layout
    embedding = (lay.dense().linear_bytes(shape.hidden_size, shape.vocab_size, base) if lay.quantizes_embedding
                 else shape.embedding_params() * _bytes_per(base))
    return Bytes(linear, head, embedding, other * _bytes_per(base))


def gemm_bytes(shape: ArchShape, b: Bytes) -> int:
    """Weight bytes a decode step reads through GEMMs: the block linears and the lm_head (the embedding
    table when tied to it); an untied embedding table is gathered one row per token, not read whole."""
    return round(b.linear) + lm_head_gemm_bytes(shape, b)


def lm_head_gemm_bytes(shape: ArchShape, b: Bytes) -> int:
    """The lm_head's part of gemm_bytes (the embedding table when tied to it)."""
    return round(b.embedding if shape.tie_word_embeddings else b.lm_head)


def kv_cache_bytes(shape: ArchShape, context: int, batch: int, base: str) -> int:
    return round(shape.kv_bytes_per_token(_bytes_per(base)) * context * batch)


def workspace_bytes(shape: ArchShape, context: int, batch: int, base: str,
                    chunk_tokens: int | None = PREFILL_CHUNK_TOKENS) -> int:
    """`chunk_tokens`: prefill chunk; None for an engine that runs every prompt token in one pass."""
    hd = shape.head_dim_
    width = (shape.num_attention_heads * hd + 2 * shape.num_key_value_heads * hd + shape.hidden_size
             + 2 * shape.intermediate_size)
    tokens = batch * context if chunk_tokens is None else min(batch * context, chunk_tokens)
    return round(tokens * width * _bytes_per(base) + batch * shape.vocab_size * LOGIT_BYTES)


def _compute_s(p: Profile, work: dict[tuple[str, bool], float]) -> tuple[float | None, str]:
    """Seconds for {(format, sparse): FLOPs} at the profile's peaks, or None naming a missing peak."""
    total = 0.0
    for (fmt, sparse), flops in work.items():
        if flops <= 0:
            continue
        peak = p.peak(fmt, sparse=sparse)
        if not peak:
            return None, f"{'2:4 sparse ' if sparse else ''}{fmt} peak not published"
        total += flops / peak
    return total, ""


def _roofline(p: Profile, bytes_: float, work: dict, tokens: float, phase: str) -> tuple[float | None, str | None, str]:
    """(tokens/s, bound, explanation). Where one side is unknown: decode without bandwidth and prefill
    without a peak get no figure (the missing side is the one that binds there); otherwise the known
    side alone is used and the explanation says so."""
    bw = p.bandwidth_bytes_per_s
    mem_s = bytes_ / bw if bw else None
    comp_s, missing = _compute_s(p, work)
    if phase == "decode" and mem_s is None:
        return None, None, "decode: bandwidth not published, no projection"
    if phase == "prefill" and comp_s is None:
        return None, None, f"prefill: {missing}, no projection"
    if comp_s is None:
        return tokens / mem_s, "memory", f"{phase}: {missing}; memory roofline only ({bytes_ / 1e9:.1f} GB at {bw / 1e9:.0f} GB/s)"
    if mem_s is None:
        return tokens / comp_s, "compute", f"{phase}: bandwidth not published; compute roofline only"
    bound = "memory" if mem_s >= comp_s else "compute"
    what = f"{bytes_ / 1e9:.1f} GB at {bw / 1e9:.0f} GB/s" if bound == "memory" else \
        f"{sum(work.values()) / 1e12:.1f} TFLOP in {', '.join(sorted({f + (' 2:4' if s else '') for f, s in work}))}"
    return tokens / max(mem_s, comp_s), bound, f"{phase} {bound}-bound ({what})"


def _requirement_problems(p: Profile, v: VariantSpec) -> list[str]:
    out = []
    for f in v.layout.requires:
        have = p.supports(f)
        if have is False:
            out.append(f"no {FEATURES[f]}")
        elif have is None:
            out.append(f"{FEATURES[f]}: not published for this device, treated as unsupported")
    return out


def project(p: Profile, v: VariantSpec, w: Workload) -> PlanRow:
    shape, base = w.shape, p.baseline_format
    B, N = w.batch_size, w.context_tokens
    wb = weight_bytes(shape, v, base)
    kv = kv_cache_bytes(shape, N, B, base)
    ws = workspace_bytes(shape, N, B, base)
    need = wb.total + kv + ws
    usable = round(p.memory_bytes * (1 - w.headroom)) if p.memory_bytes is not None else None
    fits = None if usable is None else need <= usable
    power = max(p.power_range_w) if p.power_range_w else p.power_w
    tw, aw = shape.prefill_widths()
    row = PlanRow(profile=p.id, profile_class=p.class_, variant=v.name, model=w.model, context_tokens=N,
                  batch_size=B, status="ok", reason="", weight_bytes=wb.total,
                  gemm_weight_bytes=gemm_bytes(shape, wb), layers=shape.num_hidden_layers,
                  block_params=shape.block_linear_params(), head_weight_bytes=lm_head_gemm_bytes(shape, wb),
                  token_width=tw, attention_width=aw, kv_cache_bytes=kv,
                  workspace_bytes=ws, memory_need_bytes=need, memory_usable_bytes=usable, headroom=w.headroom,
                  fits=fits, power_w=power, compute_format=v.compute_format(base))
    problems = _requirement_problems(p, v)
    if problems:
        row.status, row.reason = "unsupported", "; ".join(problems)
        return row
    if fits is False:
        row.status = "does-not-fit"
        row.reason = (f"needs {need / 1e9:.1f} GB (weights {wb.total / 1e9:.1f} + KV {kv / 1e9:.1f} + workspace "
                      f"{ws / 1e9:.1f}) > {usable / 1e9:.1f} GB usable ({p.memory_bytes / 1e9:.0f} GB less "
                      f"{w.headroom:.0%} headroom)")
        return row
    if fits is None:
        row.status = "unknown-fit"
        row.notes.append("memory capacity not published: fit not checked")

    groups, head_path, _, _ = _matmuls(shape, v, base)
    hd_q = shape.num_attention_heads * shape.head_dim_
    attn_path = (base, False)
    head_params = shape.hidden_size * shape.vocab_size

    decode_work = {k: 2.0 * n * B for k, n in groups.items()}
    decode_work[head_path] = decode_work.get(head_path, 0.0) + 2.0 * head_params * B
    decode_work[attn_path] = decode_work.get(attn_path, 0.0) + 4.0 * N * hd_q * shape.num_hidden_layers * B
    row.decode_tok_s, row.bound, d_note = _roofline(p, wb.total + kv, decode_work, B, "decode")

    prefill_work = {k: 2.0 * n * B * N for k, n in groups.items()}
    prefill_work[head_path] = prefill_work.get(head_path, 0.0) + 2.0 * head_params * B
    prefill_work[attn_path] = prefill_work.get(attn_path, 0.0) + 2.0 * N * N * hd_q * shape.num_hidden_layers * B
    row.prefill_tok_s, row.prefill_bound, p_note = _roofline(p, wb.total + kv, prefill_work, B * N, "prefill")

    if row.decode_tok_s:
        row.tpot_s = B / row.decode_tok_s
        if power:
            row.energy_j_per_token_upper = power / row.decode_tok_s
    row.reason = "; ".join(row.notes + [d_note, p_note] + ([v.layout.note] if v.layout.note else []))
    return row


def plan(profiles: list[Profile], variants: list[VariantSpec], w: Workload) -> list[PlanRow]:
    """One row per (profile, variant), profiles outer, in the order given."""
    return [project(p, v, w) for p in profiles for v in variants]
