"""Kernel efficiency curves: fit from crafted records, calibration files, transfer with intervals,
`plan --calibrate-with` repeated, `harness calibrate --from-records`, `harness validate-plan` (no GPU)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli.calibrate import calibrate as calibrate_cli, validate_plan
from harness.cli.profiles import plan as plan_cli
from harness.plan.curves import CalibrationFileError, Curve, Point, fit_device, load_calibration
from harness.plan.transfer import project_decode, project_prefill
from harness.profiles import load_profiles
from harness.record_sections import BandwidthDetail
from harness.records import Record, append_jsonl

W, KV1 = 16e9, 25e6          # weight bytes, KV bytes per sequence (static cache)
COPY_H100 = 3.0e12           # bytes/s, measured copy bandwidth of the crafted run


@pytest.fixture(scope="module")
def P():
    return load_profiles()


def rec(variant="baseline", batch=1, tok_s=170.0, profile="h100-sxm-80gb", kernel="aten.linear bfloat16 (dense)",
        prefill=None, copy=COPY_H100, prompt=128, new=64, backend="pytorch", **kw):
    return Record(model="synthetic:llama-3.1-8b", variant=variant, backend=backend, profile=profile,
                  batch_size=batch, prompt_tokens=prompt, new_tokens=new, decode_tok_s=tok_s, prefill_tok_s=prefill,
                  kernel=kernel, weight_bytes=int(W), kv_cache_bytes=int(KV1 * batch),
                  bandwidth=BandwidthDetail(copy_bandwidth_bytes_per_s=copy), **kw)


def step_other(tok_s, batch):
    """other(M) by hand: (step - (W + KV) / copy) / (W / copy)."""
    return (batch / tok_s - (W + KV1 * batch) / COPY_H100) / (W / COPY_H100)


def test_fit_gives_one_curve_per_kernel_with_spread_per_m(P):
    recs = [rec(tok_s=170.0), rec(tok_s=160.0), rec(batch=8, tok_s=1250.0),
            rec(variant="int4-wo", kernel="torchao Int4 x129; aten ops: aten::mm", tok_s=333.0),
            rec(tok_s=999.0, backend="transformers-generate")]   # another backend: not fitted
    cal, skipped = fit_device(recs, P["h100-sxm-80gb"])
    assert cal.copy_fraction == pytest.approx(COPY_H100 / 3.35e12) and cal.arch == "9.0"
    base = cal.curves_for("baseline", "decode")[0]
    p1 = next(p for p in base.points if p.m == 1)
    assert p1.n == 2 and p1.value == pytest.approx((step_other(170, 1) + step_other(160, 1)) / 2)
    assert p1.low == pytest.approx(step_other(170, 1)) and p1.high == pytest.approx(step_other(160, 1))
    (int4,) = cal.curves_for("int4-wo", "decode")
    assert int4.kernel == "torchao Int4"                    # module count and aten op list stripped
    assert any("transformers-generate" in s for s in skipped)


def test_curve_follows_the_roofline_between_points_and_refuses_outside():
    c = Curve("baseline", "k", "decode", "records", [Point(1, 0.1, 0.1, 0.1, 1), Point(16, 0.5, 0.4, 0.6, 1)])
    assert c.at(4)[0] == pytest.approx(0.1)                  # 1.5 x 4 / 16 < 1.1: still the memory-bound end
    assert c.at(12)[0] == pytest.approx(1.5 * 12 / 16 - 1) and c.at(12)[2] == pytest.approx(1.6 * 12 / 16 - 1)
    assert c.at(16)[0] == pytest.approx(0.5) and c.at(1)[0] == pytest.approx(0.1)
    # bf16 at the 8B block (kernels.log, 2026-12-01): 1.1x its memory time at M = 32, 10.3x at 2048; at 128
    # the roofline gives max(1.1, 10.3 x 128 / 2048) = 1.1x (the measured prefill GEMMs: 1.2x), a power law 2.3x
    g = Curve("baseline", "k", "kernel", "microbench", [Point(32, 0.1, 0.1, 0.1, 1), Point(2048, 9.3, 9.3, 9.3, 1)])
    assert g.at(128)[0] == pytest.approx(0.1) and g.at(1024)[0] == pytest.approx(10.3 / 2 - 1)
    assert c.at(32) is None and c.at(0.5) is None
    # a kernel slower at a smaller M than at a larger one (GemLite int4 at the 8B block, 2026-12-03: its M = 2-4
    # kernel reads 9x slower than memory, the M = 8 one 3.7x): a measured M is its own figure, not the slower
    # neighbour's
    k = Curve("int4-wo[gemlite]", "k", "kernel", "microbench",
              [Point(4, 9.0, 9.0, 9.0, 4), Point(8, 3.66, 3.66, 3.66, 4), Point(16, 3.67, 3.67, 3.67, 4)])
    assert k.at(8)[0] == pytest.approx(3.66) and k.at(4)[0] == pytest.approx(9.0) and k.at(16)[0] == pytest.approx(3.67)


def test_calibration_file_round_trip_and_bad_file(P, tmp_path):
    cal, _ = fit_device([rec(), rec(batch=8, tok_s=1250.0)], P["h100-sxm-80gb"], sources=["crafted"], commit="abc")
    path = tmp_path / "h100.json"
    path.write_text(cal.to_json())
    back = load_calibration(path)
    assert back.profile == "h100-sxm-80gb" and back.provenance["harness_commit"] == "abc"
    assert [p.m for p in back.curves_for("baseline", "decode")[0].points] == [1, 8]
    (tmp_path / "bad.json").write_text('{"format": 1, "device": {}}')
    with pytest.raises(CalibrationFileError, match="bad.json"):
        load_calibration(tmp_path / "bad.json")


def test_transfer_scales_memory_term_only_and_gives_interval(P):
    cal, _ = fit_device([rec(tok_s=170.0)], P["h100-sxm-80gb"])
    cal.provenance["transfer_error"] = 0.1
    h200 = P["h200-sxm-141gb"]
    pr = project_decode([cal], h200, "baseline", 1, W, KV1)
    copy_t = h200.bandwidth_bytes_per_s * COPY_H100 / 3.35e12
    other_s = 1 / 170.0 - (W + KV1) / COPY_H100                  # same chip: the non-memory time carries over
    assert pr.tok_s == pytest.approx(1 / ((W + KV1) / copy_t + other_s))
    assert pr.low == pytest.approx(170.0 / 1.1)                  # slow end: the extra bandwidth buys nothing
    assert pr.high == pytest.approx(pr.tok_s * 1.1)
    assert "curves from h100-sxm-80gb" in pr.source
    own = project_decode([cal], P["h100-sxm-80gb"], "baseline", 1, W, KV1)
    assert own.tok_s == pytest.approx(170.0) and own.low == own.high == pytest.approx(170.0)   # no widening on S


def test_no_curve_is_said_not_invented(P):
    cal, _ = fit_device([rec()], P["h100-sxm-80gb"])
    assert "no curve for baseline on arch 10.0" in project_decode([cal], P["b200-180gb"], "baseline", 1, W, KV1).source
    miss = project_decode([cal], P["h200-sxm-141gb"], "w4a8", 1, W, KV1)
    assert miss.tok_s is None and "no decode curve for w4a8" in miss.source
    out = project_decode([cal], P["h200-sxm-141gb"], "baseline", 8, W, KV1)
    assert out.tok_s is None and "M=8" in out.source and "M 1-1" in out.source
    assert project_prefill([cal], P["h200-sxm-141gb"], "baseline", 128, W, KV1).tok_s is None   # no prefill figure


def _run(tmp_path, name, records):
    d = tmp_path / name
    d.mkdir()
    for r in records:
        append_jsonl(d / "records.jsonl", r)
    return d


def test_plan_uses_every_calibrate_with(tmp_path):
    a = _run(tmp_path, "a", [rec(tok_s=170.0)])
    b = _run(tmp_path, "b", [rec(batch=8, tok_s=1250.0)])
    args = ["--model", "synthetic:llama-3.1-8b", "--context", "192", "--profiles", "h200-sxm-141gb",
            "--batch", "4", "--format", "json", "--out", str(tmp_path / "o")]
    one = CliRunner().invoke(plan_cli, args + ["--calibrate-with", str(a)])
    both = CliRunner().invoke(plan_cli, args + ["--calibrate-with", str(a), "--calibrate-with", str(b)])
    assert one.exit_code == 0 and both.exit_code == 0, both.output
    r1, r2 = json.loads(one.stdout)[0], json.loads(both.stdout)[0]
    assert r1["curve_decode_tok_s"] is None and "M=4" in r1["curve_from"]          # batch 4 outside M 1-1
    assert r2["curve_decode_low"] < r2["curve_decode_tok_s"] < r2["curve_decode_high"]   # M 1..8 from both folders


def test_calibrate_from_records_writes_file_and_plan_reads_it(tmp_path):
    run = _run(tmp_path, "run", [rec(tok_s=170.0), rec(batch=8, tok_s=1250.0, prefill=34000.0)])
    out = tmp_path / "cal.json"
    res = CliRunner().invoke(calibrate_cli, ["--from-records", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    cal = load_calibration(out)
    assert cal.profile == "h100-sxm-80gb" and cal.curves_for("baseline", "prefill")
    assert str(run) in cal.provenance["sources"] and "transfer_error" in cal.provenance
    res = CliRunner().invoke(plan_cli, ["--model", "synthetic:llama-3.1-8b", "--context", "192", "--batch", "2",
                                        "--profiles", "h200-sxm-141gb", "--calibrate-with", str(out),
                                        "--out", str(tmp_path / "o")])
    assert res.exit_code == 0 and "curves from h100-sxm-80gb" in res.stdout
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    res = CliRunner().invoke(plan_cli, ["--model", "synthetic:llama-3.1-8b", "--calibrate-with", str(bad),
                                        "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "x.json: format None" in res.output


def test_validate_plan_excludes_the_cells_own_device(tmp_path):
    h100 = _run(tmp_path, "h100", [rec(tok_s=170.0), rec(batch=8, tok_s=1250.0)])
    h200 = _run(tmp_path, "h200", [rec(profile="h200-sxm-141gb", tok_s=210.0, copy=4.2e12),
                                   rec(profile="h200-sxm-141gb", variant="w4a8", tok_s=230.0, copy=4.2e12)])
    res = CliRunner().invoke(validate_plan, ["--measured", str(h200), "--measured", str(h100),
                                             "--calibrate-with", str(h100), "--calibrate-with", str(h200)])
    assert res.exit_code == 0, res.output
    lines = {(ln.split("|")[1].strip(), ln.split("|")[3].strip(), ln.split("|")[4].strip()): ln
             for ln in res.stdout.splitlines() if ln.startswith("| h")}
    assert "curves from h100-sxm-80gb" in lines[("h200-sxm-141gb", "baseline", "1")]
    assert "curves from h200-sxm-141gb" in lines[("h100-sxm-80gb", "baseline", "1")]   # never its own
    assert "no decode curve for w4a8" in lines[("h200-sxm-141gb", "w4a8", "1")]
    assert "measured median inside the interval" in res.stdout


def test_validation_shows_but_does_not_count_a_cell_that_fell_back(tmp_path):
    """The projections are of the compiled CUDA graph: a cell measured on the uncompiled graph (a compile
    that failed) is listed with its path, out of the counts."""
    h100 = _run(tmp_path, "h100", [rec(tok_s=170.0), rec(batch=8, tok_s=1250.0)])
    h200 = _run(tmp_path, "h200", [rec(profile="h200-sxm-141gb", tok_s=210.0, copy=4.2e12, device="cuda",
                                       decode_path="compiled+cuda-graph"),
                                   rec(profile="h200-sxm-141gb", batch=8, tok_s=900.0, copy=4.2e12, device="cuda",
                                       decode_path="cuda-graph")])
    res = CliRunner().invoke(validate_plan, ["--measured", str(h200), "--calibrate-with", str(h100)])
    assert res.exit_code == 0, res.output
    assert "cells: 1; projected: 1; no curve: 0; not counted: 1 measured on a fallback path" in res.stdout
    (row,) = [ln for ln in res.stdout.splitlines() if ln.startswith("| h200") and "| 8 |" in ln]
    assert "not counted: cuda-graph" in row


def kernel_rec(variant, m, s_per_call, layer_bytes=117e6):
    """A `harness import-microbench` record: one linear call of M rows."""
    return Record(model="llama-3.1-8b:up_proj", variant=variant, backend="microbench", profile="h100-sxm-80gb",
                  batch_size=m, prompt_tokens=0, new_tokens=0, decode_tok_s=m / s_per_call,
                  weight_bytes=int(layer_bytes), kernel=f"{variant} kernel")


def test_kernel_curve_plus_baseline_non_gemm_gives_a_decode_curve(P):
    lb = 117e6
    recs = [rec(tok_s=170.0), rec(batch=8, tok_s=1250.0),
            kernel_rec("baseline", 1, 1.1 * lb / COPY_H100), kernel_rec("baseline", 8, 1.2 * lb / COPY_H100),
            kernel_rec("int4-wo", 1, 1.8 * lb / 4 / COPY_H100, lb / 4), kernel_rec("int4-wo", 8, 6.0 * lb / 4 / COPY_H100, lb / 4)]
    cal, _ = fit_device(recs, P["h100-sxm-80gb"])
    (k,) = [c for c in cal.curves if c.phase == "kernel" and c.variant == "int4-wo"]
    assert k.source == "microbench" and k.at(1)[0] == pytest.approx(0.8)
    (d,) = cal.curves_for("int4-wo", "decode")             # no int4 end-to-end record: derived
    non_gemm_8 = step_other(1250.0, 8) - 0.2
    assert d.at(8)[0] == pytest.approx(5.0 + non_gemm_8) and "microbench" in d.source
    pr = project_decode([cal], P["h200-sxm-141gb"], "int4-wo", 8, W / 4, KV1 * 8)
    assert pr.ok and "microbench" in pr.source


@pytest.mark.slow
def test_calibrate_measures_on_cpu(tmp_path):
    """`harness calibrate` on this machine: copy bandwidth + a one-cell sweep of the tiny model on CPU."""
    out = tmp_path / "cpu.json"
    res = CliRunner().invoke(calibrate_cli, ["--device", "cpu", "--batch", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cal = load_calibration(out)
    assert cal.profile.startswith("cpu-") and cal.copy_fraction == 1.0 and cal.datasheet_bandwidth_bytes_per_s > 0
    assert [p.m for p in cal.curves_for("baseline", "decode")[0].points] == [1]
    assert cal.provenance["copy_bandwidth_measured_by"].startswith("harness calibrate")


def test_an_explicit_kernel_uses_its_formats_curve_only_where_that_kernel_ran_it():
    from harness.plan.curves import Curve, DeviceCalibration, Point

    pts = [Point(1, 0.5, 0.4, 0.6, 2)]
    tiny = "torchao Int4WeightOnlyConfig(group_size=128, int4_packing_format=tile_packed_to_4d) -> Int4TilePackedTo4dTensor"
    cal = DeviceCalibration("h100-sxm-80gb", "9.0", 3.35e12, 0.9, 9.9e14,
                            curves=[Curve("int4-wo", tiny, "decode", "records", pts)])
    got = cal.curves_for("int4-wo[tinygemm]", "decode")
    assert len(got) == 1 and got[0].variant == "int4-wo[tinygemm]" and got[0].kernel == tiny
    assert "the int4-wo curve, whose kernel is this one" in got[0].source and got[0].points == pts
    assert cal.curves_for("int4-wo[gemlite]", "decode") == []       # GemLite never ran int4-wo here
    assert cal.curves_for("int4-wo[tinygemm]", "prefill") == []     # no prefill curve of the format either


def test_a_prefill_curve_from_records_holds_its_prefill_path(P):
    """The CUDA engine compiles the prefill too and keeps the faster (engine.prefill): records of the two paths
    give two prefill curves; a cell that ran one path is projected only from that path's curve, and where the
    records ran only the other one, the planner says so; a plan (no cell) takes the faster path."""
    from harness.record_sections import EngineInfo
    eager = rec(prefill=14_000.0, device="cuda", engine=EngineInfo(compile_mode="default"))        # before the choice
    compiled = rec(prefill=22_000.0, device="cuda", engine=EngineInfo(compile_mode="default",
                                                                      prefill={"chosen": "compiled"}))
    cpu = rec(prefill=900.0, profile="h100-sxm-80gb", device="cpu")                                  # no such choice
    cal, _ = fit_device([eager, compiled], P["h100-sxm-80gb"])
    paths = sorted(c.prefill_path for c in cal.curves if c.phase == "prefill")
    assert paths == ["compiled", "eager"]
    h200 = P["h200-sxm-141gb"]
    a = project_prefill([cal], h200, "baseline", 128, W, KV1, prefill_path="eager")
    b = project_prefill([cal], h200, "baseline", 128, W, KV1, prefill_path="compiled")
    free = project_prefill([cal], h200, "baseline", 128, W, KV1)
    assert b.tok_s > a.tok_s and free.tok_s == pytest.approx(b.tok_s)
    assert "eager prefills" in a.source and "compiled prefills" in b.source
    only_eager, _ = fit_device([eager], P["h100-sxm-80gb"])
    miss = project_prefill([only_eager], h200, "baseline", 128, W, KV1, prefill_path="compiled")
    assert miss.tok_s is None and "no compiled-prefill curve for baseline" in miss.source
    assert "records ran eager prefills" in miss.source
    assert project_prefill([only_eager], h200, "baseline", 128, W, KV1).ok        # a plan: the path there is
    plain, _ = fit_device([cpu], P["h100-sxm-80gb"])
    assert [c.prefill_path for c in plain.curves if c.phase == "prefill"] == [""]
    assert project_prefill([plain], h200, "baseline", 128, W, KV1, prefill_path="compiled").ok
