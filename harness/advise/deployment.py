"""One deployment the advisor ranks: (profile, variant with its kernel, backend, batch, GPU count), with the
figures it is judged on and where each came from. Units in the field names; None = not known, never 0."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.advise.constraints import Check

MEASURED, PROJECTED = "measured", "projected"
CEILING = "roofline ceiling"   # how a projection from the roofline alone starts its basis
TIERS = ("measured", "curves", "efficiency", "ceiling")


@dataclass
class Deployment:
    profile: str
    profile_class: str
    variant: str
    backend: str                 # the record's backend; "-" for a projection (no engine ran)
    batch_size: int
    gpus: int
    context_tokens: int
    evidence: str                # measured | projected
    basis: str                   # where the speed figures come from (run folder, curves, efficiency, roofline)
    tier: str = "measured"       # measured | curves | efficiency | ceiling (TIERS: the strength of the speed figure)
    kernel: str = ""
    decode_tok_s: float | None = None        # aggregate over the batch, one deployment (all its GPUs)
    decode_low: float | None = None          # projection interval; None for a point figure
    decode_high: float | None = None
    ttft_s: dict[int, float | None] = field(default_factory=dict)   # percentile -> seconds
    tpot_s: dict[int, float | None] = field(default_factory=dict)
    latency_note: str = ""
    j_per_token: float | None = None
    energy_basis: str = ""       # e.g. "measured (nvml_counter)", "upper estimate: 700 W x projected time"
    memory_need_bytes: int | None = None     # per GPU
    memory_usable_bytes: int | None = None   # per GPU, less the headroom
    fits: bool | None = None
    fit_detail: str = ""
    kl_mean: float | None = None
    top1_agreement: float | None = None
    quality_verdict: str = ""
    quality_source: str = "quality not measured"
    price_per_hour: float | None = None      # per GPU, from the prices file
    replicas: int | None = None              # copies needed for the throughput target (1 without one)
    checks: list[Check] = field(default_factory=list)
    record_context_tokens: int | None = None  # the measured record's prompt + new tokens
    notes: list[str] = field(default_factory=list)

    @property
    def meets(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def missed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def devices(self) -> int | None:
        return None if self.replicas is None else self.replicas * self.gpus

    @property
    def tok_s_per_device(self) -> float | None:
        return None if self.decode_tok_s is None else self.decode_tok_s / self.gpus

    @property
    def cost_per_mtok(self) -> float | None:
        """Price per million generated tokens: GPUs x price per GPU-hour / tokens per hour."""
        if self.price_per_hour is None or not self.decode_tok_s:
            return None
        return self.price_per_hour * self.gpus / (self.decode_tok_s * 3600) * 1e6

    @property
    def key(self) -> tuple:
        return (self.profile, self.variant, self.backend, self.batch_size, self.gpus)

    def label(self) -> str:
        gpus = f" x{self.gpus}" if self.gpus > 1 else ""
        be = "" if self.backend == "-" else f" [{self.backend}]"
        return f"{self.profile}{gpus} / {self.variant}{be} / batch {self.batch_size}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        d.update(meets=self.meets, devices=self.devices, tok_s_per_device=self.tok_s_per_device,
                 cost_per_mtok=self.cost_per_mtok)
        return d
