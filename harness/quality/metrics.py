"""Pure functions on logits: KL divergence, top-1 agreement, perplexity, and the sliding windows
that fix which token positions are scored.

Conventions: natural logarithms (KL in nats, perplexity = exp(mean NLL in nats)); everything is
computed in float32 whatever dtype the model produced its logits in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """One forward pass over input ids[begin:end]; scores positions [score_from, end).

    The logits at position p predict token p + 1, so a window over ids[begin:end] is scored against
    ids[score_from + 1:end + 1]; the scored positions are always the window's tail, which lets the
    model compute logits for those rows only.
    """
    begin: int
    end: int
    score_from: int

    @property
    def scored(self) -> int:
        return self.end - self.score_from

    @property
    def length(self) -> int:
        return self.end - self.begin


def sliding_windows(positions: int, window: int, stride: int) -> tuple[Window, ...]:
    """Windows that score positions 0..positions-1 exactly once (needs positions + 1 token ids).

    Windows start at 0, stride, 2*stride, ... and span `window` ids (the last one is clipped to the
    end). Each scores only the positions the previous window did not reach, so a position scored in
    any window but the first sees at least `window - stride` earlier tokens as context; the first
    window's positions see 0..window-1 (llama.cpp and the transformers perplexity guide do the same).
    Forward cost is about positions * window / stride tokens.
    """
    if positions < 1:
        raise ValueError(f"need at least one position to score, got {positions}")
    if not 1 <= stride <= window:
        raise ValueError(f"need 1 <= stride <= window, got stride {stride}, window {window}")
    out: list[Window] = []
    begin, done = 0, 0
    while done < positions:
        end = min(begin + window, positions)
        out.append(Window(begin, end, done))
        done = end
        begin += stride
    return tuple(out)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last dimension, in float32."""
    return torch.log_softmax(logits.float(), dim=-1)


def kl_per_position(ref_logp: torch.Tensor, var_logp: torch.Tensor) -> torch.Tensor:
    """KL(P_ref || P_var) per row, in nats, from log-probabilities (rows, vocab), float32.

    Rows where the reference gives a token zero probability contribute nothing for that token;
    float32 rounding can make a row a few 1e-8 negative, which is clipped to 0.
    """
    ref_logp, var_logp = ref_logp.float(), var_logp.float()
    p = ref_logp.exp()
    terms = torch.where(p > 0, p * (ref_logp - var_logp), torch.zeros((), dtype=p.dtype, device=p.device))
    return terms.sum(dim=-1).clamp_min(0.0)


def top1(logits: torch.Tensor) -> torch.Tensor:
    """Index of the most likely token per row (the first one on ties, as torch.argmax)."""
    return logits.argmax(dim=-1)


def top1_agreement(ref_top1: torch.Tensor, var_top1: torch.Tensor) -> float:
    """Share of positions whose top token is the same in both models."""
    if ref_top1.numel() == 0:
        raise ValueError("top-1 agreement of zero positions")
    return (ref_top1 == var_top1).float().mean().item()


def nll(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each row's target token, in nats."""
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def perplexity(nll_values: torch.Tensor) -> float:
    """exp(mean NLL) over all scored positions (a token-weighted mean, not a mean of window PPLs)."""
    return torch.exp(nll_values.double().mean()).item()


def percentile(values: torch.Tensor, q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between order statistics (numpy's default)."""
    return torch.quantile(values.double(), q / 100.0).item()
