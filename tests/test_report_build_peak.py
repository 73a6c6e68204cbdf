"""The layer-by-layer build's peak (engine.build_peak_bytes) beside the timed window's peak VRAM, in
report.md's memory table and report.html's cell table; a cell without one shows the em dash, not 0."""
import dataclasses

from crafted_runs import make_records
from harness.records import EngineInfo
from harness.report.fmt import NA
from harness.report.html import render_html
from harness.report.markdown import render_report


def _two_cells():
    """int4-wo at batch 1 built layer by layer (44.46 GB, as on the lab H200); baseline without a build peak.
    Both with power measured: the memory table has the cells with GPU meters."""
    recs = [dataclasses.replace(r, power_mean_w=400.0) for r in make_records(batches=(1,), unsupported=())
            if r.variant in ("baseline", "int4-wo")]
    return [dataclasses.replace(r, engine=EngineInfo(build_peak_bytes=44_462_609_920)) if r.variant == "int4-wo"
            else r for r in recs]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_the_memory_table_shows_the_build_peak_and_a_dash_without_one():
    lines = render_report(_two_cells(), {"run_id": "x"}).splitlines()
    at = next(i for i, ln in enumerate(lines) if "build peak GB" in ln)
    header = _cells(lines[at])
    col = header.index("build peak GB")
    assert header[col - 2] == "peak VRAM GB"
    rows = {c[1]: c for c in map(_cells, lines[at + 2:at + 4])}
    assert all(len(c) == len(header) for c in rows.values())
    assert rows["int4-wo"][col] == "44.46" and rows["baseline"][col] == NA
    assert any("Build peak: CUDA allocator peak over the layer-by-layer build (torch.cuda.max_memory_allocated)"
               in ln for ln in lines)


def test_the_html_cell_table_shows_the_build_peak_and_a_dash_without_one():
    html = render_html(_two_cells())
    cells = html[html.index('id="cells"'):]
    assert "<th>peak VRAM MB</th><th>build peak MB</th>" in cells
    assert '<td class="num">600.0</td><td class="num">44,462.6</td>' in cells            # int4-wo
    assert f'<td class="num">600.0</td><td class="num">{NA}</td>' in cells               # baseline
    assert "torch.cuda.max_memory_allocated" in cells
