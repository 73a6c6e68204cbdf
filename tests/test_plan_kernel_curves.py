"""Kernel-curve calibrations: bench/kernels_gpu.py log/JSON -> records and block curves, the non-GEMM
step cost from step profiles, projection through them, and the CLI (`calibrate --from-kernels`,
`validate-plan --same-device`). No GPU: the inputs are crafted here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.calibrate import calibrate as calibrate_cli, validate_plan
from harness.models.spec import shape_of
from harness.plan import step_cost
from harness.plan.curves import load_calibration
from harness.plan.kernel_log import block_curves, calibration_from_kernels, read_rows, records_from_rows, rows_from_log
from harness.plan.roofline import gemm_bytes, kv_cache_bytes, weight_bytes
from harness.plan.transfer import project_decode
from harness.profiles import load_profiles
from harness.variants import parse_variant

COPY = 4.0e12
SH = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
US = {"qkv": 16.0, "o": 10.0, "gate_up": 60.0, "down": 32.0}   # bf16 at M=1, microseconds per call


def line(kernel, shape, m, us, wb):
    return f"{kernel:45s} {shape:8s} M={m:5d} {us:9.1f} us {wb / us / 1e3:8.0f} GB/s {2 * m * 1e-6:7.1f} TFLOP/s"


def bf16_bytes(shape):
    n, k = SH[shape]
    return 2 * n * k


@pytest.fixture(scope="module")
def P():
    return load_profiles()


@pytest.fixture
def log(tmp_path):
    lines = ["gemlite's H100 config (configs/h100.json) on NVIDIA H200"]
    for m, slow in ((1, 1.0), (8, 1.1)):
        lines += [line("bf16 cuBLAS", s, m, US[s] * slow, bf16_bytes(s)) for s in SH]
        lines += [line("int4 tinygemm (torchao tile_packed_to_4d)", s, m, US[s] * slow, bf16_bytes(s) // 4) for s in SH]
    lines += [line("int8 GemLite A16W8", "qkv", 1, 9.0, 25e6), "fp8 GemLite A16W8 down 32 failed: RuntimeError: boom"]
    p = tmp_path / "kernels.log"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_log_rows_records_and_variants(log):
    rows, header = read_rows(log)
    assert "H100 config" in header["gemlite_configs"]
    ok = [r for r in rows if "us" in r]
    assert len(ok) == 17 and [r for r in rows if "error" in r][0]["M"] == 32
    gu = next(r for r in ok if r["kernel"] == "bf16 cuBLAS" and r["shape"] == "gate_up" and r["M"] == 1)
    assert (gu["N"], gu["K"]) == SH["gate_up"] and gu["weight_bytes"] == pytest.approx(bf16_bytes("gate_up"), rel=0.01)
    recs, skipped = records_from_rows(rows, "h200-sxm-141gb", str(log))
    assert any("int8 GemLite" in s for s in skipped)               # no registry variant runs it
    tiny = {r.variant for r in recs if r.kernel.startswith("int4 tinygemm")}
    assert tiny == {"int4-wo[tinygemm]"}            # int4-wo picks among its kernels per M (transfer.py)
    from harness.plan.kernel_log import variants_of
    assert variants_of("w4a8 CUTLASS (torchao Float8DynamicActivationInt4WeightConfig, mslk)") == ("w4a8",)
    failed = [r for r in recs if r.status == "failed"]
    assert {r.variant for r in failed} == {"fp8-wo[gemlite]"} and "boom" in failed[0].reason
    r = next(r for r in recs if r.variant == "baseline" and r.model == "llama-3.1-8b:o" and r.batch_size == 8)
    assert r.backend == "microbench" and r.decode_tok_s == pytest.approx(8 / 11e-6)


def test_json_input_matches_the_log(log, tmp_path):
    rows, _ = read_rows(log)
    doc = {"device": "NVIDIA H200", "torch": "2.11", "rows": rows}
    j = tmp_path / "k.json"
    j.write_text(json.dumps(doc))
    rows_j, header = read_rows(j)
    assert rows_j == rows and header["device"] == "NVIDIA H200"
    assert rows_from_log("hello") == []
    empty = tmp_path / "empty.log"
    empty.write_text("hello\n")
    with pytest.raises(ValueError, match="no kernel timing lines"):
        read_rows(empty)
    j.write_text("{}")
    with pytest.raises(ValueError, match="not bench/kernels_gpu.py --out JSON"):
        read_rows(j)


def test_block_curve_sums_the_four_shapes_and_drops_incomplete_m(log):
    recs, _ = records_from_rows(read_rows(log)[0], "h200-sxm-141gb", str(log))
    curves, notes = block_curves(recs, COPY)
    base = next(c for c in curves if c.variant == "baseline")
    s, wb = sum(US.values()) * 1e-6, sum(bf16_bytes(x) for x in SH)
    p1 = base.points[0]
    assert p1.m == 1 and p1.value == pytest.approx((s - wb / COPY) / (wb / COPY), rel=0.01) and p1.n == 4
    dropped = [r for r in recs if not (r.model.endswith(":down") and r.batch_size == 8 and r.variant == "baseline")]
    curves, notes = block_curves(dropped, COPY)
    assert [p.m for p in next(c for c in curves if c.variant == "baseline").points] == [1]
    assert any("baseline" in n and "M=8" in n and "down" in n for n in notes)


def _profile(tmp_path, name, variant, step_ms, gemm_ms, batch=1, prompt=128, attention_ms=None, **extra):
    p = tmp_path / name
    groups = {step_cost.GEMM_GROUP: {"ms_per_step": gemm_ms}}
    if attention_ms is not None:
        groups[step_cost.ATTENTION_GROUP] = {"ms_per_step": attention_ms}
    p.write_text(json.dumps({"model": "synthetic:llama-3.1-8b", "variant": variant, "batch": batch, "prompt": prompt,
                             "step_wall_ms_cuda_events": step_ms, "groups": groups, **extra}))
    return p


def test_step_cost_from_profiles_and_projection_by_hand(P, log, tmp_path):
    h200 = P["h200-sxm-141gb"]
    cal0, _ = calibration_from_kernels(log, h200, COPY, "test")
    assert cal0.step_cost["non_gemm_s"] == 0.0 and "optimistic" in cal0.step_cost["method"]
    a = _profile(tmp_path, "a.json", "baseline", 4.7, 3.9)
    b = _profile(tmp_path, "b.json", "int4-wo", 3.0, 2.3)
    cal, _ = calibration_from_kernels(log, h200, COPY, "test", [a, b])
    sc = cal.step_cost
    shape = shape_of("synthetic:llama-3.1-8b")
    kv_s = kv_cache_bytes(shape, 128 + step_cost.PROFILE_NEW_DEFAULT, 1, "bf16") / COPY   # the profiles' cache read
    assert (sc["low_s"], sc["non_gemm_s"], sc["high_s"]) == pytest.approx((0.7e-3 - kv_s, 0.75e-3 - kv_s, 0.8e-3 - kv_s))
    assert "attention_vs_kv" not in sc                                   # one cache size: no line
    wbytes = weight_bytes(shape, parse_variant("baseline"), "bf16")
    gb = gemm_bytes(shape, wbytes)
    assert gb == pytest.approx(wbytes.total - wbytes.embedding - wbytes.other, rel=1e-6)   # untied embedding not read
    curve_ms = gb * sum(US.values()) * 1e-6 / sum(bf16_bytes(x) for x in SH) * 1e3
    dev = {r["variant"]: r["gemm_vs_curve"] for r in sc["by_profile"]}
    assert dev["baseline"] == pytest.approx(3.9 / curve_ms - 1, rel=0.01)
    assert sc["kernel_error"] == pytest.approx(max(abs(d) for d in dev.values()))
    kv = 25e6
    p = project_decode([cal], h200, "baseline", 1, wbytes.total, kv, gb, 32)
    assert p.tok_s == pytest.approx(1 / (kv / COPY + curve_ms * 1e-3 + 0.75e-3 - kv_s), rel=0.01)
    assert p.low < p.tok_s < p.high and "non-GEMM 0.744 ms/step" in p.source
    p0 = project_decode([cal0], h200, "baseline", 1, wbytes.total, kv, gb, 32)
    assert p0.tok_s > p.tok_s and p0.low == pytest.approx(p0.high)          # kernel only: faster, no spread
    p16 = project_decode([cal], h200, "baseline", 1, wbytes.total, kv, gb, 16)
    assert 1 / p16.tok_s == pytest.approx(1 / p.tok_s - (0.75e-3 - kv_s) / 2, rel=0.01)  # scales with layers
    cal.step_cost = None                                                       # no stated cost: no projection
    assert "no decode curve" in project_decode([cal], h200, "baseline", 1, wbytes.total, kv, gb, 32).source
    with pytest.raises(ValueError, match="not a bench/profile_step.py profile"):
        step_cost.read_profile(log)
    pre = _profile(tmp_path, "pre.json", "baseline", 63.0, 37.0)        # a prefill's profile is no decode step
    pre.write_text(json.dumps({**json.loads(pre.read_text()), "phase": "prefill"}))
    with pytest.raises(ValueError, match="a prefill profile, and the step cost is a decode step's"):
        step_cost.read_profile(pre)


def test_step_cost_takes_the_kv_read_out_of_a_long_cache_profile(P, log, tmp_path):
    """A profile at batch 32 over a 2,112-token cache spends its KV read (8.9 GB at 8B) in attention: the fit
    takes KV / copy out of its non-GEMM figure (the projection adds it back per cell), and with two cache
    sizes states the attention group's time as a line in KV bytes."""
    h200 = P["h200-sxm-141gb"]
    shape = shape_of("synthetic:llama-3.1-8b")
    kv_small = kv_cache_bytes(shape, 128 + 64, 1, "bf16")
    kv_big = kv_cache_bytes(shape, 2048 + 64, 32, "bf16")
    assert kv_big == pytest.approx(32 * 2112 * 131072)
    a = _profile(tmp_path, "a.json", "baseline", 4.7, 3.9, attention_ms=0.25, new=64)
    # attention = 0.25 ms + the extra KV at the copy bandwidth; the rest of the non-GEMM work as in a
    big = _profile(tmp_path, "b.json", "baseline", 4.1 + 0.55 + 0.25 + kv_big / COPY * 1e3, 4.1, batch=32,
                   prompt=2048, attention_ms=0.25 + (kv_big - kv_small) / COPY * 1e3, new=64)
    cal, _ = calibration_from_kernels(log, h200, COPY, "test", [a, big])
    sc = cal.step_cost
    by = {r["batch"]: r for r in sc["by_profile"]}
    assert by[32]["kv_bytes"] == kv_big and by[32]["non_gemm_ms"] == pytest.approx(0.8)
    assert by[1]["non_gemm_ms"] == pytest.approx(0.8 - kv_small / COPY * 1e3)
    assert sc["high_s"] == pytest.approx(0.8e-3) and sc["low_s"] < sc["high_s"]
    av = sc["attention_vs_kv"]
    assert av["read_bytes_per_s"] == pytest.approx(COPY, rel=1e-6) and av["fixed_s"] == pytest.approx(
        0.25e-3 - kv_small / COPY, rel=1e-6)


def test_cli_from_kernels_and_validate_same_device(P, log, tmp_path):
    out = tmp_path / "cal.json"
    a = _profile(tmp_path, "a.json", "baseline", 4.7, 3.9)
    args = ["--from-kernels", str(log), "--profile", "h200-sxm-141gb", "--out", str(out)]
    res = CliRunner().invoke(calibrate_cli, args)
    assert res.exit_code == 2 and "--copy-bandwidth" in res.output
    res = CliRunner().invoke(calibrate_cli, args + ["--copy-bandwidth", str(COPY), "--copy-source", "run X",
                                                    "--step-profile", str(a)])
    assert res.exit_code == 0, res.output
    cal = load_calibration(out)
    assert cal.step_cost["sources"] == [str(a)] and cal.provenance["sources"] == [str(log)]
    assert cal.provenance["copy_bandwidth_source"] == "run X" and "h200" in cal.provenance["device_measured_on"]
    ref = tmp_path / "m.json"
    ref.write_text(json.dumps([{"profile": "h200-sxm-141gb", "model": "synthetic:llama-3.1-8b", "variant": v,
                                "batch": 1, "prompt_tokens": 128, "new_tokens": 64, "phase": ph,
                                "measured_tok_s": [x]} for v, ph, x in
                               (("baseline", "decode", 210.0), ("int4-wo", "decode", 330.0),
                                ("baseline", "prefill", 14000.0))]))
    base = ["--measured", str(ref), "--calibrate-with", str(out), "--phase", "decode", "--within", "0.10",
            "--median-bar", "0"]
    res = CliRunner().invoke(validate_plan, base)
    assert res.exit_code == 0 and "projected: 0" in res.output          # own device's calibration excluded
    res = CliRunner().invoke(validate_plan, base + ["--same-device"])
    assert res.exit_code == 0, res.output
    assert "cells: 2; projected: 2" in res.output and "within 10%" in res.output and "prefill" not in res.output


def test_a_per_batch_format_projects_its_fastest_kernel_or_the_one_that_ran(P):
    """int4-wo chooses its kernel at the cell's batch: the planner takes the fastest kernel's curve at each
    M; validating a record, the curve of the kernel the record names."""
    from harness.plan.curves import Curve, DeviceCalibration, Point

    h200 = P["h200-sxm-141gb"]
    pts = lambda a, b: [Point(1, a, a, a, 1), Point(8, b, b, b, 1)]  # noqa: E731
    cal = DeviceCalibration("h200-sxm-141gb", "9.0", 4.8e12, 0.88, 9.89e14, curves=[
        Curve("int4-wo[tinygemm]", "int4 tinygemm (torchao tile_packed_to_4d)", "decode", "records", pts(1.0, 4.0)),
        Curve("int4-wo[gemlite]", "int4 GemLite A16W4 g128", "decode", "records", pts(1.2, 2.0))])
    w, kv = 5e9, 1e8

    def proj(batch, kernel=None):
        return project_decode([cal], h200, "int4-wo", batch, w, kv, kernel=kernel)
    assert "tinygemm" in proj(1).source and "GemLite" in proj(8).source
    assert proj(8).tok_s > project_decode([cal], h200, "int4-wo[tinygemm]", 8, w, kv).tok_s
    ran = "int4-wo[tinygemm]: torchao Int4WeightOnlyConfig(group_size=128, tile_packed_to_4d) -> Int4TilePackedTo4dTensor x129"
    assert "tinygemm" in proj(8, ran).source
    assert "tinygemm" in proj(8, "torchao Int4WeightOnlyConfig(int4_packing_format=tile_packed_to_4d) -> x").source
    none = proj(8, "int4-wo[cutlass]: torchao ... preshuffled -> Int4PreshuffledTensor x129")
    assert not none.ok and "with the kernel that ran (cutlass)" in none.source
    assert project_decode([cal], h200, "baseline", 1, w, kv).source.startswith("no decode curve for baseline")


def _block_log(tmp_path, preset, us_scale, name, ms=(1, 8)):
    """A kernels_gpu.py log of `preset`'s block (its header line), bf16 at M = `ms` taking `us_scale` x the
    copy time of its bytes."""
    from harness.plan.kernel_log import block_shapes

    lines = [f"shapes of {preset}: ..."]
    for m in ms:
        for s, (n, k) in block_shapes(preset).items():
            wb = 2 * n * k
            lines.append(line("bf16 cuBLAS", s, m, wb / COPY * 1e6 * us_scale, wb))
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_kernels_timed_at_two_block_sizes_project_each_model_through_its_own(P, tmp_path):
    """A kernel timed at the 8B and the 70B block gets a curve per block; a model between them is
    interpolated in log block parameters, one beyond them takes the nearest and says so."""
    from harness.models.presets import PRESETS
    from harness.plan.kernel_log import block_shapes, preset_of_log

    h200 = P["h200-sxm-141gb"]
    small, big = _block_log(tmp_path, "llama-3.1-8b", 1.5, "k8.log"), _block_log(tmp_path, "llama-3.1-70b", 1.1, "k70.log")
    assert preset_of_log(big.read_text()) == "llama-3.1-70b" and preset_of_log("bf16 cuBLAS ...") == "llama-3.1-8b"
    assert block_shapes("llama-3.1-70b") == {"qkv": (10240, 8192), "o": (8192, 8192), "gate_up": (57344, 8192),
                                              "down": (8192, 28672)}
    rows, _ = read_rows(big)
    assert {r["model"] for r in rows} == {"llama-3.1-70b"} and rows[0]["K"] == 8192
    cal, _ = calibration_from_kernels([small, big], h200, COPY, "test")
    base = sorted((c for c in cal.curves if c.variant == "baseline"), key=lambda c: c.block_params)
    assert [c.shapes for c in base] == ["llama-3.1-8b", "llama-3.1-70b"]
    assert base[0].at(1)[0] == pytest.approx(0.5, rel=0.01) and base[1].at(1)[0] == pytest.approx(0.1, rel=0.01)
    kernel = base[0].kernel
    p8, p70 = (PRESETS[n].block_linear_params() for n in ("llama-3.1-8b", "llama-3.1-70b"))
    (v8, _, _), w8 = cal.sized_kernel_at("baseline", kernel, 1, p8)
    (v70, _, _), w70 = cal.sized_kernel_at("baseline", kernel, 1, p70)
    assert (v8, v70) == pytest.approx((0.5, 0.1), rel=0.01) and w8 == "llama-3.1-8b block" and w70 == "llama-3.1-70b block"
    mid = int((p8 * p70) ** 0.5)                                 # halfway in log parameters
    (vm, _, _), wm = cal.sized_kernel_at("baseline", kernel, 1, mid)
    assert vm == pytest.approx(0.3, rel=0.01) and "between the llama-3.1-8b and llama-3.1-70b blocks (0.50" in wm
    (vs, _, _), ws = cal.sized_kernel_at("baseline", kernel, 1, PRESETS["llama-3.2-1b"].block_linear_params())
    assert vs == pytest.approx(0.5, rel=0.01) and ws == "llama-3.1-8b block, the nearest timed"
    # the projection of each model takes its own block's curve (and names it)
    cal.step_cost = step_cost.none()
    shape = shape_of("synthetic:llama-3.1-70b")
    wb = weight_bytes(shape, parse_variant("baseline"), "bf16")
    gb = gemm_bytes(shape, wb)
    p = project_decode([cal], h200, "baseline", 1, wb.total, 0.0, gb, 80, block_params=p70)
    assert p.tok_s == pytest.approx(1 / (gb / COPY * 1.1), rel=0.01) and "llama-3.1-70b block" in p.source
    p_old = project_decode([cal], h200, "baseline", 1, wb.total, 0.0, gb, 80)   # no block size given: the fuller curve
    assert p_old.tok_s == pytest.approx(1 / (gb / COPY * 1.5), rel=0.01)
    with pytest.raises(ValueError, match="a kernel file is given twice"):
        calibration_from_kernels([small, small], h200, COPY, "test")
    with pytest.raises(ValueError, match="not a preset"):
        block_shapes("llama-9000")
    # the file keeps which block each curve timed
    out = tmp_path / "c.json"
    out.write_text(cal.to_json())
    assert sorted(c.shapes for c in load_calibration(out).curves) == ["llama-3.1-70b", "llama-3.1-8b"]


def test_cli_takes_several_kernel_files(P, tmp_path):
    small, big = _block_log(tmp_path, "llama-3.1-8b", 1.5, "k8.log"), _block_log(tmp_path, "llama-3.1-70b", 1.1, "k70.log")
    out = tmp_path / "cal.json"
    res = CliRunner().invoke(calibrate_cli, ["--from-kernels", str(small), "--from-kernels", str(big), "--profile",
                                             "h200-sxm-141gb", "--copy-bandwidth", str(COPY), "--out", str(out)])
    assert res.exit_code == 0, res.output
    cal = load_calibration(out)
    assert cal.provenance["sources"] == [str(small), str(big)] and len(cal.curves) == 2 and cal.prefill_costs == []
    pre = [_prefill_profile(tmp_path, f"p{n}.json", n, 10.0 + n, 6.0, 0.1 * n) for n in (4, 8)]
    res = CliRunner().invoke(calibrate_cli, ["--from-kernels", str(small), "--profile", "h200-sxm-141gb",
                                             "--copy-bandwidth", str(COPY), "--out", str(out),
                                             "--prefill-profile", str(pre[0]), "--prefill-profile", str(pre[1])])
    assert res.exit_code == 0, res.output
    assert load_calibration(out).prefill_costs[0]["sources"] == [str(p) for p in pre]
    res = CliRunner().invoke(calibrate_cli, ["--from-kernels", str(small), "--from-kernels", str(small), "--profile",
                                             "h200-sxm-141gb", "--copy-bandwidth", str(COPY), "--out", str(out)])
    assert res.exit_code == 2 and "given twice" in res.output


def _prefill_profile(tmp_path, name, prompt, step_ms, gemm_ms, attn_ms, sdpa_in_gemm_ms=0.0):
    """A bench/profile_step.py --phase prefill JSON; sdpa_in_gemm_ms: cuDNN's Hopper SDPA kernel as the
    grouping before 2026-12-03 filed it (inside the GEMM group's figure, named among the top kernels)."""
    top = [{"name": "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7", "calls_per_step": 32.0,
            "ms_per_step": sdpa_in_gemm_ms, "group": step_cost.GEMM_GROUP}] if sdpa_in_gemm_ms else []
    p = tmp_path / name
    p.write_text(json.dumps({"model": "synthetic:llama-3.1-8b", "variant": "baseline", "batch": 1, "prompt": prompt,
                             "phase": "prefill", "step_wall_ms_cuda_events": step_ms, "top_kernels": top,
                             "groups": {step_cost.GEMM_GROUP: {"ms_per_step": gemm_ms + sdpa_in_gemm_ms},
                                        "attention": {"ms_per_step": attn_ms}}}))
    return p


def test_prefill_cost_from_prefill_profiles_and_projection_by_hand(P, log, tmp_path):
    """Two prefill profiles fit the non-GEMM prefill lines (rest by tokens, attention by prompt^2); the
    prefill projection is the kernel curve on the blocks at M = B x P and on the lm_head at M = B plus
    that cost; GemLite kernels (dequantized prefill) get none."""
    from harness.plan.roofline import lm_head_gemm_bytes
    from harness.plan.transfer import project_prefill

    h200 = P["h200-sxm-141gb"]
    a = _prefill_profile(tmp_path, "p4.json", 4, 10.0, 6.0, 0.5, sdpa_in_gemm_ms=0.25)   # attention 0.75, rest 3.25
    b = _prefill_profile(tmp_path, "p8.json", 8, 12.0, 6.5, 1.0)                         # attention 1.0, rest 4.5
    row = step_cost.read_profile(a, "prefill")
    assert (row["gemm_ms"], row["attention_ms"], row["attention_moved_from_gemm_ms"]) == pytest.approx((6.0, 0.75, 0.25))
    cal, _ = calibration_from_kernels(log, h200, COPY, "test", prefill_profiles=[a, b])
    [pc] = cal.prefill_costs
    assert pc["per_token_s"] == pytest.approx((4.5 - 3.25) / 4 * 1e-3) and pc["fixed_s"] == pytest.approx(2.0e-3)
    assert pc["attention_per_p2_s"] == pytest.approx(0.25 / 48 * 1e-3)
    assert pc["spread"] == step_cost.PREFILL_PRIOR and "two profiles" in pc["spread_source"]
    assert step_cost.prefill_seconds(pc, 1, 8) == pytest.approx(5.5e-3)
    assert step_cost.prefill_seconds(pc, 1, 8, layers=16) == pytest.approx(2.75e-3)      # scaled by layers
    assert (pc["token_width"], pc["attention_width"]) == shape_of("synthetic:llama-3.1-8b").prefill_widths() == (
        4096 + 14336, 32 * 128)
    # a model twice as wide: the per-token and the attention terms double, the fixed ones do not
    wide = step_cost.prefill_seconds(pc, 1, 8, widths=(2 * pc["token_width"], 2 * pc["attention_width"]))
    per_token, attention = pc["per_token_s"] * 8, pc["attention_per_p2_s"] * 64
    assert wide == pytest.approx(5.5e-3 + per_token + attention)
    assert step_cost.prefill_seconds({**pc, "token_width": None}, 1, 8, widths=(1, 1)) == pytest.approx(5.5e-3)
    shape = shape_of("synthetic:llama-3.1-8b")
    wb = weight_bytes(shape, parse_variant("baseline"), "bf16")
    gb, hb = gemm_bytes(shape, wb), lm_head_gemm_bytes(shape, wb)
    base = next(c for c in cal.curves if c.variant == "baseline" and c.phase == "kernel")
    o8, o1 = base.at(8)[0], base.at(1)[0]
    p = project_prefill([cal], h200, "baseline", 8, wb.total, 0.0, batch=1, gemm_bytes=gb, head_bytes=hb, layers=32,
                        block_params=shape.block_linear_params())
    want = (gb - hb) * (1 + o8) / COPY + hb * (1 + o1) / COPY + 5.5e-3
    assert p.tok_s == pytest.approx(8 / want, rel=0.01) and p.low < p.tok_s < p.high
    assert "non-GEMM prefill 5.50 ms of eager prefills (+/-25%" in p.source   # profiles without a prefill choice
    assert pc["prefill_path"] == "eager"
    comp = _prefill_profile(tmp_path, "c8.json", 8, 9.0, 6.5, 1.0)
    comp.write_text(json.dumps({**json.loads(comp.read_text()), "prefill_choice": {"chosen": "compiled"}}))
    with pytest.raises(ValueError, match="prefill profiles of compiled and eager prefills"):
        step_cost.fit_prefill([a, comp], cal)
    comp4 = _prefill_profile(tmp_path, "c4.json", 4, 7.5, 6.0, 0.5)
    comp4.write_text(json.dumps({**json.loads(comp4.read_text()), "prefill_choice": {"chosen": "compiled"}}))
    both, _ = calibration_from_kernels(log, h200, COPY, "test", prefill_profiles=[a, comp, b, comp4])
    assert [c["prefill_path"] for c in both.prefill_costs] == ["compiled", "eager"]
    kw = dict(batch=1, gemm_bytes=gb, head_bytes=hb, layers=32, block_params=shape.block_linear_params())
    eager = project_prefill([both], h200, "baseline", 8, wb.total, 0.0, prefill_path="eager", **kw)
    assert eager.tok_s == pytest.approx(p.tok_s) and "of eager prefills" in eager.source
    compiled = project_prefill([both], h200, "baseline", 8, wb.total, 0.0, prefill_path="compiled", **kw)
    assert compiled.tok_s > eager.tok_s and "of compiled prefills" in compiled.source
    chosen = project_prefill([both], h200, "baseline", 8, wb.total, 0.0, **kw)   # planning: the engine's choice
    assert chosen.tok_s == compiled.tok_s and "the faster of 2 prefill paths" in chosen.source
    from harness.plan.validate import Cell, prefill_mismatch
    cell = lambda path: Cell("h200-sxm-141gb", "synthetic:llama-3.1-8b", "baseline", 1, 128, 64, "prefill", [1.0],  # noqa: E731
                             "t", prefill_path=path)
    assert "measured with a compiled prefill, the prefill cost is of eager prefills" in prefill_mismatch(cell("compiled"), [cal])
    assert prefill_mismatch(cell("eager"), [cal]) == "" and prefill_mismatch(cell(None), [cal]) == ""
    assert prefill_mismatch(cell("compiled"), [both]) == ""
    no_batch = project_prefill([cal], h200, "baseline", 8, wb.total, 0.0)
    assert not no_batch.ok and "needs the batch" in no_batch.source
    assert cal.kernel_prefill("int4-wo[tinygemm]") is not None
    out = tmp_path / "c.json"
    out.write_text(cal.to_json())
    assert load_calibration(out).prefill_costs[0]["fixed_s"] == pytest.approx(pc["fixed_s"])
    old = json.loads(out.read_text())                       # a file written before there was one cost per path
    old["prefill_cost"] = old.pop("prefill_costs")[0]
    out.write_text(json.dumps(old))
    assert load_calibration(out).prefill_costs == [pc]
    with pytest.raises(ValueError, match="a decode profile, and the prefill cost is a prefill's"):
        step_cost.read_profile(_profile(tmp_path, "d.json", "baseline", 4.7, 3.9), "prefill")
    with pytest.raises(ValueError, match="two or more token counts"):
        step_cost.fit_prefill([a, a], cal)
    b4 = _prefill_profile(tmp_path, "b4.json", 2, 9.0, 5.0, 0.4)            # batch 4 x prompt 2: tokens 8, work 16
    b4.write_text(json.dumps({**json.loads(b4.read_text()), "batch": 4}))
    with pytest.raises(ValueError, match="batch x prompt\\^2"):
        step_cost.fit_prefill([a, b4], cal)                                  # prompt 4 at batch 1: work 16 too
    gem = _block_log(tmp_path, "llama-3.1-8b", 1.5, "g.log", ms=(1, 8, 512))
    gem.write_text(gem.read_text().replace("bf16 cuBLAS", "int4 GemLite A16W4 g128"))
    gcal, _ = calibration_from_kernels(gem, h200, COPY, "test", prefill_profiles=[a, b])
    # GemLite's own kernels up to 256 rows; a larger prefill dequantizes + cuBLAS, not timed in this file
    assert [p.m for p in gcal.kernel_prefill("int4-wo[gemlite]").points] == [1, 8]
    gkw = dict(batch=1, gemm_bytes=gb, head_bytes=hb, layers=32, block_params=shape.block_linear_params())
    assert project_prefill([gcal], h200, "int4-wo[gemlite]", 8, wb.total, 0.0, **gkw).ok
    big = project_prefill([gcal], h200, "int4-wo[gemlite]", 512, wb.total, 0.0, **gkw)
    assert not big.ok and "M=512" in big.source and "M 1-8" in big.source


def test_gemlite_prefill_above_256_rows_is_projected_from_its_dequantized_path(P, tmp_path):
    """bench/kernels_gpu.py's "dequantized prefill: ..." timings (GemLite's linear above 256 rows: unpack to
    bf16 + cuBLAS, harness/variants/gemlite.py) are a curve of their own phase: a GemLite prefill above
    256 rows is projected from it, at or below 256 rows from GemLite's own kernels; decode never uses it."""
    from harness.plan.curves import DEQUANT_PHASE
    from harness.plan.roofline import lm_head_gemm_bytes
    from harness.plan.transfer import project_decode, project_prefill

    h200 = P["h200-sxm-141gb"]
    own = _block_log(tmp_path, "llama-3.1-8b", 1.5, "g.log", ms=(1, 8, 256, 1024)).read_text()
    dq = _block_log(tmp_path, "llama-3.1-8b", 6.0, "d.log", ms=(256, 1024)).read_text()
    gem = tmp_path / "gem.log"
    gem.write_text(own.replace("bf16 cuBLAS", "int4 GemLite A16W4 g128") + "\n".join(
        x.replace("bf16 cuBLAS", "dequantized prefill: int4 GemLite A16W4 g128 (unpack + cuBLAS)")
        for x in dq.splitlines()[1:]) + "\n")
    pre = [_prefill_profile(tmp_path, f"p{n}.json", n, 10.0 + n / 100, 6.0, 0.1) for n in (128, 2048)]
    cal, _ = calibration_from_kernels(gem, h200, COPY, "test", prefill_profiles=pre)
    dqc = [c for c in cal.curves if c.phase == DEQUANT_PHASE]
    assert [(c.variant, [p.m for p in c.points]) for c in dqc] == [("int4-wo[gemlite]", [256, 1024])]
    assert [p.m for p in cal.kernel_prefill("int4-wo[gemlite]").points] == [1, 8, 256, 1024]
    shape = shape_of("synthetic:llama-3.1-8b")
    wb = weight_bytes(shape, parse_variant("int4-wo[gemlite]"), "bf16")
    gb, hb = gemm_bytes(shape, wb), lm_head_gemm_bytes(shape, wb)
    kw = dict(gemm_bytes=gb, head_bytes=hb, layers=32, block_params=shape.block_linear_params())
    big = project_prefill([cal], h200, "int4-wo[gemlite]", 1024, wb.total, 0.0, batch=8, **kw)
    assert big.ok and "dequantized to bf16 + cuBLAS above 256 rows" in big.source
    assert cal.sized_kernel_at("int4-wo[gemlite]", dqc[0].kernel, 1024, None)[0][0] == pytest.approx(5.0, rel=0.01)
    assert cal.sized_kernel_at("int4-wo[gemlite]", "int4 GemLite A16W4 g128", 256, None)[0][0] == pytest.approx(
        0.5, rel=0.01)                                                  # 256 rows: GemLite's own kernels
    small = project_prefill([cal], h200, "int4-wo[gemlite]", 256, wb.total, 0.0, batch=2, **kw)
    assert small.ok and "dequantized" not in small.source
    # the dequantized path at 6x the copy time against GemLite's 1.5x: the 1,024-row prefill's GEMMs take
    # 6x the bytes' copy time, as their curve says, not GemLite's 1.5x
    pc = cal.prefill_costs[0]
    from harness.plan.step_cost import prefill_seconds
    ng = prefill_seconds(pc, 8, 128, 32, shape.prefill_widths())
    gemm_s = 1024 / big.tok_s - ng
    assert gemm_s == pytest.approx(((gb - hb) * 6.0 + hb * 1.5) / COPY, rel=0.02)
    dec = project_decode([cal], h200, "int4-wo[gemlite]", 8, wb.total, 0.0, gemm_bytes=gb, layers=32,
                         block_params=shape.block_linear_params())
    assert "dequantized" not in dec.source and "GemLite" in dec.source
    out = tmp_path / "cal.json"                                         # written and read back: the same projection
    out.write_text(cal.to_json())
    back = project_prefill([load_calibration(out)], h200, "int4-wo[gemlite]", 1024, wb.total, 0.0, batch=8, **kw)
    assert back.tok_s == pytest.approx(big.tok_s)


def _bench_stand_in(calls: list, hang: tuple = ()):
    """A stand-in for subprocess.run of the bench/ scripts that writes what they write (no GPU); a
    command containing one of `hang` runs into its timeout."""
    import subprocess
    import types

    from harness.plan.kernel_log import block_shapes

    real_run = subprocess.run

    def child(cmd, stdout=None, stderr=None, timeout=None, **kw):
        if not str(cmd[1]).endswith(".py"):
            return real_run(cmd, stdout=stdout, stderr=stderr, timeout=timeout, **kw)   # git, for the provenance
        calls.append(cmd)
        if any(h in " ".join(cmd) for h in hang):
            raise subprocess.TimeoutExpired(cmd, timeout)             # stopped at the --stop-after-s limit
        out = Path(cmd[cmd.index("--out") + 1])
        if cmd[1].endswith("kernels_gpu.py"):
            preset = cmd[cmd.index("--model") + 1]
            rows = [{"kernel": "bf16 cuBLAS", "shape": s, "N": n, "K": k, "M": m, "us": 2 * n * k / COPY * 1e6 * 1.2,
                     "weight_bytes": 2 * n * k} for m in (1, 8, 2048) for s, (n, k) in block_shapes(preset).items()]
            out.write_text(json.dumps({"device": "fake", "model": preset, "rows": rows}))
        elif cmd[1].endswith("power_gpu.py"):
            series = [[float(t), 2.0 if t < 50 else 2.2] for t in range(0, 2500, 2)]
            out.write_text(json.dumps({"device": "fake", "model": cmd[cmd.index("--model") + 1], "power_limit_w": 700.0,
                                       "loads": [{"kernel": "bf16 cuBLAS", "M": 2048, "replay_ms": series,
                                                  "clock_fraction": 0.7, "power_mean_w": 700.0}], "recovery": []}))
        elif "--phase" in cmd:
            prompt = int(cmd[cmd.index("--prompt") + 1])
            out.write_text(json.dumps({"model": "synthetic:llama-3.1-8b", "variant": "baseline", "batch": 1,
                                       "prompt": prompt, "phase": "prefill", "step_wall_ms_cuda_events": 5 + prompt / 50,
                                       "groups": {step_cost.GEMM_GROUP: {"ms_per_step": 3 + prompt / 80},
                                                  "attention": {"ms_per_step": 0.2 + prompt / 400}}}))
        else:
            v = cmd[cmd.index("--variant") + 1] if "--variant" in cmd else "baseline"
            out.write_text(json.dumps({"model": "synthetic:llama-3.1-8b", "variant": v, "batch": 1, "prompt": 128,
                                       "new": 64, "step_wall_ms_cuda_events": 4.7,
                                       "groups": {step_cost.GEMM_GROUP: {"ms_per_step": 3.9}}}))
        return types.SimpleNamespace(returncode=0)
    return child


def test_calibrate_kernels_runs_the_bench_scripts_and_fits_their_outputs(tmp_path, monkeypatch):
    """`harness calibrate --kernels` on CUDA: the copy meter, bench/kernels_gpu.py per block and
    bench/profile_step.py for the step and prefill profiles, each a child process whose outputs are kept,
    then the fit. Here the children are stand-ins that write what the scripts write (no GPU)."""
    import subprocess
    import types

    import torch

    import harness.cli.calibrate as cli
    import harness.meters.bandwidth as bw

    calls = []
    child = _bench_stand_in(calls)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bw, "measure_copy_bandwidth", lambda *a, **k: types.SimpleNamespace(value_per_s=COPY))
    monkeypatch.setattr(subprocess, "run", child)
    out = tmp_path / "cal.json"
    res = CliRunner().invoke(cli.calibrate, ["--kernels", "--profile", "h200-sxm-141gb", "--out", str(out)])
    assert res.exit_code == 0, res.output
    scripts = [Path(c[1]).name for c in calls]
    assert scripts == ["kernels_gpu.py"] * 2 + ["profile_step.py"] * 7 + ["power_gpu.py"]
    assert calls[0][calls[0].index("--m") + 1] == cli.KERNEL_M
    cal = load_calibration(out)
    assert sorted(c.shapes for c in cal.curves) == ["llama-3.1-70b", "llama-3.1-8b"]
    kv_s = kv_cache_bytes(shape_of("synthetic:llama-3.1-8b"), 192, 1, "bf16") / COPY
    assert cal.step_cost["non_gemm_s"] == pytest.approx(0.8e-3 - kv_s) and len(cal.prefill_costs) == 1
    assert cal.provenance["copy_bandwidth_source"].startswith("harness calibrate --kernels")
    kept = {p.name for p in next(tmp_path.glob("calibration-kernels-*")).iterdir()}
    assert {"kernels-llama-3.1-8b.json", "kernels-llama-3.1-8b.log", "prefill-bf16-p2048.json",
            "power-llama-3.1-8b.json"} <= kept
    from harness.plan.power import load_power
    pm = load_power(tmp_path / "cal-power.json")                  # the power file beside the calibration
    assert pm.profile == "h200-sxm-141gb" and pm.loads[0].steady == pytest.approx(1.1)
    res = CliRunner().invoke(cli.calibrate, ["--kernels", "--kernel-blocks", "llama-9", "--profile", "h200-sxm-141gb"])
    assert res.exit_code == 2 and "not a preset" in res.output


def test_calibrate_kernels_in_pieces_stops_at_its_limit_and_resumes_its_work_folder(tmp_path, monkeypatch):
    """--stop-after-s: a piece stopped at the limit leaves no file, the command exits 1 naming the folder;
    --work-dir on that folder measures only what is missing (the copy bandwidth included), then fits."""
    import subprocess
    import types

    import torch

    import harness.cli.calibrate as cli
    import harness.meters.bandwidth as bw

    copies = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bw, "measure_copy_bandwidth",
                        lambda *a, **k: copies.append(1) or types.SimpleNamespace(value_per_s=COPY))
    work, out = tmp_path / "w", tmp_path / "cal.json"
    first = []
    monkeypatch.setattr(subprocess, "run", _bench_stand_in(first, hang=("--batch 8",)))
    args = ["--kernels", "--profile", "h200-sxm-141gb", "--out", str(out), "--work-dir", str(work)]
    res = CliRunner().invoke(cli.calibrate, args + ["--stop-after-s", "500"])
    assert res.exit_code == 1 and not out.exists()
    assert "profile_step.py stopped at the 500 s limit" in res.output and "4 of 10 pieces measured" in res.output
    assert f"--work-dir {work}" in res.output
    assert not (work / "step-bf16-b8.json").exists() and (work / "step-bf16-b8.log").exists()
    assert len(first) == 5 and copies == [1]
    again = []
    monkeypatch.setattr(subprocess, "run", _bench_stand_in(again))
    res = CliRunner().invoke(cli.calibrate, args)
    assert res.exit_code == 0, res.output
    assert [c[c.index("--out") + 1] for c in again] == [str(work / f"{stem}.json") for stem in
                                                        ("step-bf16-b8", "step-bf16-b32-p2048", "prefill-bf16-p128",
                                                         "prefill-bf16-p512", "prefill-bf16-p2048",
                                                        "power-llama-3.1-8b")]
    assert copies == [1] and "kept kernels-llama-3.1-70b.json" in res.output and out.exists()
    res = CliRunner().invoke(cli.calibrate, ["--work-dir", str(work)])
    assert res.exit_code == 2 and "go with --kernels" in res.output


def test_calibrate_kernels_stops_before_a_piece_once_the_limit_has_passed(tmp_path, monkeypatch):
    import subprocess
    import types

    import torch

    import harness.cli.calibrate as cli
    import harness.meters.bandwidth as bw

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bw, "measure_copy_bandwidth", lambda *a, **k: types.SimpleNamespace(value_per_s=COPY))
    calls, clock = [], [0.0]
    stand_in = _bench_stand_in(calls)

    def slow(cmd, **kw):
        clock[0] += 300.0 if str(cmd[1]).endswith(".py") else 0.0   # each piece takes 300 s
        return stand_in(cmd, **kw)
    monkeypatch.setattr(subprocess, "run", slow)
    monkeypatch.setattr(cli._Pieces, "__init__", _pieces_on(clock, cli._Pieces.__init__))
    res = CliRunner().invoke(cli.calibrate, ["--kernels", "--profile", "h200-sxm-141gb", "--work-dir",
                                             str(tmp_path / "w"), "--stop-after-s", "550"])
    assert res.exit_code == 1 and len(calls) == 2
    assert "stopped at the 550 s limit: 2 of 10 pieces measured" in res.output


def _pieces_on(clock, init):
    def patched(self, *args):
        init(self, *args)
        self._now = lambda: clock[0]
        self.t0 = 0.0
    return patched


def test_calibrate_kernels_needs_cuda():
    res = CliRunner().invoke(calibrate_cli, ["--kernels"])
    assert res.exit_code == 2 and "no CUDA device" in res.output


def test_a_per_batch_format_prefills_with_the_kernel_it_picked_for_decode(P, tmp_path):
    """The runner picks one kernel per cell at M = the batch; the planner's int4-wo prefill follows that
    pick (GemLite at batch 8 here: no prefill curve, said so), not the fastest prefill kernel."""
    from harness.plan.kernel_log import block_shapes
    from harness.plan.transfer import project_prefill

    h200 = P["h200-sxm-141gb"]
    lines = ["shapes of llama-3.1-8b: ..."]
    for m in (1, 8, 2048):
        for s, (n, k) in block_shapes("llama-3.1-8b").items():
            wb = n * k // 2
            lines.append(line("int4 tinygemm (torchao tile_packed_to_4d)", s, m, wb / COPY * 1e6 * (2 if m == 1 else 9), wb))
            lines.append(line("int4 GemLite A16W4 g128", s, m, wb / COPY * 1e6 * (3 if m == 1 else 4), wb))
    log = tmp_path / "k.log"
    log.write_text("\n".join(lines) + "\n")
    pre = [_prefill_profile(tmp_path, f"p{n}.json", n, 10.0 + n / 100, 6.0, 0.1) for n in (128, 2048)]
    cal, _ = calibration_from_kernels(log, h200, COPY, "test", prefill_profiles=pre)
    shape = shape_of("synthetic:llama-3.1-8b")
    wb = weight_bytes(shape, parse_variant("int4-wo"), "bf16")
    kw = dict(gemm_bytes=gemm_bytes(shape, wb), layers=32, block_params=shape.block_linear_params())
    one = project_prefill([cal], h200, "int4-wo", 128, wb.total, 0.0, batch=1, **kw)
    assert one.ok and "tinygemm" in one.source
    eight = project_prefill([cal], h200, "int4-wo", 8 * 128, wb.total, 0.0, batch=8, **kw)
    assert not eight.ok and "int4-wo picks gemlite at batch 8" in eight.source


def test_two_files_of_one_block_take_each_kernel_from_the_later(P, tmp_path):
    """A later kernels_gpu.py run at the same block (more M, a kernel re-timed) replaces that kernel's
    timings of the earlier file; a kernel only the earlier file timed stays, and the note says what was
    replaced."""
    from harness.plan.kernel_log import block_shapes, calibration_from_kernels

    h200 = P["h200-sxm-141gb"]

    def log(name, kernels):
        lines = ["shapes of llama-3.1-8b: ..."]
        for kname, scale, ms in kernels:
            for m in ms:
                for s, (n, k) in block_shapes("llama-3.1-8b").items():
                    wb = 2 * n * k if kname.startswith("bf16") else n * k // 2
                    lines.append(line(kname, s, m, wb / COPY * 1e6 * scale, wb))
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return tmp_path / name

    old = log("old.log", [("bf16 cuBLAS", 2.0, (1, 8)), ("int4 tinygemm (torchao tile_packed_to_4d)", 3.0, (1,))])
    new = log("new.log", [("bf16 cuBLAS", 1.25, (1, 4, 8))])
    cal, notes = calibration_from_kernels([old, new], h200, COPY, "test")
    base = next(c for c in cal.curves if c.variant == "baseline")
    assert [p.m for p in base.points] == [1, 4, 8] and base.at(1)[0] == pytest.approx(0.25, rel=0.01)
    tiny = next(c for c in cal.curves if c.variant == "int4-wo[tinygemm]")
    assert tiny.at(1)[0] == pytest.approx(2.0, rel=0.01)
    assert any(f"bf16 cuBLAS at the llama-3.1-8b block: timings of {old} replaced by {new}" == n for n in notes)
    assert cal.provenance["sources"] == [str(old), str(new)]


def test_validation_cells_know_their_prefill_path():
    """A record's engine.prefill says which prefill ran (compiled or eager); records from before the
    compiled prefill carry no choice and ran the eager one; the committed H200 cells of both kinds."""
    from harness.plan.validate import cells_from_records
    from harness.records import load_records

    root = Path(__file__).resolve().parent.parent / "results/reference/h200"
    new = cells_from_records(load_records(root / "session6-20261203/cells-8b-b1"), "s6")
    old = cells_from_records(load_records(root / "session5-20261203/cells-8b-b1"), "s5")
    assert {c.prefill_path for c in new} == {"compiled"} and {c.prefill_path for c in old} == {"eager"}


def test_a_cell_measured_below_full_clock_says_so_in_the_validation_table(P):
    """The record's clock flag (harness.meters.clocks) goes beside the error; the cell stays counted."""
    from harness.plan.curves import DeviceCalibration
    from harness.plan.validate import cells_from_records, summary, to_markdown
    from harness.records import Record

    flag = "SM clock median 1,455 MHz, 73% of its 1,980 MHz maximum, over the timed window"
    recs = [Record("synthetic:qwen2.5-7b", "int4-wo", "pytorch", "h200-sxm-141gb", 32, 2048, 16, status="ok",
                   decode_tok_s=4663.0, extra={"clocks": {"flags": [flag]}}),
            Record("synthetic:llama-3.1-8b", "baseline", "pytorch", "h200-sxm-141gb", 1, 128, 64, status="ok",
                   decode_tok_s=210.0, extra={"clocks": {"flags": []}})]
    cells = cells_from_records(recs, "run")
    assert {c.model: c.clock for c in cells} == {"synthetic:qwen2.5-7b": flag, "synthetic:llama-3.1-8b": None}
    cal = DeviceCalibration("h200-sxm-141gb", "9.0", 4.8e12, 0.88, 9.89e14)
    text = to_markdown(cells, [cal], "t", same_device=True)
    row = next(line for line in text.splitlines() if "qwen2.5-7b" in line)
    assert f"measured below full clock ({flag}); projections are at full clock" in row
    assert "below full clock" not in next(line for line in text.splitlines() if "llama-3.1-8b" in line)
    assert summary(cells)["cells"] == 2
