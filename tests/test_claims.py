from harness.records import Record
from harness.report import claims
from harness.report.markdown import render_report


def _r(variant, **kw):
    base = dict(model="m", variant=variant, backend="pytorch", profile="p", batch_size=1, prompt_tokens=128, new_tokens=64)
    base.update(kw)
    return Record(**base)


def test_claims_compare_with_the_same_cells_baseline():
    recs = [_r("baseline", decode_tok_s=100.0, weight_bytes=1000, j_per_token_decode=4.0),
            _r("sparse-2:4", decode_tok_s=60.0),
            _r("int4-wo", decode_tok_s=190.0, weight_bytes=300, j_per_token_decode=1.2, quality_verdict="fail"),
            _r("baseline", batch_size=8, decode_tok_s=700.0),
            _r("sparse-2:4", batch_size=8, decode_tok_s=1500.0)]
    findings, missing = claims.check(recs)
    by = {(f.claim, f.variant, dict(zip(claims.PAIR_AXES, f.cell))["batch_size"]): f for f in findings}
    sparse1 = by[("2:4 structured sparsity doubles throughput", "sparse-2:4", 1)]
    assert sparse1.ratio == 0.6 and not sparse1.holds
    assert by[("2:4 structured sparsity doubles throughput", "sparse-2:4", 8)].holds   # 1500 / 700 = 2.14x
    mem = by[("INT4 weights cut memory by 75%", "int4-wo", 1)]
    assert abs(mem.ratio - 0.3) < 1e-9 and not mem.holds and mem.quality == "fail"
    energy = by[("quantization cuts energy per token by up to 65%", "int4-wo", 1)]
    assert abs(energy.ratio - 0.3) < 1e-9 and energy.holds
    assert missing == ["FP8 gives much faster inference"]


def test_no_baseline_means_not_measured_and_the_report_says_so():
    recs = [_r("sparse-2:4", decode_tok_s=60.0), _r("baseline", status="failed", reason="x")]
    findings, missing = claims.check(recs)
    assert findings == [] and len(missing) == len(claims.CLAIMS)
    md = render_report(recs, {"run_id": "r"})
    assert "Claims checked" in md and "Not measured in this run" in md


def test_peak_vram_is_preferred_over_weight_bytes_for_memory():
    recs = [_r("baseline", weight_bytes=1000, peak_vram_bytes=1200), _r("int4-wo", weight_bytes=250, peak_vram_bytes=600)]
    (f,) = [f for f in claims.check(recs)[0] if f.claim.startswith("INT4")]
    assert f.ratio == 0.5


def test_ort_claims_use_the_ort_baseline_and_a_line_compares_with_torch_int4():
    recs = [_r("baseline", decode_tok_s=100.0, weight_bytes=1000),
            _r("int4-wo", decode_tok_s=150.0, weight_bytes=300, kl_mean=0.05, quality_verdict="pass"),
            _r("baseline", backend="ort", decode_tok_s=80.0, weight_bytes=2000, kl_mean=1e-6, quality_verdict="pass"),
            _r("int4-wo", backend="ort", decode_tok_s=240.0, weight_bytes=400, kl_mean=0.2, quality_verdict="fail"),
            _r("int8-dq", backend="ort", decode_tok_s=120.0)]          # no torch int8-dq row: no cross line
    findings, _ = claims.check(recs)
    mem = {(f.variant, dict(zip(claims.PAIR_AXES, f.cell))["backend"]): f for f in findings
           if f.claim.startswith("INT4")}
    assert abs(mem[("int4-wo", "pytorch")].ratio - 0.3) < 1e-9           # 300 / torch's 1000
    assert abs(mem[("int4-wo", "ort")].ratio - 0.2) < 1e-9               # 400 / ORT's 2000, not torch's
    assert mem[("int4-wo", "ort")].quality == "fail"
    cross = {dict(zip(claims.BACKEND_AXES, x.cell))["variant"]: x for x in claims.across_backends(recs)}
    assert set(cross) == {"baseline", "int4-wo"}
    assert cross["int4-wo"].backend == "ort" and cross["int4-wo"].decode_ratio == 1.6     # 240 / 150
    text = render_report(recs, {"run_id": "r"})
    assert "| int4-wo | ort vs pytorch | m / 1 / 128 | 240.0 vs 150.0 | 1.60x | 0.2 (fail) vs 0.05 (pass) |" in text
    assert "| m | int4-wo | ort | 240.0 |" in text and "| m | int4-wo | pytorch | 150.0 |" in text   # quality table


def test_no_torch_row_no_cross_backend_line():
    recs = [_r("baseline", backend="ort", decode_tok_s=80.0), _r("int4-wo", backend="ort", decode_tok_s=90.0),
            _r("int4-wo", decode_tok_s=150.0, status="failed", reason="x")]
    assert claims.across_backends(recs) == []
    assert "on another backend" not in render_report(recs, {"run_id": "r"})
