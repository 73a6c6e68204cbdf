"""Two-loop split of energy into prefill and decode (pure arithmetic; no hardware).

Prefill is far shorter than the counter's ~100 ms update period, so one run cannot be split by time
(anchors.md). Instead two loops are measured, each a window of many passes:

  prefill loop: each pass = prompt forward + 1 new token (the first token comes from prefill)
  full loop:    each pass = prompt forward + `new_tokens` new tokens

  j_per_token_prefill = (E_prefill / passes_prefill) / (batch x prompt_tokens)
  j_per_token_decode  = (E_full / passes_full - E_prefill / passes_prefill) / (batch x (new_tokens - 1))
  j_per_output_token  = (E_full / passes_full) / (batch x new_tokens)   # ML.ENERGY's figure

Gross energy is the headline (none of Zeus, ML.ENERGY, CodeCarbon or MLPerf subtract idle power);
net = gross - idle_power_w x duration is reported beside it, labelled. A figure that comes out
negative or zero, or whose inputs are missing, is None with a reason: never 0.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopEnergy:
    energy_j: float | None
    duration_s: float
    passes: int

    @classmethod
    def from_window(cls, window, passes: int) -> "LoopEnergy":
        return cls(window.energy_j, window.duration_s, passes)


@dataclass(frozen=True)
class TwoLoopSplit:
    basis: str                              # "gross" or "net (idle X W subtracted)"
    j_per_token_prefill: float | None       # per prompt token
    j_per_token_decode: float | None        # per decode token (tokens after the first)
    j_per_output_token: float | None        # full pass energy / all new tokens
    prefill_j_per_pass: float | None
    full_j_per_pass: float | None
    decode_j_per_pass: float | None
    reasons: tuple[str, ...] = ()           # why a figure is None


def net_energy_j(gross_j: float | None, idle_power_w: float | None, duration_s: float) -> float | None:
    """Gross energy minus what the board draws at idle over the same duration."""
    if gross_j is None or idle_power_w is None:
        return None
    return gross_j - idle_power_w * duration_s


def _per_pass(loop: LoopEnergy, label: str, reasons: list[str]) -> float | None:
    if loop.energy_j is None:
        reasons.append(f"{label} loop: no energy reading")
        return None
    if loop.passes <= 0:
        reasons.append(f"{label} loop: {loop.passes} passes")
        return None
    if loop.energy_j <= 0:
        reasons.append(f"{label} loop: energy {loop.energy_j:.4g} J is not positive")
        return None
    return loop.energy_j / loop.passes


def split(prefill: LoopEnergy, full: LoopEnergy, prompt_tokens: int, new_tokens: int, batch: int = 1,
          basis: str = "gross") -> TwoLoopSplit:
    """Energy per prompt token and per decode token from the two loops (formulas in the module doc)."""
    reasons: list[str] = []
    e_pre = _per_pass(prefill, "prefill", reasons)
    e_full = _per_pass(full, "full", reasons)
    jp = jd = jo = e_dec = None
    if e_pre is not None:
        if prompt_tokens * batch > 0:
            jp = e_pre / (batch * prompt_tokens)
        else:
            reasons.append("no prompt tokens")
    if e_full is not None:
        if new_tokens * batch > 0:
            jo = e_full / (batch * new_tokens)
        else:
            reasons.append("no new tokens")
    if e_pre is not None and e_full is not None:
        decode_tokens = batch * (new_tokens - 1)
        diff = e_full - e_pre
        if decode_tokens <= 0:
            reasons.append(f"no decode tokens (new_tokens = {new_tokens}; the first comes from prefill)")
        elif diff <= 0:
            reasons.append(f"full pass {e_full:.4g} J not above prefill pass {e_pre:.4g} J: decode energy "
                           "below the counter's resolution or the loops are too short")
        else:
            e_dec = diff
            jd = diff / decode_tokens
    return TwoLoopSplit(basis, jp, jd, jo, e_pre, e_full, e_dec, tuple(reasons))


def split_gross_and_net(prefill: LoopEnergy, full: LoopEnergy, prompt_tokens: int, new_tokens: int,
                        batch: int = 1, idle_power_w: float | None = None) -> tuple[TwoLoopSplit, TwoLoopSplit | None]:
    """(gross, net) splits; net is None when idle power was not measured."""
    gross = split(prefill, full, prompt_tokens, new_tokens, batch, "gross")
    if idle_power_w is None:
        return gross, None
    net_pre = LoopEnergy(net_energy_j(prefill.energy_j, idle_power_w, prefill.duration_s),
                         prefill.duration_s, prefill.passes)
    net_full = LoopEnergy(net_energy_j(full.energy_j, idle_power_w, full.duration_s),
                          full.duration_s, full.passes)
    net = split(net_pre, net_full, prompt_tokens, new_tokens, batch,
                f"net (idle {idle_power_w:.1f} W x duration subtracted)")
    return gross, net
