"""Merged reports with the planner's projections for profiles not measured (issue 16): `harness
report RUN... --out DIR --project PROFILE,...`; the figures are those `harness plan` gives."""
import json
import re

import matplotlib.pyplot as plt
import pytest
from click.testing import CliRunner

from crafted_runs import CPU_PROV, make_records, write_run
from harness.cli import main
from harness.report.charts import build_charts
from harness.report.figures import PROJECTED_EDGE, PROJECTED_FACE
from harness.report.projections import PROJECTED_LABEL, parse_profiles, project_unmeasured

MODEL = "synthetic:llama-3.1-8b"


def _runs(tmp_path):
    gpu = write_run(tmp_path / "gpu", make_records(run_id="gpu", model=MODEL, batches=(1, 8)))
    cpu = write_run(tmp_path / "cpu", make_records(run_id="cpu", model=MODEL, profile="cpu-generic", prov=CPU_PROV,
                                                   batches=(1,), scale=0.1), profile="cpu-generic")
    return gpu, cpu


def test_projections_are_what_harness_plan_projects(tmp_path):
    recs = make_records(model=MODEL, batches=(1, 8))
    proj, notes = project_unmeasured(recs, parse_profiles("h100-sxm-80gb,h200-sxm-141gb"))
    assert notes == ["h200-sxm-141gb: measured in these runs, not projected"]
    assert {p.profile for p in proj} == {"h100-sxm-80gb"}
    # one per measured ok cell: 4 variants x 2 batches (the unsupported sparse cell is not projected)
    assert sorted((p.variant, p.batch_size) for p in proj) == sorted(
        (v, b) for v in ("baseline", "int8-wo", "int4-wo", "fp8-wo") for b in (1, 8))
    p = next(p for p in proj if p.variant == "int8-wo" and p.batch_size == 8)
    r = CliRunner().invoke(main, ["plan", "--model", MODEL, "--variants", "int8-wo", "--context", "24", "--batch", "8",
                                  "--profiles", "h100-sxm-80gb", "--format", "json", "--out", str(tmp_path / "plan")])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)
    row = row[0] if isinstance(row, list) else row["rows"][0]
    assert p.decode_tok_s == pytest.approx(row["decode_tok_s"]) and p.bound == row["bound"]
    assert p.weight_bytes == row["weight_bytes"] and p.basis == "projected"


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown profile\(s\) 'nope' for --project; known: .*h100-sxm-80gb"):
        parse_profiles("h100-sxm-80gb,nope")
    gpu, cpu = _runs(tmp_path)
    r = CliRunner().invoke(main, ["report", str(gpu), str(cpu), "--out", str(tmp_path / "m"), "--project", "nope"])
    assert r.exit_code == 2 and "unknown profile(s) 'nope' for --project" in r.output
    assert not (tmp_path / "m").exists()          # refused before anything is written
    r = CliRunner().invoke(main, ["report", str(gpu), "--project", "h100-sxm-80gb"])
    assert r.exit_code == 2 and "several RUN_DIRs" in r.output


def test_merged_report_draws_projections_apart_from_the_measured_rows(tmp_path):
    gpu, cpu = _runs(tmp_path)
    out = tmp_path / "both"
    r = CliRunner().invoke(main, ["report", str(gpu), str(cpu), "--out", str(out), "--project", "h100-sxm-80gb"])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "## Projected by the planner: profiles not measured" in md
    proj_rows = [ln for ln in md.split("## Projected")[1].splitlines() if ln.startswith("| h100-sxm-80gb")]
    assert len(proj_rows) == 8                     # the distinct measured cells: 4 variants x batches 1 and 8
    assert "h100-sxm-80gb" not in md.split("## Projected")[0]   # not among the measured rows
    html = (out / "report.html").read_text()
    table = html.split('<table id="projected">')[1].split("</table>")[0]
    assert table.count('<tr class="projected">') == 8 and PROJECTED_LABEL in table
    assert "background: repeating-linear-gradient" in html          # the rows are hatched
    assert "Cross-hatched lilac bars, labelled [planner]" in html   # the decode chart's caption says so


def test_decode_chart_has_hatched_planner_bars_and_a_legend_entry():
    recs = make_records(model=MODEL, batches=(1, 8)) + make_records(model=MODEL, profile="cpu-generic", prov=CPU_PROV,
                                                                    batches=(1,), scale=0.01, run_id="cpu")
    proj, _ = project_unmeasured(recs, parse_profiles("h100-sxm-80gb"))
    charts = {c.name: c for c in build_charts(recs, proj)}
    try:
        c = charts["decode_tok_s"]
        projected = [b for b in c.info["bars"] if b.get("projected")]
        measured = [b for b in c.info["bars"] if not b.get("projected")]
        assert len(projected) == len(proj) and {b["backend"] for b in projected} == {"planner"}
        assert {b["colour"] for b in projected} == {PROJECTED_FACE}
        assert all(b["colour"] != PROJECTED_FACE for b in measured)
        ax1 = c.fig.axes[0]
        hatched = [p for p in ax1.patches if p.get_hatch() == "xx"]
        assert len(hatched) == sum(p.batch_size == 1 for p in proj)
        assert all(tuple(round(x, 3) for x in p.get_edgecolor()[:3]) ==
                   tuple(round(int(PROJECTED_EDGE[i:i + 2], 16) / 255, 3) for i in (1, 3, 5)) for p in hatched)
        legend = [t.get_text() for t in c.fig.axes[-1].get_legend().get_texts()]
        assert "projected by the planner" in legend
        labels = [t.get_text() for t in ax1.get_xticklabels()]
        assert any("[planner]" in lb and "h100-sxm-80gb" in lb for lb in labels)
        assert ax1.get_yscale() == "log"              # CPU and projected GPU bars span > 100x at batch 1
        assert "(measured or projected)" in ax1.get_ylabel()
    finally:
        for ch in charts.values():
            plt.close(ch.fig)


def test_without_project_the_merged_report_is_as_before(tmp_path):
    gpu, cpu = _runs(tmp_path)
    r = CliRunner().invoke(main, ["report", str(gpu), str(cpu), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "Projected" not in (tmp_path / "m" / "report.md").read_text()
    html = (tmp_path / "m" / "report.html").read_text()
    assert 'id="projected"' not in html and not re.search(r"\[planner\]", html)


def test_a_model_without_a_shape_is_named_not_projected(tmp_path):
    gpu = write_run(tmp_path / "g", make_records(run_id="g", batches=(1,)))        # model "m<1>": no shape
    cpu = write_run(tmp_path / "c", make_records(run_id="c", profile="cpu-generic", prov=CPU_PROV, batches=(1,)),
                    profile="cpu-generic")
    r = CliRunner().invoke(main, ["report", str(gpu), str(cpu), "--out", str(tmp_path / "m"),
                                  "--project", "h100-sxm-80gb"])
    assert r.exit_code == 0, r.output
    assert "--project: m<1>: no shape for the planner" in r.stderr
    assert "Projected" not in (tmp_path / "m" / "report.md").read_text()
