"""History add/show/compare on crafted runs: regression, improvement, noise, a new cell, a vanished cell,
and entries of another machine that must not be compared with."""
import pytest
from click.testing import CliRunner

from crafted_runs import CPU_PROV, GPU_PROV, make_records, write_run
from harness import history as H
from harness.cli import main
from harness.report import trends


def _run(tmp_path, name, when, scale=1.0, stdev=1.0, prov=GPU_PROV, profile="h200-sxm-141gb", drop=(), add=()):
    recs = make_records(run_id=name, prov=dict(prov, utc_time=when), profile=profile, batches=(1,), scale=scale,
                        unsupported=(), stdev=stdev)
    recs = [r for r in recs if r.variant not in drop]
    if add:
        extra = make_records(run_id=name, prov=dict(prov, utc_time=when), profile=profile, batches=(8,),
                             unsupported=(), stdev=stdev)
        recs += [r for r in extra if r.variant in add]
    return write_run(tmp_path / name, recs, profile)


def _add(store, run, *extra):
    return CliRunner().invoke(main, ["history", "add", str(run), "--store", str(store), "--compare", *extra])


def test_first_entry_then_noise_then_regression(tmp_path):
    store = tmp_path / "hist"
    r = _add(store, _run(tmp_path, "n1", "2026-01-01T00:00:00"))
    assert r.exit_code == 0 and "nothing to compare with" in r.output
    # -8% but the spreads (1 and 10 tok/s) allow 2 x 11 / 220 = 10% even on the fastest cell: noise, exit 0
    r = _add(store, _run(tmp_path, "n2", "2026-01-02T00:00:00", scale=0.92, stdev=10.0))
    assert r.exit_code == 0, r.output
    assert "within-noise" in r.output and "compared with n1" in r.output
    # -20% with a tight spread: a regression against n2 (the previous entry), exit 1
    r = _add(store, _run(tmp_path, "n3", "2026-01-03T00:00:00", scale=0.92 * 0.8, stdev=0.1))
    assert r.exit_code == 1, r.output
    assert "compared with n2" in r.output and "**regression**" in r.output
    df = H.load(store)
    assert [e[1] for e in H.entries(df)] == ["n1", "n2", "n3"]
    chart = trends.trend_chart(df, "decode_tok_s")
    lines = {l["cell"]["variant"]: l for l in chart.info["lines"]}
    assert lines["int8-wo"]["regressions"] == ["n3"] and lines["int8-wo"]["runs"] == ["n1", "n2", "n3"]
    assert "h200-sxm-141gb (NVIDIA H200)" in chart.info["title"]
    trends.plt.close(chart.fig)


def test_improvement_new_cell_and_vanished_cell(tmp_path):
    store = tmp_path / "hist"
    assert _add(store, _run(tmp_path, "a", "2026-01-01T00:00:00")).exit_code == 0
    r = _add(store, _run(tmp_path, "b", "2026-01-02T00:00:00", scale=1.3, add=("int8-wo",)))
    assert r.exit_code == 0, r.output
    assert "improvement" in r.output and "**new**" in r.output
    r = _add(store, _run(tmp_path, "c", "2026-01-03T00:00:00", scale=1.3, drop=("fp8-wo",)))
    assert r.exit_code == 1, r.output                # ok in b, missing in c: a vanished cell regresses
    assert "not in AFTER" in r.output


def test_other_machine_is_not_the_previous_entry_and_no_common_cell_exits_2(tmp_path):
    store = tmp_path / "hist"
    assert _add(store, _run(tmp_path, "g1", "2026-01-01T00:00:00")).exit_code == 0
    r = _add(store, _run(tmp_path, "c1", "2026-01-02T00:00:00", scale=0.01, prov=CPU_PROV, profile="cpu-generic"))
    assert r.exit_code == 0 and "nothing to compare with" in r.output     # the GPU run is not its baseline
    other = make_records(run_id="g2", model="other", prov=dict(GPU_PROV, utc_time="2026-01-03T00:00:00"),
                         batches=(1,), unsupported=())
    r = _add(store, write_run(tmp_path / "g2", other))
    assert r.exit_code == 2 and "no cell in common" in r.output


def test_show_draws_the_chart_and_filters_cells(tmp_path):
    store = tmp_path / "hist"
    for i, scale in enumerate((1.0, 1.0, 0.5)):
        _add(store, _run(tmp_path, f"s{i}", f"2026-01-0{i + 1}T00:00:00", scale=scale, stdev=0.1))
    r = CliRunner().invoke(main, ["history", "show", "--store", str(store), "--metric", "decode_tok_s",
                                  "--cell", "variant=int8-wo,batch=1"])
    assert r.exit_code == 0, r.output
    assert (store / "history_decode_tok_s.png").read_bytes()[:4] == b"\x89PNG"
    assert "regression of decode_tok_s in int8-wo [pytorch] batch 1 on h200-sxm-141gb: run(s) s2" in r.output
    assert "baseline" not in r.output
    for bad in (["--metric", "nope"], ["--cell", "colour=red"], ["--cell", "variant=none"]):
        r = CliRunner().invoke(main, ["history", "show", "--store", str(store), *bad])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output


def test_a_run_is_added_once_and_an_empty_store_is_an_error(tmp_path):
    store = tmp_path / "hist"
    run = _run(tmp_path, "x", "2026-01-01T00:00:00")
    assert _add(store, run).exit_code == 0
    r = _add(store, run)
    assert r.exit_code == 2 and "already in" in r.output
    with pytest.raises(H.HistoryError, match="no history here"):
        H.load(tmp_path / "empty")
