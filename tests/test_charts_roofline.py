"""The roofline chart (issue 16) from crafted records whose figures are known, and charts written as
PNG and SVG both."""
import matplotlib.pyplot as plt
import numpy as np
import pytest

from crafted_runs import make_records
from harness.records import BandwidthDetail, Record
from harness.report.charts import build_charts, write_charts
from harness.report.roofline import roofline

W, CTX, KV = int(1e9), 20.0, 1e5      # weight bytes, decode context tokens, KV bytes per token


def _cell(variant="baseline", batch=8, profile="h200-sxm-141gb", **kw):
    per_step = W + batch * CTX * KV
    fields = dict(model="m", variant=variant, backend="pytorch", profile=profile, batch_size=batch, prompt_tokens=16,
                  new_tokens=8, decode_tok_s=4000.0, ttft_s=0.01, weight_bytes=W,
                  achieved_bandwidth_bytes_per_s=per_step * 4000.0 / batch, mfu=0.5,
                  provenance={"gpus": ["NVIDIA H200"]},
                  bandwidth=BandwidthDetail(copy_bandwidth_bytes_per_s=4.2e12, share_of_profile_peak=0.25,
                                            decode_bytes_per_step=per_step, decode_context_tokens=CTX,
                                            prefill_flop_per_s=1e14, mfu_format="bf16"))
    fields.update(kw)
    return Record(**fields)


@pytest.fixture()
def chart():
    cpu = Record(model="m", variant="int8-wo", backend="pytorch", profile="cpu-x", batch_size=1, prompt_tokens=16,
                 new_tokens=8, decode_tok_s=12.0, ttft_s=0.2)
    c = roofline([_cell(), _cell("w4a8", batch=1), _cell(profile="mystery-gpu"), cpu])
    yield c
    plt.close(c.fig)


def test_points_are_the_records_figures(chart):
    pts = {(p["profile"], p["variant"], p["batch"], p["phase"]): p for p in chart.info["points"]}
    per_token = 1e14 * 0.01 / (8 * 16)                      # prefill FLOPs per prompt token
    d = pts[("h200-sxm-141gb", "baseline", 8, "decode")]
    assert d["intensity"] == pytest.approx(8 * per_token / (W + 8 * CTX * KV))
    assert d["flop_per_s"] == pytest.approx(4000.0 * per_token)
    # FLOP/s = intensity x the achieved bandwidth on the record
    rec_bw = (W + 8 * CTX * KV) * 4000.0 / 8
    assert d["flop_per_s"] == pytest.approx(d["intensity"] * rec_bw)
    p = pts[("h200-sxm-141gb", "baseline", 8, "prefill")]
    assert p["flop_per_s"] == 1e14 and p["intensity"] == pytest.approx(1e14 * 0.01 / (W + 8 * 16 * KV))
    assert len(chart.fig.axes) == 2                         # one panel per profile that has points


def test_ceilings_from_the_profile_file_the_records_ratios_and_the_measured_copy(chart):
    roofs = chart.info["roofs"]
    h200 = {(r["kind"], r.get("format")): r["value"] for r in roofs["h200-sxm-141gb"]}
    assert h200[("bandwidth", None)] == 4.8e12 and h200[("peak", "bf16")] == pytest.approx(989.5e12)   # the YAML
    assert h200[("copy", None)] == 4.2e12                                                               # measured
    mystery = {(r["kind"], r.get("format")): r["value"] for r in roofs["mystery-gpu"]}
    assert mystery[("peak", "bf16")] == pytest.approx(1e14 / 0.5)          # prefill FLOP/s / mfu
    bw = (W + 8 * CTX * KV) * 4000.0 / 8
    assert mystery[("bandwidth", None)] == pytest.approx(bw / 0.25)        # achieved / share of the peak
    ax = chart.fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlabel() == "arithmetic intensity (FLOP/byte)"
    # the profile's bandwidth roof: y = x x 4.8 TB/s, capped at the peak
    roof = next(ln for ln in ax.get_lines() if ln.get_label().startswith("4.80 TB/s (profile)"))
    x, y = roof.get_data()
    assert np.allclose(y, np.minimum(x * 4.8e12, 989.5e12))


def test_cells_lacking_the_figures_are_skipped_and_named(chart):
    assert chart.info["skipped"] == ["int8-wo [pytorch] b1 p16 on cpu-x: no prefill FLOP/s (no model shape, "
                                     "or not measured on this device)"]
    assert "Skipped (figures missing): int8-wo [pytorch] b1 p16 on cpu-x" in chart.caption
    assert all(p["profile"] != "cpu-x" for p in chart.info["points"])


def test_no_roofline_when_no_cell_has_the_figures():
    assert roofline(make_records()) is None


def test_charts_are_written_as_png_and_svg_and_the_roofline_is_in_the_html(tmp_path):
    paths = write_charts(make_records() + [_cell(), _cell("w4a8", batch=32)], tmp_path)
    names = {p.name for p in paths}
    for stem in ("decode_tok_s", "roofline", "quality_vs_speed"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    svg = (tmp_path / "charts" / "roofline.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "arithmetic intensity" in svg   # text kept as text
    assert (tmp_path / "charts" / "roofline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "report.html").read_text()
    assert 'id="chart-roofline"' in html and "Roofline" in html
    # a chart redrawn from the same records is the same file (no date in the SVG)
    before = svg
    write_charts(make_records() + [_cell(), _cell("w4a8", batch=32)], tmp_path)
    assert (tmp_path / "charts" / "roofline.svg").read_text() == before
    for c in build_charts([]):
        plt.close(c.fig)
