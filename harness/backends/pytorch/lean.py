"""A lean forward for Llama-family decoders (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma, Gemma 2) over a
transformers model's own modules, with a static KV cache.

Why not the model's own forward: at batch 1 a decode step is ~5 ms of weight reads on an H100, and
transformers' per-step Python (cache objects, mask construction, kwargs plumbing) costs as much again
and cannot be captured as one CUDA graph. This forward is plain tensor code with fixed shapes, so
the decode step can be compiled and captured whole. It calls the model's own nn.Linear / RMSNorm /
rotary modules, so any variant applied to those modules (torchao tensor subclasses, 2:4 sparse
weights, int4 packed CPU modules) runs unchanged: the kernels are the variant's.

`fuse_projections` optionally concatenates q/k/v and gate/up into single linears *before* a variant
is applied (quantization and 2:4 masks work per output row, so this changes no numerics).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2")
# The attention of a compiled one-token decode step: "sdpa" (F.scaled_dot_product_attention over the
# cache with a boolean mask: cuDNN/flash plus a mask kernel per layer on CUDA) or "flex" (FlexAttention's
# decoding kernel, the causal/window mask and Gemma 2's soft-cap as a score_mod, one generated kernel per
# layer), or "sdpa-packed" (SDPA with the query heads of each KV group folded into query rows: one MHA
# call that reads every cached K/V once, for models with grouped-query attention; identical to "sdpa"
# without GQA). Prefill, and any step that is not being compiled, runs SDPA: eager FlexAttention is a
# reference implementation.
DECODE_ATTENTION = ("sdpa", "flex", "sdpa-packed")
# Per family, what differs from Llama and where the lean forward takes it from (the model's own modules
# and config, never constants): Phi-3 ships q/k/v and gate/up fused (split by head counts) and may rotate
# only part of each head (its rotary module's cos width); Gemma scales the embeddings by sqrt(hidden)
# (its embedding module does so itself in recent transformers) and runs GELU-tanh (the MLP's act_fn);
# Gemma 2 adds norms after attention and around the MLP, a query scale from query_pre_attn_scalar
# (the attention module's `scaling`), tanh soft-capping of attention logits and of the final logits,
# and sliding-window attention on every other layer (the attention module's `sliding_window`).


def supports(model: nn.Module) -> str | None:
    """None if the lean forward can drive this model, else why not."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        return f"lean decoder supports {SUPPORTED_MODEL_TYPES}, not {mt!r}"
    if mt in ("qwen2", "qwen3") and getattr(model.config, "use_sliding_window", False):
        return f"{mt} per-layer sliding windows (use_sliding_window) are not implemented in the lean decoder"
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is not None and len(layers) and not (hasattr(layers[0], "mlp") and hasattr(layers[0], "self_attn")):
        return f"{mt}: decoder layers without self_attn / mlp are not what the lean decoder drives"
    return None


def sliding_window(config) -> int | None:
    """The attention window in tokens, or None for full attention. Mistral applies `sliding_window`
    when set; Qwen2 only with `use_sliding_window` (and then only above `max_window_layers`, which
    the lean decoder does not model: refused in supports())."""
    w = getattr(config, "sliding_window", None)
    if not w:
        return None
    if getattr(config, "model_type", None) in ("qwen2", "qwen3") and not getattr(config, "use_sliding_window", False):
        return None
    return int(w)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _fuse(linears: list[nn.Linear]) -> nn.Linear:
    w = torch.cat([l.weight for l in linears], 0)
    has_bias = linears[0].bias is not None
    fused = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        fused.weight.copy_(w)
        if has_bias:
            fused.bias.copy_(torch.cat([l.bias for l in linears], 0))
    fused.requires_grad_(False)
    return fused


def fuse_projections(model: nn.Module) -> None:
    """In place: self_attn.{q,k,v}_proj -> self_attn.qkv_proj and mlp.{gate,up}_proj -> mlp.gate_up_proj."""
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        if not hasattr(a, "q_proj"):   # Phi-3: fused in the checkpoint already
            continue
        a.qkv_proj = _fuse([a.q_proj, a.k_proj, a.v_proj])
        a.qkv_split = (a.q_proj.out_features, a.k_proj.out_features, a.v_proj.out_features)
        del a.q_proj, a.k_proj, a.v_proj
        m.gate_up_proj = _fuse([m.gate_proj, m.up_proj])
        m.gate_up_split = m.gate_proj.out_features
        del m.gate_proj, m.up_proj


def _flex_decode(q, kc, vc, pos, window, cap, scale, gqa):
    """FlexAttention over the static cache for a one-token step: keys at or before the query's position
    (and within the window, if any) attend; Gemma 2's logit soft-cap before the mask, as in its own
    attention. `pos` is the step's (1,) position tensor, read inside the kernel (no host sync)."""
    from torch.nn.attention.flex_attention import flex_attention

    def score_mod(score, b, h, q_idx, kv_idx):
        if cap:
            score = torch.tanh(score / cap) * cap
        p = pos[q_idx]
        keep = kv_idx <= p
        if window:
            keep = keep & (kv_idx > p - window)
        return torch.where(keep, score, -float("inf"))

    return flex_attention(q, kc, vc, score_mod=score_mod, scale=scale, enable_gqa=gqa)


class LeanDecoder(nn.Module):
    """forward(ids (B, T), pos (T,) absolute positions) -> logits of the last position (B, vocab).

    The KV cache is (B, kv_heads, max_len, head_dim) per layer, written at `pos` with index_copy_;
    attention reads the whole cache under a mask `key position <= query position` and, for a model
    with a sliding window W (Mistral), `key position > query position - W` as transformers does: the
    same as full attention while the context is within the window, masked beyond it.
    """

    def __init__(self, model: nn.Module, batch: int, max_len: int, decode_attention: str = "sdpa"):
        super().__init__()
        why = supports(model)
        if why:
            raise ValueError(why)
        if decode_attention not in DECODE_ATTENTION:
            raise ValueError(f"decode attention must be one of {DECODE_ATTENTION}, got {decode_attention!r}")
        self.decode_attention = decode_attention
        cfg = model.config
        self.hf = model
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.batch, self.max_len = batch, max_len
        p = next(model.parameters())
        dtype = model.model.embed_tokens.weight.dtype
        shape = (batch, self.n_kv, max_len, self.head_dim)
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=p.device) for _ in model.model.layers]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=p.device) for _ in model.model.layers]
        self.key_pos = torch.arange(max_len, device=p.device)
        self.window = sliding_window(cfg)
        self.final_softcap = getattr(cfg, "final_logit_softcapping", None)
        # Gemma before transformers' self-scaling embedding module: the normalizer is applied here
        self.embed_scale = (float(cfg.hidden_size) ** 0.5 if cfg.model_type.startswith("gemma")
                            and not hasattr(model.model.embed_tokens, "embed_scale") else None)
        self.qkv_default = (self.n_heads * self.head_dim, self.n_kv * self.head_dim, self.n_kv * self.head_dim)
        # per layer, read once: (its attention window or None, Gemma 2's norms around attention and MLP, activation)
        self.layer_plan = [self._plan(layer) for layer in model.model.layers]

    def _plan(self, layer: nn.Module) -> tuple:
        sandwich = hasattr(layer, "pre_feedforward_layernorm")
        window = getattr(layer.self_attn, "sliding_window", None) if sandwich else self.window
        mlp = layer.mlp
        act = getattr(mlp, "act_fn", None) or getattr(mlp, "activation_fn", None) or F.silu
        return window or None, sandwich, act

    def kv_cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k_cache + self.v_cache)

    def _rotary(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        r = cos.shape[-1]
        if r == t.shape[-1]:
            return t * cos + _rotate_half(t) * sin
        rot, rest = t[..., :r], t[..., r:]                          # partial rotary (Phi-3 variants)
        return torch.cat((rot * cos + _rotate_half(rot) * sin, rest), dim=-1)

    def _attention(self, a, q, kc, vc, mask, pos, window):
        scale = getattr(a, "scaling", None)
        cap = getattr(a, "attn_logit_softcapping", None)
        if self.decode_attention == "flex" and q.shape[2] == 1 and torch.compiler.is_compiling():
            return _flex_decode(q, kc, vc, pos, window, cap, scale, self.n_kv != self.n_heads)
        if not cap and self.decode_attention == "sdpa-packed" and q.shape[2] == 1 and self.n_kv != self.n_heads:
            # one query token per sequence: the query heads of a KV group become that group's query rows
            # (B, n_kv, heads per group, D), so attention reads each cached K/V once in a plain MHA call;
            # the step's mask row is the same for every head of the group (it broadcasts). Same result
            # as SDPA with enable_gqa.
            B, H, _, D = q.shape
            o = F.scaled_dot_product_attention(q.reshape(B, self.n_kv, H // self.n_kv, D), kc, vc,
                                               attn_mask=mask, scale=scale)
            return o.reshape(B, H, 1, D)
        if not cap:
            return F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, scale=scale,
                                                  enable_gqa=self.n_kv != self.n_heads)
        # soft-capped logits (Gemma 2): SDPA has no hook between the product and the softmax
        rep = self.n_heads // self.n_kv
        k, v = kc.repeat_interleave(rep, dim=1), vc.repeat_interleave(rep, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * (scale if scale is not None else self.head_dim ** -0.5)
        w = torch.tanh(w / cap) * cap
        w = w.masked_fill(~mask, float("-inf"))
        return torch.matmul(torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype), v)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        m = self.hf.model
        B, T = ids.shape
        x = m.embed_tokens(ids)
        if self.embed_scale is not None:
            x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
        cos, sin = m.rotary_emb(x, pos[None].expand(B, T))
        cos, sin = cos[:, None], sin[:, None]                       # (B, 1, T, rotary dim)
        causal = self.key_pos[None, :] <= pos[:, None]              # (T, max_len), True = attend
        windowed = {}
        for i, layer in enumerate(m.layers):
            a, mlp = layer.self_attn, layer.mlp
            w, sandwich, act = self.layer_plan[i]
            if w:
                if w not in windowed:
                    windowed[w] = causal & (self.key_pos[None, :] > pos[:, None] - w)
                mask = windowed[w]
            else:
                mask = causal
            h = layer.input_layernorm(x)
            if hasattr(a, "qkv_proj"):
                q, k, v = a.qkv_proj(h).split(getattr(a, "qkv_split", self.qkv_default), dim=-1)
            else:
                q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
            q = q.view(B, T, self.n_heads, self.head_dim)
            k = k.view(B, T, self.n_kv, self.head_dim)
            if hasattr(a, "q_norm"):                                 # Qwen3: RMSNorm per head on q and k
                q, k = a.q_norm(q), a.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = self._rotary(q, cos, sin), self._rotary(k, cos, sin)
            kc, vc = self.k_cache[i], self.v_cache[i]
            kc.index_copy_(2, pos, k)
            vc.index_copy_(2, pos, v)
            o = self._attention(a, q, kc, vc, mask, pos, w)
            o = a.o_proj(o.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
            if sandwich:                                             # Gemma 2: norms after attention, around the MLP
                x = x + layer.post_attention_layernorm(o)
                h = layer.pre_feedforward_layernorm(x)
            else:
                x = x + o
                h = layer.post_attention_layernorm(x)
            if hasattr(mlp, "gate_up_proj"):
                gu = mlp.gate_up_proj(h)
                g, u = gu.split(getattr(mlp, "gate_up_split", gu.shape[-1] // 2), dim=-1)
            else:
                g, u = mlp.gate_proj(h), mlp.up_proj(h)
            y = mlp.down_proj(act(g) * u)
            if sandwich:
                y = layer.post_feedforward_layernorm(y)
            x = x + y
        x = m.norm(x if all_logits else x[:, -1])
        logits = self.hf.lm_head(x)
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits


class LeanLM(nn.Module):
    """`model(input_ids=...)` -> logits (B, T, vocab) through the lean forward: quality evaluation for a
    model whose projections were fused (transformers' own forward no longer matches its modules)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.hf = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        d = LeanDecoder(self.hf, B, T)
        return d(input_ids, torch.arange(T, device=input_ids.device), all_logits=True)
