"""Judging and ranking deployments: checks against the constraints, sizing for a throughput target, the
objective, the first choice with the constraint that binds, and the compression claims that decided it."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from harness.advise.constraints import (Constraints, devices_check, latency_checks, memory_check,
                                        quality_checks)
from harness.advise.deployment import MEASURED, PROJECTED, Deployment
from harness.advise.measured import Quality

# objective -> (what it is, unit, lower is better)
OBJECTIVE_INFO = {"energy": ("J/token", "J per generated token", True),
                  "cost": ("cost/Mtok", "price per million generated tokens", True),
                  "throughput": ("tok/s per device", "generated tokens/s per device", False)}
CLOSEST = 5


def objective_value(d: Deployment, objective: str) -> float | None:
    return {"energy": d.j_per_token, "cost": d.cost_per_mtok, "throughput": d.tok_s_per_device}[objective]


def size(d: Deployment, c: Constraints) -> None:
    """Replicas of the deployment for the throughput target (1 without one; None without a figure)."""
    if c.tokens_per_s is not None:
        d.replicas = None if not d.decode_tok_s else math.ceil(c.tokens_per_s / d.decode_tok_s)
    elif c.users is not None:
        d.replicas = math.ceil(c.users / d.batch_size)
    else:
        d.replicas = 1


def judge(d: Deployment, c: Constraints, quality: Quality) -> None:
    kl, top1, verdict, src = quality.lookup(d.variant, d.profile, d.backend)
    d.kl_mean, d.top1_agreement, d.quality_verdict, d.quality_source = kl, top1, verdict, src
    size(d, c)
    why = ("no figure (does not fit)" if d.fits is False else "no figure") if d.decode_tok_s is None else \
        "not in the record"
    d.checks = (quality_checks(c, kl, top1, verdict, src) + latency_checks(c, d.ttft_s, d.tpot_s, why)
                + [memory_check(d.fits, d.fit_detail, d.memory_need_bytes, d.memory_usable_bytes)]
                + devices_check(c, d.devices))
    if d.evidence == PROJECTED and d.decode_low:
        slow = d.batch_size / d.decode_low
        for q, lim in sorted(c.tpot_s.items()):
            if d.tpot_s.get(q) is not None and d.tpot_s[q] <= lim < slow:
                d.notes.append(f"TPOT p{q}: the interval's slow end ({slow * 1e3:.3g} ms) misses {lim * 1e3:g} ms")


def ceiling_only(d: Deployment) -> bool:
    """Speed from the roofline alone (or none): an upper bound, not a projection of what an engine reaches."""
    return d.tier not in ("measured", "curves", "efficiency")


def sort_key(d: Deployment, objective: str) -> tuple:
    """Measured and calibrated projections first, by the objective; roofline ceilings after them (their
    speed is an upper bound, so their objective is flattering), missing objective values last."""
    v = objective_value(d, objective)
    lower = OBJECTIVE_INFO[objective][2]
    return (ceiling_only(d), v is None, (v if lower else -v) if v is not None else 0.0, d.evidence != MEASURED,
            -(d.tok_s_per_device or 0.0))


def closeness(d: Deployment) -> tuple:
    missed = d.missed
    return (len(missed), sum(1 for m in missed if m.status == "unknown"), sum(m.excess for m in missed))


@dataclass
class Advice:
    objective: str
    ranked: list[Deployment]                  # those that meet every constraint, best first
    others: list[Deployment]                  # the rest, closest first
    binding: str = ""
    paragraph: str = ""
    claims: list[str] = field(default_factory=list)

    @property
    def choice(self) -> Deployment | None:
        return self.ranked[0] if self.ranked else None

    @property
    def closest(self) -> list[Deployment]:
        return self.others[:CLOSEST]

    def by_profile(self) -> list[Deployment]:
        """Each profile's best deployment: its first that meets everything, else its closest miss."""
        seen: dict[str, Deployment] = {}
        for d in self.ranked + self.others:
            seen.setdefault(d.profile, d)
        return list(seen.values())


def _fmt(v: float | None, objective: str) -> str:
    if v is None:
        return "unknown"
    return f"{v:.3g} {OBJECTIVE_INFO[objective][0]}"


def binding_constraint(choice: Deployment, rows: list[Deployment], objective: str) -> tuple[str, str]:
    """(constraint name, sentence): the constraint that keeps the most deployments that beat the choice
    on the objective out, counting first those it keeps out alone."""
    ck = sort_key(choice, objective)
    better = [d for d in rows if not d.meets and objective_value(d, objective) is not None
              and sort_key(d, objective) < ck]
    if not better:
        return "", (f"No constraint binds: no deployment considered has a better {OBJECTIVE_INFO[objective][0]} "
                    "than this one.")
    alone = Counter(d.missed[0].name for d in better if len(d.missed) == 1)
    anyof = Counter(m.name for d in better for m in d.missed)
    name = (alone or anyof).most_common(1)[0][0]
    best = min((d for d in better if any(m.name == name for m in d.missed)), key=lambda d: sort_key(d, objective))
    miss = next(m for m in best.missed if m.name == name)
    return name, (f"The binding constraint is {name}: {anyof[name]} of the {len(better)} deployments with a better "
                  f"{OBJECTIVE_INFO[objective][0]} miss it ({alone.get(name, 0)} miss only it); the best of them, "
                  f"{best.label()} at {_fmt(objective_value(best, objective), objective)}, has {miss.detail}.")


def _choice_sentence(d: Deployment, objective: str) -> str:
    figs = [f"{_fmt(objective_value(d, objective), objective)}"]
    if d.decode_tok_s is not None:
        iv = f" [{d.decode_low:.0f}, {d.decode_high:.0f}]" if d.decode_low is not None else ""
        figs.append(f"{d.decode_tok_s:,.1f}{iv} decode tok/s")
    passed = "; ".join(c.detail for c in d.checks)
    notes = "".join(f" {n}." for n in d.notes)
    if ceiling_only(d):
        notes += (" This choice rests on a roofline ceiling only: the datasheet does not rule it out, but no "
                  "measurement or calibration of this profile backs it; measure it before buying.")
    return (f"First choice: {d.label()} ({d.evidence}, {d.tier}: {d.basis}) at {', '.join(figs)}. "
            f"Quality: {d.quality_source}. Checks: {passed}. Latency: {d.latency_note}.{notes}")


def runner_up_sentence(ranked: list[Deployment], objective: str) -> str:
    if len(ranked) < 2:
        return "No runner-up: no other deployment meets every constraint."
    a = ranked[0]
    b = next((d for d in ranked[1:] if (d.profile, d.variant) != (a.profile, a.variant)), ranked[1])
    va, vb = objective_value(a, objective), objective_value(b, objective)
    ratio = f" ({vb / va:.2f}x)" if va and vb else ""
    return (f"The runner-up (best of another profile or variant), {b.label()} ({b.tier}), would cost "
            f"{_fmt(vb, objective)}{ratio}.")


def variant_claims(choice: Deployment, rows: list[Deployment], objective: str) -> list[str]:
    """Per variant, its best deployment on the chosen profile (same GPU count) against the choice."""
    same = [d for d in rows if d.profile == choice.profile and d.gpus == choice.gpus]
    cv = objective_value(choice, objective)
    out = []
    for variant in dict.fromkeys(d.variant for d in sorted(same, key=lambda d: sort_key(d, objective))):
        best = min((d for d in same if d.variant == variant), key=lambda d: (not d.meets, sort_key(d, objective)))
        v = objective_value(best, objective)
        rel = f"{v / cv:.2f}x the choice's {OBJECTIVE_INFO[objective][0]}" if v and cv else \
            f"{OBJECTIVE_INFO[objective][0]} unknown"
        verdict = "meets every constraint" if best.meets else \
            "misses " + "; ".join(f"{m.name} ({m.detail})" for m in best.missed)
        out.append(f"{variant}: best at batch {best.batch_size} ({best.tier}) is {rel}, and {verdict}.")
    return out


def advise(rows: list[Deployment], c: Constraints, quality: Quality, objective: str) -> Advice:
    for d in rows:
        judge(d, c, quality)
    ranked = sorted((d for d in rows if d.meets), key=lambda d: sort_key(d, objective))
    others = sorted((d for d in rows if not d.meets), key=lambda d: (closeness(d), sort_key(d, objective)))
    a = Advice(objective, ranked, others)
    if a.choice is None:
        a.paragraph = (f"No deployment meets every constraint ({len(rows)} considered). The closest "
                       f"{min(CLOSEST, len(others))} are listed with the constraints they miss.")
        return a
    a.binding, bind = binding_constraint(a.choice, rows, objective)
    a.paragraph = " ".join([_choice_sentence(a.choice, objective), bind, runner_up_sentence(ranked, objective)])
    a.claims = variant_claims(a.choice, rows, objective)
    return a
