"""Chart content checked from data: the hardware in every title, verdict colours, Pareto points
are the non-dominated ones, ticks at the measured batches, unsupported cells drawn."""
import matplotlib.pyplot as plt
import pytest

from crafted_runs import CPU_PROV, make_records
from harness.report.charts import STATUS_COLOUR, VERDICT_COLOURS, build_charts, pareto


@pytest.fixture(scope="module")
def charts():
    out = {c.name: c for c in build_charts(make_records())}
    yield out
    for c in out.values():
        plt.close(c.fig)


def test_every_title_names_hardware_model_and_backend(charts):
    assert {"decode_tok_s", "decode_vs_batch", "memory", "energy_per_token", "quality_vs_speed",
            "quality_vs_energy", "tpot_distribution", "power_timeline"} <= set(charts)
    for c in charts.values():
        assert "h200-sxm-141gb (NVIDIA H200)" in c.info["title"], c.name
        assert "m<1>" in c.info["title"] and "backend pytorch" in c.info["title"], c.name
        assert c.info["title"] in c.fig._suptitle.get_text() if c.fig._suptitle else \
            c.info["title"] == c.fig.axes[0].get_title()


def test_decode_bars_are_verdict_coloured_and_unsupported_cells_are_drawn(charts):
    bars = charts["decode_tok_s"].info["bars"]
    by = {(b["variant"], b["batch"]): b for b in bars}
    assert by[("int4-wo", 1)]["colour"] == VERDICT_COLOURS["fail"]
    assert by[("int8-wo", 8)]["colour"] == VERDICT_COLOURS["pass"]
    assert by[("sparse-2:4", 1)] == {"variant": "sparse-2:4", "backend": "pytorch", "batch": 1,
                                     "status": "unsupported", "value": None, "colour": STATUS_COLOUR}
    assert len(charts["decode_tok_s"].fig.axes) == 3          # one panel per batch: 1, 8, 32
    assert by[("int8-wo", 32)]["value"] == pytest.approx(150 * 32)


def test_batch_ticks_are_plain_numbers(charts):
    c = charts["decode_vs_batch"]
    c.fig.canvas.draw()
    assert [t.get_text() for t in c.fig.axes[0].get_xticklabels()] == ["1", "8", "32"]


def test_pareto_frontier_is_the_non_dominated_points(charts):
    pts = {(p["variant"], p["batch"]): p for p in charts["quality_vs_speed"].info["points"]}
    # at each batch int8-wo (faster, lower KL) dominates fp8-wo; int4-wo is fastest, int8-wo lowest KL
    front = {k for k, p in pts.items() if p["frontier"]}
    for k, p in pts.items():   # a frontier per batch: points are compared with those of their own batch
        dominated = any(q["x"] >= p["x"] and q["y"] <= p["y"] and (q["x"], q["y"]) != (p["x"], p["y"])
                        for q in pts.values() if q["batch"] == p["batch"])
        assert p["frontier"] == (not dominated), k
    assert front == {(v, b) for v in ("int8-wo", "int4-wo") for b in (1, 8, 32)}
    assert pts[("int4-wo", 32)]["colour"] == VERDICT_COLOURS["fail"]
    energy = {(p["variant"], p["batch"]): p["frontier"] for p in charts["quality_vs_energy"].info["points"]}
    assert energy[("int4-wo", 1)] and energy[("int8-wo", 1)] and not energy[("fp8-wo", 1)]


def test_pareto_function_directions():
    pts = [(1.0, 1.0), (2.0, 2.0), (2.0, 0.5), (0.5, 0.5)]
    assert pareto(pts, x_higher=True, y_higher=False) == [2]
    assert pareto(pts, x_higher=False, y_higher=False) == [3]
    assert sorted(pareto([(1.0, 1.0), (1.0, 1.0)], True, True)) == [0, 1]   # ties dominate neither


def test_memory_vram_and_rss_on_separate_axes_and_energy_source_named(charts):
    m = charts["memory"]
    assert m.info["axes"] == ["peak VRAM (GB)", "host memory (GB)"]
    assert [a.get_ylabel() for a in m.fig.axes] == m.info["axes"]
    s = next(s for s in m.info["vram_stacks"] if s["variant"] == "baseline")
    assert s["weights_gb"] + s["kv_gb"] + s["other_gb"] == pytest.approx(0.6)
    assert "nvml_counter" in charts["energy_per_token"].info["title"]
    assert charts["power_timeline"].fig.axes[0].get_ylabel() == "board power (W)"


def test_cpu_run_has_no_vram_stack_and_titles_name_the_cpu():
    charts = {c.name: c for c in build_charts(make_records(profile="cpu-generic", prov=CPU_PROV))}
    try:
        assert charts["memory"].info["vram_stacks"] == []
        assert "cpu-generic (AMD EPYC <test & co>)" in charts["decode_tok_s"].info["title"]
        assert "power_timeline" not in charts and "estimate" in charts["energy_per_token"].info["title"]
    finally:
        for c in charts.values():
            plt.close(c.fig)


def test_labels_of_crowded_points_are_moved_apart():
    from harness.report.figures import label_offsets

    # two points 1% apart on both axes, one far away: the second label goes under its point
    offs = label_offsets([(10.0, 0.0), (10.1, 0.01), (50.0, 3.0)])
    assert offs[0] == (4, 4) and offs[2] == (4, 4) and offs[1] != offs[0]
    third = label_offsets([(10.0, 0.0), (10.1, 0.01), (10.2, 0.0), (50.0, 3.0)])[:3]
    assert len(set(third)) == 3                  # each crowded label on its own line
