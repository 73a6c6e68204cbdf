"""Views of an Advice: Markdown, JSON, and an HTML section for the report. They compute nothing."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

from harness.advise.constraints import Constraints
from harness.advise.deployment import Deployment
from harness.advise.rank import OBJECTIVE_INFO, Advice, objective_value

TOP = 15


@dataclass
class Context:
    """What the advice was asked and from what: printed above the table."""
    model: str
    context_tokens: int
    context_note: str
    constraints: Constraints
    sources: list[str]
    currency: str = ""
    notes: list[str] = field(default_factory=list)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.3g}"


def _rate(d: Deployment) -> str:
    if d.decode_tok_s is None:
        return "-"
    iv = f" [{d.decode_low:,.0f}, {d.decode_high:,.0f}]" if d.decode_low is not None else ""
    return f"{d.decode_tok_s:,.1f}{iv}"


def _quality(d: Deployment) -> str:
    if d.kl_mean is None and not d.quality_verdict:
        return "quality not measured"
    kl = "-" if d.kl_mean is None else f"{d.kl_mean:.3g}"
    top1 = "-" if d.top1_agreement is None else f"{d.top1_agreement:.3f}"
    return f"KL {kl}, top-1 {top1}, {d.quality_verdict or '-'}"


def _percentiles(c: Constraints) -> tuple[list[int], list[int]]:
    return sorted(c.ttft_s) or [50], sorted(c.tpot_s) or [90]


def columns(c: Constraints, objective: str, currency: str) -> list[str]:
    tq, pq = _percentiles(c)
    return (["#", "deployment", "evidence", "decode tok/s [interval]"] + [f"TTFT p{q} ms" for q in tq]
            + [f"TPOT p{q} ms" for q in pq]
            + ["J/token", f"cost/Mtok{(' ' + currency) if currency else ''}", "tok/s per device", "devices",
               "memory per device", "quality", "meets?"])


def cells(i: int, d: Deployment, c: Constraints) -> list[str]:
    tq, pq = _percentiles(c)
    ev = (d.evidence if d.tier == d.evidence else f"{d.evidence} ({d.tier})") + ": " + d.basis
    cost = d.cost_per_mtok
    return ([str(i), d.label(), ev, _rate(d)] + [_ms(d.ttft_s.get(q)) for q in tq] + [_ms(d.tpot_s.get(q)) for q in pq]
            + ["-" if d.j_per_token is None else f"{d.j_per_token:.3g} ({d.energy_basis.split(':')[0]})",
               "-" if cost is None else f"{cost:.3g}", "-" if d.tok_s_per_device is None else f"{d.tok_s_per_device:,.1f}",
               "-" if d.devices is None else str(d.devices), d.fit_detail, _quality(d),
               "yes" if d.meets else "no: " + "; ".join(f"{m.name} ({m.detail})" for m in d.missed)])


def _md_row(xs: list[str]) -> str:
    return "| " + " | ".join(x.replace("|", "/") for x in xs) + " |"


def header_lines(a: Advice, ctx: Context) -> list[str]:
    name, what, lower = OBJECTIVE_INFO[a.objective]
    return [f"Model {ctx.model}, context {ctx.context_tokens} tokens ({ctx.context_note}).",
            "Constraints: " + "; ".join(ctx.constraints.describe()) + ".",
            f"Objective: {what} ({'lower' if lower else 'higher'} is better).",
            "Evidence: " + ("; ".join(ctx.sources) if ctx.sources else "no records: projections only") + "."]


PROFILE_COLS = ["profile", "best deployment", "evidence", "objective", "meets?"]


def profile_cells(d: Deployment, objective: str) -> list[str]:
    v = objective_value(d, objective)
    return [d.profile, d.label(), d.tier, "-" if v is None else f"{v:.3g} {OBJECTIVE_INFO[objective][0]}",
            "yes" if d.meets else "no: " + "; ".join(f"{m.name} ({m.detail})" for m in d.missed)]


def to_markdown(a: Advice, ctx: Context, top: int = TOP) -> str:
    out = ["# harness advise", ""] + [f"- {x}" for x in header_lines(a, ctx)] + [""]
    cols = columns(ctx.constraints, a.objective, ctx.currency)
    if a.choice is not None:
        out += ["## First choice", "", a.paragraph, ""]
        if a.claims:
            out += ["## What decided it (each variant's best on the chosen profile)", ""] + [f"- {x}" for x in a.claims] + [""]
        out += [f"## Deployments that meet every constraint ({len(a.ranked)}; best {min(top, len(a.ranked))} shown)", "",
                _md_row(cols), "|" + "---|" * len(cols)]
        out += [_md_row(cells(i, d, ctx.constraints)) for i, d in enumerate(a.ranked[:top], 1)]
    else:
        out += ["## No deployment meets every constraint", "", a.paragraph, "", "### Closest", "",
                _md_row(cols), "|" + "---|" * len(cols)]
        out += [_md_row(cells(i, d, ctx.constraints)) for i, d in enumerate(a.closest, 1)]
    out += ["", "## Best per profile", "", _md_row(PROFILE_COLS), "|" + "---|" * len(PROFILE_COLS)]
    out += [_md_row(profile_cells(d, a.objective)) for d in a.by_profile()]
    if ctx.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in ctx.notes]
    return "\n".join(out) + "\n"


def to_json(a: Advice, ctx: Context) -> str:
    ch = a.choice
    return json.dumps({
        "model": ctx.model, "context_tokens": ctx.context_tokens, "context_note": ctx.context_note,
        "constraints": ctx.constraints.describe(), "objective": a.objective, "sources": ctx.sources,
        "currency": ctx.currency, "meets": ch is not None,
        "choice": None if ch is None else ch.to_dict(), "objective_value": None if ch is None else objective_value(ch, a.objective),
        "binding_constraint": a.binding, "paragraph": a.paragraph, "claims": a.claims,
        "ranked": [d.to_dict() for d in a.ranked], "closest": [d.to_dict() for d in a.closest],
        "others": [d.to_dict() for d in a.others],
        "by_profile": [d.to_dict() for d in a.by_profile()],
        "considered": len(a.ranked) + len(a.others), "notes": ctx.notes}, indent=1, default=str) + "\n"


def to_html(a: Advice, ctx: Context, top: int = TOP) -> str:
    """A <section> for report.html (every string escaped; no script, no style)."""
    e = html.escape
    rows = a.ranked[:top] if a.choice is not None else a.closest
    cols = columns(ctx.constraints, a.objective, ctx.currency)
    title = "Advice" if a.choice is not None else "Advice: no deployment meets every constraint"
    out = [f'<section class="advice"><h2>{e(title)}</h2>', "<ul>"] + [f"<li>{e(x)}</li>" for x in header_lines(a, ctx)]
    out += ["</ul>", f"<p>{e(a.paragraph)}</p>"]
    if a.claims:
        out += ["<ul>"] + [f"<li>{e(x)}</li>" for x in a.claims] + ["</ul>"]
    out += ["<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in cells(i, d, ctx.constraints)) + "</tr>"
            for i, d in enumerate(rows, 1)]
    out += ["</tbody></table>", "<h3>Best per profile</h3>",
            "<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in PROFILE_COLS) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in profile_cells(d, a.objective)) + "</tr>" for d in a.by_profile()]
    out += ["</tbody></table>"] + ([f"<p>{e(n)}</p>" for n in ctx.notes]) + ["</section>"]
    return "\n".join(out) + "\n"


def render(a: Advice, ctx: Context, fmt: str, top: int = TOP) -> str:
    return {"md": lambda: to_markdown(a, ctx, top), "json": lambda: to_json(a, ctx),
            "html": lambda: to_html(a, ctx, top)}[fmt]()
