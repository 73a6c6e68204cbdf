"""Quality settings: the single source of the quality options and their defaults.

Each field carries its help text in `metadata["help"]`, so the command line can be generated from
this dataclass. Thresholds set to None are not checked.

Where the default thresholds come from: llama.cpp `llama-perplexity --kl-divergence`, Llama-3-8B
vs its FP16 logits (the perplexity README's tables, added in ggml-org/llama.cpp PR #6936; the mean KL
column is the one in shared/reference/anchors.md):

| quant  | mean KLD | same top token | PPL ratio |
|--------|----------|----------------|-----------|
| q8_0   | 0.00136  | 97.7%          | 1.0004    |
| q6_K   | 0.00545  | 96.0%          | 1.0035    |
| q4_K_M | 0.0313   | 91.9%          | 1.028     |
| q4_0   | 0.0719   | n/a            | 1.075     |
| q2_K   | 0.445    | 71.1%          | 1.565     |

- kl_mean_max 0.05: between q4_K_M and q4_0, i.e. "about as good as a good 4-bit GGUF".
- kl_p99_max 0.4: the 99th percentile ran 7.6x the mean in an IQ4_XS run at mean KLD 0.0425
  (99% KLD 0.325; llama.cpp PR #12557), so 0.05 x ~8.
- top1_min 0.88: q4_K_M keeps 91.9% of top tokens; the IQ4_XS run above (mean KLD 0.0425) kept 89.9%,
  so a variant just inside kl_mean_max keeps about 0.89.
- ppl_ratio_max 1.05: q4_0 (mean KLD 0.072) costs 1.075, q4_K_M 1.028; also the AWQ paper's INT4 g128
  round-to-nearest on Llama-2-7B (5.73 / 5.47 = 1.048).
Small models lose more to the same quantization than 8B ones, so SmolLM2 failing a 4-bit variant
is a finding, not a miscalibration.

Budget: the default 768 positions (window 512, stride 256: 1024 tokens of forward) cost SmolLM2-135M
(fp32, the lab's 2-core CPU) 3.3-6.9 CPU-seconds per variant on one thread (baseline 6.7, int8-wo
5.3, int4-wo 5.4, unstructured-50 5.8); --quick's 256 positions 1.0-1.7 s; the baseline reference
7.6 s and 1.5 s. That fits the default run's ~15 s per variant with room for slower kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

REFERENCE_DTYPES = ("float32", "float16")


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class QualitySettings:
    enabled: bool = _opt(True, "Measure perplexity and KL vs the baseline for models with real weights "
                               "(synthetic models are reported as not-meaningful).")
    tokens: int = _opt(768, "Scored token positions (from the head of the corpus), the same for every variant.")
    quick_tokens: int = _opt(256, "Scored token positions under --quick.")
    window: int = _opt(512, "Tokens per forward pass of the sliding window.")
    stride: int = _opt(256, "Tokens the window advances; every scored token after the first window sees "
                            "at least window - stride tokens of context.")
    kl_mean_max: float | None = _opt(0.05, "Fail when mean KL(baseline || variant) in nats exceeds this "
                                           "(llama.cpp q4_K_M on Llama-3-8B: 0.031, q4_0: 0.072).")
    kl_p99_max: float | None = _opt(0.4, "Fail when the 99th percentile of per-token KL exceeds this.")
    top1_min: float | None = _opt(0.88, "Fail when the share of positions whose top token equals the "
                                        "baseline's falls below this (llama.cpp q4_K_M: 0.919).")
    ppl_ratio_max: float | None = _opt(1.05, "Fail when perplexity / baseline perplexity exceeds this "
                                             "(llama.cpp q4_K_M: 1.028, q4_0: 1.075).")
    reference_dtype: str = _opt("float16", "Storage of the baseline's log-probabilities: float16 halves "
                                           "memory; KL then compares both sides rounded alike (exact zero for "
                                           "identical outputs). float32 is exact.")

    def __post_init__(self) -> None:
        for name in ("tokens", "quick_tokens", "window", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"quality {name} must be >= 1, got {getattr(self, name)}")
        if self.stride > self.window:
            raise ValueError(f"quality stride ({self.stride}) must not exceed the window ({self.window}): "
                             "tokens between windows would never be scored")
        if self.reference_dtype not in REFERENCE_DTYPES:
            raise ValueError(f"quality reference_dtype {self.reference_dtype!r} not in {REFERENCE_DTYPES}")
        for name in ("kl_mean_max", "kl_p99_max", "ppl_ratio_max"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"quality {name} must be >= 0, got {v}")
        if self.top1_min is not None and not 0 <= self.top1_min <= 1:
            raise ValueError(f"quality top1_min must be in [0, 1], got {self.top1_min}")

    def for_run(self, quick: bool) -> "QualitySettings":
        """The settings a run uses: under --quick the token budget is quick_tokens."""
        return replace(self, tokens=self.quick_tokens) if quick else self

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SensitivitySettings:
    """Defaults of `harness sensitivity`. One model instance is built and evaluated per group and per
    k, so the budget is smaller than a run's: about 1 s of forward per group for SmolLM2 on 2 cores."""
    granularity: str = _opt("block", "block: one group per decoder block; linear: one per linear layer "
                                     "(lm_head is its own group either way).")
    tokens: int = _opt(256, "Scored token positions per measurement.")
    window: int = _opt(512, "Tokens per forward pass.")
    stride: int = _opt(256, "Tokens the window advances.")
    top_k: int = _opt(8, "Measure mixed models keeping the k = 0..K most sensitive groups.")
    target_kl: float | None = _opt(QualitySettings.kl_mean_max, "Propose the fewest kept groups whose mixed "
                                   "model's mean KL is at most this (default: the quality threshold).")

    def quality(self) -> QualitySettings:
        return QualitySettings(tokens=self.tokens, window=self.window, stride=self.stride,
                               reference_dtype="float32")
