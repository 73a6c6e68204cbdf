"""Run-to-run comparison of Records, with direction, noise, thresholds, and what became of each cell.

Matching: cells are matched on every cell axis except the profile (model, variant, backend, batch,
prompt, new tokens); a run measured with --repetitions contributes its first meters-on repetition of
each cell (`records.primary`). The profile is not part of the match on purpose: comparing an H100
run with an H200 run is a fair question (what does the other GPU give?), and matching nothing would
only hide it. Such a pair is said loudly instead: each of its rows is flagged `profile` and a
WARNING line says that the changes measure the hardware, not the code. The same goes, less loudly,
for rows whose run settings (`SETTINGS`), harness commit (provenance git_commit and dirty flag) or
library versions differ: a word per flagged row, and one summary line per kind.

Cells: ok in both runs -> one row per metric. Ok before and failed (any status but ok) or missing
after -> a `regression` row of its own (metric `status`). New in AFTER -> `new`; failed before and
ok after -> `fixed`; neither is a regression. No cell in common -> CompareError.

Metrics: each declares whether higher is better. A change counts as a regression only when it goes
the bad way by more than its threshold AND by more than the noise: twice the two runs' spreads added
(stdev over passes for decode tok/s, IQR for TTFT and TPOT), so a delta inside the run-to-run spread
is never a regression.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import Any

from harness.records import Record, cell_axes, cell_key, primary
from harness.report.fmt import md

HIGHER, LOWER = "higher", "lower"
# metric -> (better direction, field holding its spread or None)
METRICS = {
    "decode_tok_s": (HIGHER, "decode_tok_s_stdev"),
    "prefill_tok_s": (HIGHER, None),
    "ttft_s": (LOWER, "ttft_s_iqr"),
    "tpot_p50_s": (LOWER, "tpot_iqr_s"),
    "j_per_token_decode": (LOWER, None),
    "peak_vram_bytes": (LOWER, None),
    "peak_rss_bytes": (LOWER, None),
    "weight_bytes": (LOWER, None),
    "kl_mean": (LOWER, None),
}
DEFAULT_THRESHOLDS = "decode_tok_s:-5%"
MATCH_AXES = cell_axes(without=("profile",))
# how a cell ran: a difference between the two runs is flagged `settings` (section.field for sections);
# a value unknown on one side (None or "") is not counted as a difference
SETTINGS = ("device", "dtype", "decode_path", "prompt_source", "timing_source", "meters", "engine.compile_mode",
            "engine.coordinate_descent_tuning", "engine.decode_attention", "quality.window_tokens", "quality.stride_tokens",
            "quality.reference_dtype")
STATUS_METRIC = "status"      # the metric of a row about the cell itself (failed, vanished, new)
REGRESSION = "regression"


class CompareError(ValueError):
    pass


def parse_thresholds(text: str) -> dict[str, float]:
    """'decode_tok_s:-5%,ttft_s:+10%' -> {metric: allowed fractional change in the bad direction}."""
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, pct = part.partition(":")
        if name not in METRICS:
            raise CompareError(f"unknown metric {name!r}; comparable metrics: {', '.join(METRICS)}")
        try:
            value = abs(float(pct.strip().rstrip("%"))) / 100
        except ValueError:
            raise CompareError(f"threshold {part!r} must look like {name}:-5%") from None
        out[name] = value
    return out


@dataclass(frozen=True)
class Delta:
    cell: tuple                   # in MATCH_AXES order
    metric: str                   # a METRICS name, or STATUS_METRIC for a row about the cell itself
    a: Any                        # before: the metric's value, or the cell's status (None: absent)
    b: Any                        # after
    change: float | None          # (b - a) / a
    noise: float | None           # fraction of a the spreads allow
    status: str                   # regression | improvement | within-noise | within-threshold | unchanged |
    #                               missing | new | fixed | still-failing | dropped
    threshold: float | None = None   # allowed fractional change in the bad direction
    profiles: tuple = (None, None)   # (before, after)
    flags: tuple[str, ...] = ()      # profile | settings | commit | versions
    differences: tuple[str, ...] = ()  # what differs, e.g. "decode_path: compiled+cuda-graph -> eager"
    note: str = ""                   # e.g. the failure reason after


def _get(r: Record, name: str):
    obj = r
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _differences(ra: Record, rb: Record) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(flags, what differs) between the records of one cell in the two runs."""
    flags, diffs = [], []
    if ra.profile != rb.profile:
        flags.append("profile")
        diffs.append(f"profile: {ra.profile} -> {rb.profile}")
    # a setting one record does not know (None, "": made before the field existed) is not a difference
    known = [(s, _get(ra, s), _get(rb, s)) for s in SETTINGS]
    changed = [f"{s}: {x!r} -> {y!r}" for s, x, y in known if x != y and x not in (None, "") and y not in (None, "")]
    if changed:
        flags.append("settings")
        diffs += changed
    pa, pb = ra.provenance or {}, rb.provenance or {}
    ca, cb = (pa.get("git_commit"), pa.get("git_dirty")), (pb.get("git_commit"), pb.get("git_dirty"))
    if ca != cb:
        flags.append("commit")
        diffs.append(f"commit: {_commit(ca)} -> {_commit(cb)}")
    va, vb = pa.get("versions") or {}, pb.get("versions") or {}
    libs = [f"{k}: {va.get(k)} -> {vb.get(k)}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
    if libs:
        flags.append("versions")
        diffs += libs
    return tuple(flags), tuple(diffs)


def _commit(c: tuple) -> str:
    commit, dirty = c
    return ("unknown" if commit is None else str(commit)[:12]) + (" (dirty)" if dirty else "")


def _metric_delta(key, metric, allowed, ra: Record, rb: Record, **kw) -> Delta:
    direction, spread_field = METRICS[metric]
    va, vb = getattr(ra, metric), getattr(rb, metric)
    if va is None or vb is None or va == 0:
        return Delta(key, metric, va, vb, None, None, "missing", allowed, **kw)
    change = (vb - va) / va
    spreads = [getattr(r, spread_field) for r in (ra, rb)] if spread_field else []
    noise = 2 * sum(s for s in spreads if s is not None) / abs(va) if spreads else 0.0
    worse = change < 0 if direction == HIGHER else change > 0
    if math.isclose(change, 0.0, abs_tol=1e-12):
        status = "unchanged"
    elif abs(change) <= noise:
        status = "within-noise"
    elif worse and abs(change) > allowed:
        status = REGRESSION
    elif worse:
        status = "within-threshold"
    else:
        status = "improvement"
    return Delta(key, metric, va, vb, change, noise, status, allowed, **kw)


def _cell_delta(key, ra: Record | None, rb: Record | None, **kw) -> Delta:
    """The row of a cell that is not ok in both runs."""
    sa, sb = (ra.status if ra else None), (rb.status if rb else None)
    if sa == "ok":
        status, note = REGRESSION, (f"{sb}: {rb.reason}" if rb else "not in AFTER")
    elif sa is None:
        status, note = "new", (f"{sb}: {rb.reason}" if sb != "ok" else "")
    elif sb == "ok":
        status, note = "fixed", f"was {sa}: {ra.reason}"
    else:
        status, note = ("still-failing", f"{sb}: {rb.reason}") if rb else ("dropped", f"was {sa}, not in AFTER")
    return Delta(key, STATUS_METRIC, sa, sb, None, None, status, None, note=note, **kw)


def compare(a: list[Record], b: list[Record], thresholds: dict[str, float]) -> list[Delta]:
    old = {cell_key(r, without=("profile",)): r for r in primary(a)}
    new = {cell_key(r, without=("profile",)): r for r in primary(b)}
    if not set(old) & set(new):
        raise CompareError(f"the runs have no cell in common (BEFORE: {len(old)} cell(s) of {_models(old)}; "
                           f"AFTER: {len(new)} cell(s) of {_models(new)}); cells match on {', '.join(MATCH_AXES)}")
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        ra, rb = old.get(key), new.get(key)
        flags, diffs = _differences(ra, rb) if ra and rb else ((), ())
        kw = dict(profiles=(ra.profile if ra else None, rb.profile if rb else None), flags=flags, differences=diffs)
        if ra and rb and ra.status == rb.status == "ok":
            out += [_metric_delta(key, m, allowed, ra, rb, **kw) for m, allowed in thresholds.items()]
        else:
            out.append(_cell_delta(key, ra, rb, **kw))
    return out


def _models(cells: dict) -> str:
    names = sorted({k[0] for k in cells})
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") if names else "nothing"


def regressions(deltas: list[Delta]) -> list[Delta]:
    return [d for d in deltas if d.status == REGRESSION]


def _flag_of(difference: str) -> str:
    name = difference.split(":")[0]
    return name if name in ("profile", "commit") else "settings" if name in SETTINGS else "versions"


def summary(deltas: list[Delta]) -> list[str]:
    """The lines under the table: one per kind of flagged difference, then the count of regressions."""
    lines = []
    for flag, what in (("profile", "hardware profile"), ("settings", "run settings"), ("commit", "harness commit"),
                       ("versions", "library versions")):
        cells = {d.cell for d in deltas if flag in d.flags}
        if not cells:
            continue
        found = {x for d in deltas for x in d.differences if _flag_of(x) == flag}
        detail = sorted({x.split(":")[0] for x in found} if flag == "settings" else
                        {x.split(": ", 1)[1] if flag != "versions" else x for x in found})
        line = f"{len(cells)} cell(s) differ in {what} ({'; '.join(detail)})"
        flagged = f"their rows are flagged '{flag}'."
        lines.append(f"WARNING: {line}: their changes measure the hardware, not the code; {flagged}"
                     if flag == "profile" else f"note: {line}; {flagged}")
    lines.append(f"{len(regressions(deltas))} regression(s) in {len(deltas)} comparisons")
    return lines


def _fmt(x) -> str:
    if x is None:
        return "—"
    return x if isinstance(x, str) else f"{x:.4g}"


def _profile(d: Delta) -> str:
    a, b = d.profiles
    return md(a or b) if a == b or a is None or b is None else f"{md(a)} -> {md(b)}"


def render(deltas: list[Delta]) -> str:
    """A Markdown table (plain text in a terminal), one row per cell and metric."""
    head = [a.replace("_size", "").replace("_tokens", "") for a in MATCH_AXES]
    cols = head + ["profile", "metric", "before", "after", "change", "noise", "threshold", "status", "flags"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for d in deltas:
        pct = "—" if d.change is None else f"{d.change:+.1%}"
        noise = "—" if d.noise is None else f"±{d.noise:.1%}"
        thr = "—" if d.threshold is None else f"{d.threshold:.0%}"
        status = f"**{d.status}**" + (f" ({md(d.note)})" if d.note else "")
        lines.append("| " + " | ".join(md(x) for x in d.cell) + f" | {_profile(d)} | {d.metric} | {md(_fmt(d.a))} | "
                     f"{md(_fmt(d.b))} | {pct} | {noise} | {thr} | {status} | {' '.join(d.flags) or '—'} |")
    return "\n".join(lines)


def to_json(deltas: list[Delta]) -> str:
    """A JSON list, one object per row: the cell's axes, metric, before, after, change, threshold, status."""
    rows = []
    for d in deltas:
        row = dict(zip(MATCH_AXES, d.cell))
        row.update(profile_before=d.profiles[0], profile_after=d.profiles[1], metric=d.metric, before=d.a,
                   after=d.b, change=d.change, noise=d.noise, threshold=d.threshold, status=d.status,
                   flags=list(d.flags), differences=list(d.differences), note=d.note)
        rows.append(row)
    return json.dumps(rows, indent=2)


def to_junit(deltas: list[Delta]) -> str:
    """JUnit XML: one testcase per cell and metric; a regression is a failure, a row with nothing to
    compare (missing figure, new or dropped cell) is skipped. Flags ride along as properties."""
    fails = regressions(deltas)
    skipped = [d for d in deltas if d.status in _SKIPPED]
    suites = ET.Element("testsuites", name="harness compare", tests=str(len(deltas)), failures=str(len(fails)))
    suite = ET.SubElement(suites, "testsuite", name="harness compare", tests=str(len(deltas)),
                          failures=str(len(fails)), errors="0", skipped=str(len(skipped)))
    props = ET.SubElement(suite, "properties")
    for line in summary(deltas):
        ET.SubElement(props, "property", name="summary", value=line)
    for d in deltas:
        label = " / ".join(f"{a}={v}" for a, v in zip(MATCH_AXES, d.cell))
        case = ET.SubElement(suite, "testcase", classname=f"harness.compare[{label}]", name=d.metric)
        text = json.loads(to_json([d]))[0]
        if d.status == REGRESSION:
            ET.SubElement(case, "failure", type=REGRESSION, message=_reading(d)).text = json.dumps(text, indent=2)
        elif d.status in _SKIPPED:
            ET.SubElement(case, "skipped", message=_reading(d))
        out = ET.SubElement(case, "system-out")
        out.text = _reading(d) + ("; flagged: " + "; ".join(d.differences) if d.flags else "")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _reading(d: Delta) -> str:
    if d.metric == STATUS_METRIC:
        return f"{d.status}: {_fmt(d.a)} -> {_fmt(d.b)}" + (f" ({d.note})" if d.note else "")
    if d.change is None:
        return f"{d.status}: {d.metric} {_fmt(d.a)} -> {_fmt(d.b)}"
    allowed = "" if d.threshold is None else f", allowed {d.threshold:.0%} the bad way"
    return f"{d.status}: {d.metric} {_fmt(d.a)} -> {_fmt(d.b)} ({d.change:+.1%}{allowed}, noise ±{d.noise:.1%})"


_SKIPPED = ("missing", "new", "dropped", "still-failing")
FORMATS = {"text": lambda ds: "\n".join([render(ds), "", *summary(ds)]), "json": to_json, "junit": to_junit}
