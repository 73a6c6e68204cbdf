"""Published architecture shapes for synthetic models (random weights, real shape).

Each preset is the `config.json` of the named checkpoint reduced to the fields that set shape and
arithmetic. Sources: the model cards' config.json on the Hugging Face hub (meta-llama/Llama-3.2-1B,
meta-llama/Llama-3.1-8B, meta-llama/Llama-3.1-70B, Qwen/Qwen2.5-7B, mistralai/Mistral-7B-v0.3,
google/gemma-2-9b, microsoft/Phi-3-mini-4k-instruct; gemma-2-9b's also as restated in maxtext's
MaxText/utils/ckpt_conversion/utils/hf_model_configs.py).
`tiny` is ours: a few million parameters with the Llama layout, for tests.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchShape:
    """Shape of a decoder-only transformer, enough to count bytes and FLOPs."""

    name: str
    model_type: str  # transformers' model_type: llama, qwen2, mistral
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2 has q/k/v biases
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    head_dim: int | None = None
    norms_per_block: int = 2   # Gemma 2: four (after attention and around the MLP too)
    # further config.json fields the family needs ((key, value) pairs): activations, soft-caps, windows
    extra_config: tuple = ()

    @property
    def head_dim_(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def linear_shapes(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of every linear layer in one decoder block."""
        h, hd = self.hidden_size, self.head_dim_
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        i = self.intermediate_size
        return [
            ("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
            ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h),
        ]

    def fused_linear_shapes(self) -> list[tuple[str, int, int]]:
        """linear_shapes() as the lean decoder runs them (lean.fuse_projections): q/k/v fused into
        qkv_proj and gate/up into gate_up_proj, output rows stacked."""
        lin = {name: (i, o) for name, i, o in self.linear_shapes()}

        def fused(name: str, *parts: str) -> tuple[str, int, int]:
            return name, lin[parts[0]][0], sum(lin[p][1] for p in parts)

        return [fused("qkv_proj", "q_proj", "k_proj", "v_proj"), ("o_proj", *lin["o_proj"]),
                fused("gate_up_proj", "gate_proj", "up_proj"), ("down_proj", *lin["down_proj"])]

    def block_linear_params(self) -> int:
        return sum(i * o for _, i, o in self.linear_shapes())

    def prefill_widths(self) -> tuple[int, int]:
        """(hidden + intermediate, query heads x head dim): the per-token width of one block's elementwise
        work (norms, residual adds, activation) and the width of its attention's products, by which a
        prefill's non-GEMM cost scales from one model to another (harness/plan/step_cost.py)."""
        return self.hidden_size + self.intermediate_size, self.num_attention_heads * self.head_dim_

    def block_params(self) -> int:
        """Parameters of one decoder block: its linears, its norms and (Qwen2) the q/k/v biases."""
        per_block = self.block_linear_params() + self.norms_per_block * self.hidden_size  # RMSNorm weights
        if self.attention_bias:
            per_block += (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim_
        return per_block

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def lm_head_params(self) -> int:
        """Parameters of the output projection; 0 extra storage when tied to the embedding."""
        return self.vocab_size * self.hidden_size

    def param_count(self) -> int:
        """All parameters, counting a tied lm_head once."""
        head = 0 if self.tie_word_embeddings else self.lm_head_params()
        return self.embedding_params() + self.num_hidden_layers * self.block_params() + self.hidden_size + head

    def kv_bytes_per_token(self, bytes_per_value: float = 2.0) -> float:
        """K and V for every layer for one token (GQA: KV heads, not query heads)."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim_ * bytes_per_value

    def to_hf_config_dict(self) -> dict:
        d = {
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
        }
        if self.model_type == "llama":
            d["attention_bias"] = self.attention_bias
            d["head_dim"] = self.head_dim_
        elif self.head_dim is not None:
            d["head_dim"] = self.head_dim
        d.update(dict(self.extra_config))
        return d


PRESETS: dict[str, ArchShape] = {
    s.name: s
    for s in [
        ArchShape("llama-3.2-1b", "llama", 2048, 16, 32, 8, 8192, 128256,
                  tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072, head_dim=64),
        ArchShape("llama-3.1-8b", "llama", 4096, 32, 32, 8, 14336, 128256,
                  rope_theta=500000.0, max_position_embeddings=131072),
        ArchShape("llama-3.1-70b", "llama", 8192, 80, 64, 8, 28672, 128256,
                  rope_theta=500000.0, max_position_embeddings=131072),
        ArchShape("qwen2.5-7b", "qwen2", 3584, 28, 28, 4, 18944, 152064,
                  attention_bias=True, rope_theta=1000000.0, max_position_embeddings=131072, rms_norm_eps=1e-6),
        ArchShape("mistral-7b", "mistral", 4096, 32, 32, 8, 14336, 32768,
                  rope_theta=1000000.0, max_position_embeddings=32768),
        ArchShape("gemma-2-9b", "gemma2", 3584, 42, 16, 8, 14336, 256000, tie_word_embeddings=True,
                  max_position_embeddings=8192, rms_norm_eps=1e-6, head_dim=256, norms_per_block=4,
                  extra_config=(("hidden_act", "gelu_pytorch_tanh"), ("hidden_activation", "gelu_pytorch_tanh"),
                                ("query_pre_attn_scalar", 224), ("sliding_window", 4096),
                                ("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0))),
        ArchShape("phi-3-mini-4k", "phi3", 3072, 32, 32, 32, 8192, 32064, max_position_embeddings=4096,
                  extra_config=(("sliding_window", 2047), ("pad_token_id", 32000))),
        ArchShape("tiny", "llama", 256, 4, 4, 2, 768, 8192, max_position_embeddings=4096),
    ]
}

# Shapes of real checkpoints the harness knows by name (for planning without loading weights).
# SmolLM2-135M-Instruct: HuggingFaceTB/SmolLM2-135M-Instruct config.json.
SMOLLM2_135M = ArchShape("smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152,
                         tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=8192)
