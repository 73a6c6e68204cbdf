"""report.html: one self-contained page (charts embedded as base64 PNG, no server, no network) from
one Jinja2 template with autoescape on, so every model path, variant, reason and machine name from the
records is escaped. Summary first: one row per variant on each machine/profile with its headline
figures, the ratio to the baseline of the same cells, the quality verdict and the cells that did not run."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from harness.records import Record, cell_key, primary, write_view
from harness.report.fmt import machine
from harness.report.fmt import NA, mb, ms, num, sig

GROUP = ("profile", "model", "backend", "variant")   # one summary row per these


@dataclass
class SummaryRow:
    machine: str
    profile: str
    model: str
    backend: str
    variant: str
    cells_ok: int
    cells: int
    decode_tok_s: str            # at the largest batch that ran, e.g. "812.3 (b32)"
    decode_ratio: str            # geometric mean over cells of variant / baseline of the same cell
    weights_mb: str
    weights_ratio: str
    j_per_token: str
    verdict: str
    kl_mean: str
    problems: list[str] = field(default_factory=list)   # "batch 8 prompt 128: unsupported: reason"


def _ratio(pairs: list[tuple[float, float]]) -> str:
    vals = [a / b for a, b in pairs if a is not None and b]
    if not vals:
        return NA
    prod = 1.0
    for v in vals:
        prod *= v
    return f"{prod ** (1 / len(vals)):.2f}x"


def summary(records: list[Record]) -> list[SummaryRow]:
    rs = primary(records)
    base = {cell_key(r, without=("variant",)): r for r in rs if r.variant == "baseline" and r.status == "ok"}
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in rs:
        groups[(machine(r),) + tuple(getattr(r, a) for a in GROUP)].append(r)
    out = []
    for key, cells in groups.items():
        ok = [r for r in cells if r.status == "ok"]
        pairs = [(r, base.get(cell_key(r, without=("variant",)))) for r in ok]
        top = max((r for r in ok if r.decode_tok_s is not None), key=lambda r: r.batch_size, default=None)
        verdicts = sorted({r.quality_verdict for r in ok if r.quality_verdict})
        kls = [r.kl_mean for r in ok if r.kl_mean is not None]
        out.append(SummaryRow(
            *key, len(ok), len(cells),
            NA if top is None else f"{num(top.decode_tok_s)} (b{top.batch_size})",
            _ratio([(r.decode_tok_s, b.decode_tok_s) for r, b in pairs if b]),
            mb(ok[0].weight_bytes) if ok else NA,
            _ratio([(r.weight_bytes, b.weight_bytes) for r, b in pairs if b]),
            sig(top.j_per_token_decode) + f" ({top.energy_source})" if top else NA,
            ", ".join(verdicts) or "not measured", sig(kls[0]) if kls else NA,
            [f"batch {r.batch_size} prompt {r.prompt_tokens}: {r.status}: {r.reason}" for r in cells
             if r.status != "ok"]))
    return out


def _cell_rows(records: list[Record]) -> list[dict]:
    return [{"machine": machine(r), "profile": r.profile, "model": r.model, "variant": r.variant,
             "backend": r.backend, "batch": r.batch_size, "prompt": r.prompt_tokens, "status": r.status,
             "reason": r.reason, "decode": num(r.decode_tok_s), "prefill": num(r.prefill_tok_s), "ttft": ms(r.ttft_s),
             "tpot": f"{ms(r.tpot_p50_s)} / {ms(r.tpot_p99_s)}", "weights": mb(r.weight_bytes),
             "vram": mb(r.peak_vram_bytes), "build_peak": mb(r.engine.build_peak_bytes), "rss": mb(r.peak_rss_bytes),
             "energy": f"{sig(r.j_per_token_decode)} ({r.energy_source})", "verdict": r.quality_verdict or NA}
            for r in primary(records)]


def _runs(records: list[Record]) -> list[dict]:
    seen: dict[str, dict] = {}
    for r in records:
        p = r.provenance or {}
        seen.setdefault(r.run_id or "?", {"run_id": r.run_id or "?", "machine": machine(r), "profile": r.profile,
                                          "commit": str(p.get("git_commit") or "?")[:12] +
                                          (" (dirty)" if p.get("git_dirty") else ""),
                                          "utc": p.get("utc_time") or "?"})
    return list(seen.values())


def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                       autoescape=select_autoescape(default=True, default_for_string=True))


def render_html(records: list[Record], images: list[tuple] = (), title: str = "", projections: list = (),
                sections: tuple[str, ...] = ()) -> str:
    """images: (Chart, base64 PNG) pairs, embedded in the page as data: URIs; projections: the
    planner's rows for profiles not measured (harness.report.projections), in their own table;
    sections: HTML fragments appended after the tables, already escaped by their producer
    (harness.advise.output.to_html)."""
    from markupsafe import Markup

    from harness.report.projections import PROJECTED_LABEL, table_rows

    runs = _runs(records)
    return _environment().get_template("report.html.j2").render(
        title=title or "harness run " + ", ".join(r["run_id"] for r in runs), runs=runs, summary=summary(records),
        cells=_cell_rows(records), projected=table_rows(list(projections)), projected_label=PROJECTED_LABEL,
        images=[{"name": c.name, "title": c.info.get("title", c.name),
                 "caption": c.caption, "png": png} for c, png in images],
        sections=[Markup(x) for x in sections])


def write_html(records: list[Record], out_dir: Path, images: list[tuple] = (), projections: list = (),
               sections: tuple[str, ...] = ()) -> Path:
    text = render_html(records, images, projections=projections, sections=tuple(sections))
    return write_view(Path(out_dir) / "report.html", lambda p: p.write_text(text, encoding="utf-8"), "the HTML report")
