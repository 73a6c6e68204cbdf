"""What a deployment must meet: quality, latency percentiles, memory, sizing. Parsed and checked here.

Latency limits are per percentile: {50|90|99: seconds}. The MLPerf presets are the Llama-3.1-8B limits of
MLPerf Inference (mlcommons/inference, tools/submission/submission_checker: LLM_LATENCY_LIMITS,
"llama3.1-8b": Server TTFT 2,000 ms / TPOT 100 ms, Interactive TTFT 500 ms / TPOT 30 ms), which MLPerf
checks at the 99th percentile; the preset applies them there unless a percentile option overrides one.

A check is pass, fail or unknown. Only pass counts: a figure that is not known (quality not measured,
memory capacity not published, no latency figure) never meets a constraint.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PERCENTILES = (50, 90, 99)
MLPERF_SOURCE = ("MLPerf Inference Llama-3.1-8B latency limits (mlcommons/inference, "
                 "tools/submission/submission_checker LLM_LATENCY_LIMITS), checked at the 99th percentile")
SLO_PRESETS = {   # name -> (TTFT s, TPOT s, percentile)
    "mlperf-server": (2.0, 0.100, 99),
    "mlperf-interactive": (0.500, 0.030, 99),
}
VERDICTS = ("pass",)
OBJECTIVES = ("energy", "cost", "throughput")


class AdviseError(ValueError):
    """Bad constraints or inputs: one line, exit 2."""


@dataclass(frozen=True)
class Check:
    name: str          # e.g. "max-kl", "tpot-p90", "memory"
    status: str        # pass | fail | unknown
    detail: str        # the figure against the limit, or why it is unknown
    excess: float = 0.0  # how far past the limit, as a ratio - 1 (fail only), to order the closest misses

    @property
    def ok(self) -> bool:
        return self.status == "pass"


@dataclass
class Constraints:
    max_kl: float | None = None
    min_top1: float | None = None
    verdict: str | None = None
    ttft_s: dict[int, float] = field(default_factory=dict)   # percentile -> limit
    tpot_s: dict[int, float] = field(default_factory=dict)
    slo: str | None = None
    tokens_per_s: float | None = None
    users: int | None = None
    max_devices: int | None = None
    headroom: float = 0.10

    @property
    def quality(self) -> bool:
        return self.max_kl is not None or self.min_top1 is not None or self.verdict is not None

    def describe(self) -> list[str]:
        out = []
        if self.max_kl is not None:
            out.append(f"mean KL <= {self.max_kl:g} nats")
        if self.min_top1 is not None:
            out.append(f"top-1 agreement >= {self.min_top1:g}")
        if self.verdict:
            out.append(f"quality verdict {self.verdict}")
        for q, s in sorted(self.ttft_s.items()):
            out.append(f"TTFT p{q} <= {s * 1e3:g} ms")
        for q, s in sorted(self.tpot_s.items()):
            out.append(f"TPOT p{q} <= {s * 1e3:g} ms")
        if self.slo:
            out.append(f"(--slo {self.slo}: {MLPERF_SOURCE})")
        if self.tokens_per_s is not None:
            out.append(f"{self.tokens_per_s:g} tokens/s in total")
        if self.users is not None:
            out.append(f"{self.users} concurrent users")
        if self.max_devices is not None:
            out.append(f"at most {self.max_devices} devices")
        out.append(f"fits with {self.headroom:.0%} memory headroom")
        return out


def build(*, max_kl=None, min_top1=None, verdict=None, ttft=None, tpot=None, slo=None, tokens_per_s=None,
          users=None, max_devices=None, headroom=0.10) -> Constraints:
    """Constraints from the command line's values; ttft/tpot: {percentile: ms}. Raises AdviseError."""
    if max_kl is not None and max_kl < 0:
        raise AdviseError(f"--max-kl {max_kl}: must be >= 0")
    if min_top1 is not None and not 0 <= min_top1 <= 1:
        raise AdviseError(f"--min-top1 {min_top1}: must be within 0..1")
    if verdict is not None and verdict not in VERDICTS:
        raise AdviseError(f"--verdict {verdict!r}: only {', '.join(VERDICTS)}")
    if tokens_per_s is not None and users is not None:
        raise AdviseError("--tokens-per-s and --users are two ways to size the same thing: give one")
    c = Constraints(max_kl=max_kl, min_top1=min_top1, verdict=verdict, slo=slo, tokens_per_s=tokens_per_s,
                    users=users, max_devices=max_devices, headroom=headroom)
    if slo is not None:
        if slo not in SLO_PRESETS:
            raise AdviseError(f"--slo {slo!r}: known presets {', '.join(SLO_PRESETS)}")
        t1, t2, q = SLO_PRESETS[slo]
        c.ttft_s[q], c.tpot_s[q] = t1, t2
    for name, given, into in (("ttft", ttft, c.ttft_s), ("tpot", tpot, c.tpot_s)):
        for q, ms in (given or {}).items():
            if q not in PERCENTILES:
                raise AdviseError(f"--{name}-p{q}-ms: percentiles are {PERCENTILES}")
            if ms is None:
                continue
            if ms <= 0:
                raise AdviseError(f"--{name}-p{q}-ms {ms}: must be > 0")
            into[q] = ms / 1e3
    for name, x in (("--tokens-per-s", tokens_per_s), ("--users", users), ("--max-devices", max_devices)):
        if x is not None and x <= 0:
            raise AdviseError(f"{name} {x}: must be > 0")
    if not 0 <= headroom < 1:
        raise AdviseError(f"--headroom {headroom}: must be within [0, 1)")
    return c


def _limit(name: str, value: float | None, limit: float, upper: bool, what: str, fmt: str, why_none: str) -> Check:
    if value is None:
        return Check(name, "unknown", f"{what}: {why_none}")
    ok = value <= limit if upper else value >= limit
    rel = "<=" if upper else ">="
    detail = f"{what} {fmt.format(value)} {rel if ok else ('>' if upper else '<')} {fmt.format(limit)}"
    excess = 0.0 if ok else (value / limit - 1 if upper else (limit - value) / max(limit, 1e-12))
    return Check(name, "pass" if ok else "fail", detail, excess)


def quality_checks(c: Constraints, kl: float | None, top1: float | None, verdict: str, why_none: str) -> list[Check]:
    out = []
    if c.max_kl is not None:
        out.append(_limit("max-kl", kl, c.max_kl, True, "KL", "{:.3g}", why_none))
    if c.min_top1 is not None:
        out.append(_limit("min-top1", top1, c.min_top1, False, "top-1", "{:.3f}", why_none))
    if c.verdict is not None:
        if not verdict:
            out.append(Check("verdict", "unknown", f"verdict: {why_none}"))
        else:
            out.append(Check("verdict", "pass" if verdict == c.verdict else "fail", f"verdict {verdict}",
                             0.0 if verdict == c.verdict else 1.0))
    return out


def latency_checks(c: Constraints, ttft: dict[int, float | None], tpot: dict[int, float | None],
                   why_none: str) -> list[Check]:
    out = []
    for kind, limits, got in (("ttft", c.ttft_s, ttft), ("tpot", c.tpot_s, tpot)):
        for q, lim in sorted(limits.items()):
            v = got.get(q)
            out.append(_limit(f"{kind}-p{q}", None if v is None else v * 1e3, lim * 1e3, True,
                              f"{kind.upper()} p{q} ms", "{:.4g}", why_none))
    return out


def memory_check(fits: bool | None, detail: str, need: int | None = None, usable: int | None = None) -> Check:
    """excess: need / usable - 1 where both are known (how far from fitting), else 1."""
    excess = 0.0 if fits else (need / usable - 1 if fits is False and need and usable else 1.0)
    return Check("memory", {True: "pass", False: "fail", None: "unknown"}[fits], detail, excess)


def devices_check(c: Constraints, devices: int | None) -> list[Check]:
    if c.max_devices is None:
        return []
    if devices is None:
        return [Check("max-devices", "unknown", "devices: no throughput figure to size with")]
    ok = devices <= c.max_devices
    return [Check("max-devices", "pass" if ok else "fail", f"{devices} devices {'<=' if ok else '>'} {c.max_devices}",
                  0.0 if ok else devices / c.max_devices - 1)]
