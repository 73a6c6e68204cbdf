"""Activation-aware weight quantization (AWQ; Lin et al., MLSys 2024, arXiv:2306.00978): the scale search.

For each group of linear layers that read one input (q/k/v; gate/up; o_proj; down_proj; lm_head),
scale input channel j by s_j = mean|x_j|^alpha (normalized as llm-awq does, s / sqrt(max s * min s)),
choosing alpha on a grid over [0, 1] to minimize the MSE of the group's outputs with int4-quantized
weights Q(W diag(s)) applied to x / s, on calibration activations. alpha = 0 is plain RTN, so the
chosen scale never does worse than RTN on the calibration rows.

The inverse scale is folded into the op that produces the group's input, so inference runs the same
int4 kernels with no extra op: RMSNorm weight (q/k/v, gate/up, lm_head), v_proj rows (o_proj; with
grouped-query attention one scale per KV channel, repeated over the query heads that share it) and
up_proj rows (down_proj). Models whose q/k/v and gate/up were fused (harness.backends.pytorch.lean's
qkv_proj / gate_up_proj, done on CUDA before apply) keep the fused linears as the quantized consumers;
for the calibration forward, which is transformers' own, temporary q/k/v and gate/up modules over
row slices of the fused weights stand in for the originals.
Linears with no foldable producer (unknown architectures, a tied lm_head) stay unscaled: plain RTN.
Like llm-awq, every scale is searched on activations of the unquantized model; unlike it, there is
no weight-clipping search.

Calibration: `ctx.calibration_ids` (corpus tail, fixed count, seeded), one sequence per forward,
through harness.variants.calibration. mean|x| uses every token; the loss uses the first LOSS_ROWS
token rows (the search is compute bound: rows x weights x grid).
torchao's prototype AWQ is not used: it needs a torchao int4 config as base, and torchao 0.18 has
none that runs on CPU; it also scales activations at run time instead of folding.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.variants.calibration import collect_input_stats
from harness.variants.int4_cpu import GROUP_SIZE, fake_quantize, pad_k
from harness.variants.registry import ApplyContext

# The search costs (grid + 1) fake-quantizations of every weight and matmuls with `rows` tokens.
# llm-awq uses a 20-step grid; CPU uses 10 steps and 128 rows. SmolLM2-135M on 2 idle CPU cores:
# calibration 10 s (5 s forward, 5 s search); logits KL to fp32 0.34 vs RTN's 0.54 (20 x 256: 0.36).
GRID = {"cpu": 10, "cuda": 20}              # steps over alpha in [0, 1]
LOSS_ROWS = {"cpu": 128, "cuda": 1024}      # token rows in the search loss
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")   # RMSNorm computes x_hat * weight


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class Group:
    name: str
    consumers: list[tuple[str, nn.Linear]]
    fold: Callable[[torch.Tensor], None]                 # divide the producer's output channels by s
    tap: tuple[str, nn.Module]                           # module whose input is the group's input in the forward
    to_consumer: Callable[[torch.Tensor], torch.Tensor] = _identity   # producer channels -> consumer inputs
    to_producer: Callable[[torch.Tensor], torch.Tensor] = _identity   # consumer-input statistic -> producer


@dataclass(frozen=True)
class SearchResult:
    scale: torch.Tensor          # per producer channel, fp32
    alpha: float
    loss_rtn: float              # group output MSE at alpha = 0 (plain RTN)
    loss: float                  # at the chosen alpha


@dataclass
class AwqReport:
    calibration_s: float = 0.0
    scaled_linears: int = 0
    unscaled_linears: int = 0    # quantized later, but no producer to fold into: plain RTN
    results: dict[str, SearchResult] = field(default_factory=dict)

    def note(self) -> str:
        if not self.results:
            return f"AWQ found no foldable groups; {self.unscaled_linears} linears are plain RTN"
        alphas = [r.alpha for r in self.results.values()]
        gain = sum(r.loss for r in self.results.values()) / max(sum(r.loss_rtn for r in self.results.values()), 1e-30)
        return (f"AWQ: {len(self.results)} groups, {self.scaled_linears} linears scaled, "
                f"{self.unscaled_linears} plain RTN; alpha mean {sum(alphas) / len(alphas):.2f}; "
                f"calibration output MSE {gain:.3f} x RTN's")


def why_unscaled(model: nn.Module, report: AwqReport) -> str:
    """Why awq_scale_ scaled no linear, for the NothingApplied reason."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return (f"model_type {model_type!r} is not one whose scales it can fold "
                f"({', '.join(SUPPORTED_MODEL_TYPES)})")
    if report.unscaled_linears == 0:
        return "the policy keeps every linear"
    return f"no foldable group has a linear the policy leaves to quantize ({report.unscaled_linears} would be plain RTN)"


# -- the search --------------------------------------------------------------------------------------
def search_scale(x: torch.Tensor, mean_abs: torch.Tensor, weights: list[torch.Tensor],
                 to_consumer: Callable[[torch.Tensor], torch.Tensor] = _identity,
                 grid: int | None = None, group_size: int = GROUP_SIZE) -> SearchResult:
    """x: (rows, K) consumer inputs; mean_abs: mean |x| per producer channel; weights: (N_i, K) each."""
    k = x.shape[1]
    x = x.float()
    refs = [x @ w.float().T for w in weights]
    # pad K to whole groups once (zeros in x and W, ones in the scale) rather than at every alpha
    x, ws = pad_k(x, group_size), [pad_k(w.float(), group_size) for w in weights]
    k_pad = x.shape[1] - k
    base = mean_abs.float().clamp(min=1e-8)
    grid = grid or GRID["cuda"]
    best: SearchResult | None = None
    loss_rtn = math.nan
    for i in range(grid + 1):
        alpha = i / grid
        s = base.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        sc = F.pad(to_consumer(s), (0, k_pad), value=1.0)
        xs = x / sc
        loss = sum(((xs @ fake_quantize(w * sc, group_size).T - r) ** 2).mean().item() for w, r in zip(ws, refs))
        if i == 0:
            loss_rtn = loss
        if best is None or loss < best.loss:
            best = SearchResult(s, alpha, loss_rtn, loss)
    return SearchResult(best.scale, best.alpha, loss_rtn, best.loss)


# -- where the scales fold ---------------------------------------------------------------------------
def _fold_norm(norm: nn.Module):
    def fold(s: torch.Tensor) -> None:
        w = norm.weight.data
        w.copy_((w.float() / s).to(w.dtype))
    return fold


def _fold_rows(lin: nn.Linear, rows: slice = slice(None)):
    def fold(s: torch.Tensor) -> None:
        w = lin.weight.data[rows]
        w.copy_((w.float() / s[:, None]).to(w.dtype))
        if lin.bias is not None:
            b = lin.bias.data[rows]
            b.copy_((b.float() / s).to(b.dtype))
    return fold


def _gqa_maps(n_heads: int, n_kv: int, head_dim: int):
    """o_proj input channel h * head_dim + d reads KV channel (h // n_rep) * head_dim + d (HF repeat_kv)."""
    n_rep = n_heads // n_kv

    def to_consumer(s: torch.Tensor) -> torch.Tensor:
        return s.view(n_kv, 1, head_dim).expand(n_kv, n_rep, head_dim).reshape(-1)

    def to_producer(m: torch.Tensor) -> torch.Tensor:
        return m.view(n_kv, n_rep, head_dim).mean(1).reshape(-1)
    return to_consumer, to_producer


def _is_plain(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) and type(m.weight) in (nn.Parameter, torch.Tensor)


class _RowView(nn.Module):
    """Output rows `rows` of a fused linear, sharing its storage: stands in for q_proj etc. while the
    transformers forward runs during calibration."""

    def __init__(self, fused: nn.Linear, rows: slice):
        super().__init__()
        self.rows = rows
        object.__setattr__(self, "fused", fused)     # a plain attribute: not a submodule, not re-counted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.fused.bias is None else self.fused.bias[self.rows]
        return F.linear(x, self.fused.weight[self.rows], b)


def _splits(sizes) -> list[slice]:
    edges = [0]
    for n in sizes:
        edges.append(edges[-1] + n)
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


@contextmanager
def unfused_views(model: nn.Module):
    """Temporary q/k/v_proj and gate/up_proj over row slices of fused qkv_proj / gate_up_proj."""
    added = []
    for layer in model.model.layers:
        a, mlp = layer.self_attn, layer.mlp
        if hasattr(a, "qkv_proj"):
            added += [(a, n, a.qkv_proj, r) for n, r in zip(("q_proj", "k_proj", "v_proj"), _splits(a.qkv_split))]
        if hasattr(mlp, "gate_up_proj"):
            g, n = mlp.gate_up_split, mlp.gate_up_proj.out_features
            added += [(mlp, "gate_proj", mlp.gate_up_proj, slice(0, g)), (mlp, "up_proj", mlp.gate_up_proj, slice(g, n))]
    for mod, name, fused, rows in added:
        setattr(mod, name, _RowView(fused, rows))
    try:
        yield
    finally:
        for mod, name, _, _ in added:
            delattr(mod, name)


def find_groups(model: nn.Module) -> list[Group]:
    """Foldable groups of a Llama-family transformers model; [] for anything else.
    Call inside `unfused_views` when the model has fused projections (the taps are the views)."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in SUPPORTED_MODEL_TYPES or not hasattr(model, "model"):
        return []
    names = {m: n for n, m in model.named_modules()}
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    to_c, to_p = _gqa_maps(n_heads, n_kv, hd)
    out: list[Group] = []

    def add(name, consumers, fold, tap, *maps):
        if all(_is_plain(c) for c in consumers):
            out.append(Group(name, [(names[c], c) for c in consumers], fold, (names[tap], tap), *maps))

    for layer in model.model.layers:
        a, mlp, lname = layer.self_attn, layer.mlp, names[layer]
        if hasattr(a, "qkv_proj"):
            qkv, (v_lin, v_rows) = [a.qkv_proj], (a.qkv_proj, _splits(a.qkv_split)[2])
        else:
            qkv, (v_lin, v_rows) = [a.q_proj, a.k_proj, a.v_proj], (a.v_proj, slice(None))
        if hasattr(mlp, "gate_up_proj"):
            gu, (up_lin, up_rows) = [mlp.gate_up_proj], (mlp.gate_up_proj, slice(mlp.gate_up_split, None))
        else:
            gu, (up_lin, up_rows) = [mlp.gate_proj, mlp.up_proj], (mlp.up_proj, slice(None))
        add(f"{lname}.input_layernorm", qkv, _fold_norm(layer.input_layernorm), a.q_proj)
        if _is_plain(v_lin) and a.o_proj.in_features == n_heads * hd and n_heads % n_kv == 0:
            add(f"{lname}.v->o_proj", [a.o_proj], _fold_rows(v_lin, v_rows), a.o_proj, to_c, to_p)
        add(f"{lname}.post_attention_layernorm", gu, _fold_norm(layer.post_attention_layernorm), mlp.gate_proj)
        if _is_plain(up_lin):
            add(f"{lname}.up->down_proj", [mlp.down_proj], _fold_rows(up_lin, up_rows), mlp.down_proj)
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and not (emb is not None and head.weight is emb.weight) and hasattr(model.model, "norm"):
        add("model.norm->lm_head", [head], _fold_norm(model.model.norm), head)
    return out


# -- calibration ---------------------------------------------------------------------------------------
@torch.no_grad()
def awq_scale_(model: nn.Module, ctx: ApplyContext, grid: int | None = None) -> AwqReport:
    """Search and fold AWQ scales in place (weights stay in high precision; quantize afterwards)."""
    if ctx.calibration_ids is None:
        raise ValueError("int4-awq needs calibration token ids in ApplyContext.calibration_ids")
    t0 = time.perf_counter()
    quantized = [(n, m) for n, m in model.named_modules() if ctx.linear_filter(m, n)]
    stats = {}
    with unfused_views(model):
        groups = [g for g in find_groups(model) if any(ctx.linear_filter(c, n) for n, c in g.consumers)]
        if groups:
            taps = {id(g.tap[1]) for g in groups}
            device = next(model.parameters()).device
            # one sequence per forward bounds activation (and logits) memory on large models
            stats = collect_input_stats(model, ctx.calibration_ids.to(device), lambda m, _: id(m) in taps,
                                        sample_tokens=LOSS_ROWS.get(ctx.device_type, LOSS_ROWS["cuda"]),
                                        batch_rows=1)
    groups = [g for g in groups if g.tap[0] in stats]
    report = AwqReport()
    scales = []
    for g in groups:
        st = stats.pop(g.tap[0])
        ws = [c.weight for n, c in g.consumers if ctx.linear_filter(c, n)]
        res = search_scale(st.sample, g.to_producer(st.abs_mean), ws, g.to_consumer,
                           grid or GRID.get(ctx.device_type, GRID["cuda"]))
        report.results[g.name] = res
        scales.append(res.scale)
    for g, s in zip(groups, scales):      # fold only after every search: each used unscaled activations
        g.fold(s)
        sc = g.to_consumer(s)
        for _, c in g.consumers:
            w = c.weight.data
            w.copy_((w.float() * sc[None, :]).to(w.dtype))
    scaled = {id(c) for g in groups for _, c in g.consumers}
    report.scaled_linears = sum(id(m) in scaled for _, m in quantized)
    report.unscaled_linears = len(quantized) - report.scaled_linears
    report.calibration_s = time.perf_counter() - t0
    return report
