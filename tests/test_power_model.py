"""The planner's power model (harness/plan/power.py): loads' slowdown over time, the clock a capped prefill
leaves, the decode steps after it, the power file the calibrate command writes and validate-plan's use of it.
No GPU: crafted bench output, plus the committed H100 power file and H200 records for the end-to-end case."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.calibrate import calibrate as calibrate_cli, validate_plan
from harness.plan.curves import load_calibration
from harness.plan.kernel_names import family
from harness.plan.power import Load, PowerModel, Recovery, load_power
from harness.plan.validate import cells_from_records, project_cell
from harness.profiles import load_profiles
from harness.records import load_records

REF = Path(__file__).resolve().parents[1] / "results" / "reference"
CUTLASS = "int4 CUTLASS (torchao preshuffled, mslk)"


def capped_series(ref_ms=2.0, capped_ms=2.2, onset_ms=50.0, end_ms=2500.0):
    """Replays of ref_ms until onset_ms, then capped_ms, one sample per replay; the first replay slow (the
    graph's first launch), as on the device."""
    out, t = [(0.0, ref_ms * 1.5)], ref_ms * 1.5
    while t < end_ms:
        d = ref_ms if t < onset_ms else capped_ms
        out.append((t, d))
        t += d
    return out


def test_kernel_families_join_bench_names_record_kernels_and_curves():
    assert family("bf16 cuBLAS") == family("aten.linear bfloat16 (dense)") == "bf16"
    assert family("dequantized prefill: int4 GemLite A16W4 g128 (unpack + cuBLAS)") == "bf16"
    assert family(CUTLASS) == family("int4-wo[cutlass]: torchao Int4WeightOnlyConfig(preshuffled)") == "cutlass"
    assert family("w4a8 CUTLASS (torchao Float8DynamicActivationInt4WeightConfig, mslk)") == "cutlass-fp8"
    assert family("fp8-wo[gemlite]: GemLite A16W8") == family("fp8 GemLite A16W8") == "gemlite-fp8"
    assert family("int4 tinygemm (torchao tile_packed_to_4d)") == "tinygemm"
    assert family(None) == family("something else") == "unknown"


def test_a_load_runs_at_its_early_speed_until_the_cap_and_at_its_steady_one_after():
    ld = Load("bf16 cuBLAS", 2048, "llama-3.1-8b", capped_series(), 0.7)
    assert ld.ref_ms == pytest.approx(2.0)          # the slow first replay is not the reference
    assert ld.steady == pytest.approx(1.1)
    assert ld.mean_slowdown(0.02) == pytest.approx(1.0, abs=0.01)      # before the onset
    # 1 s of full-clock work: 50 ms at full speed, the other 950 ms of work 10% slower
    assert ld.mean_slowdown(1.0) == pytest.approx((50 + 950 * 1.1) / 1000, rel=0.005)
    # beyond the 2.5 s window the steady slowdown goes on
    assert ld.mean_slowdown(10.0) == pytest.approx((50 + 9950 * 1.1) / 10000, rel=0.005)
    assert ld.depth(0.01) == 0.0 and ld.depth(1.0) == pytest.approx(1 / 0.7 - 1)
    # a load that never slowed left no clock deficit, whatever its clock reading
    flat = Load("bf16 cuBLAS", 1, "llama-3.1-8b", capped_series(capped_ms=2.0), 0.7)
    assert flat.depth(1.0) == 0.0


def model(heavy_clock=0.7, load_clock=0.7):
    ld = Load(CUTLASS, 1024, "llama-3.1-8b", capped_series(), load_clock)
    # the probe 1.4x its idle-start time for the first 60 ms after the heavy load, then at full speed
    rec = Recovery(CUTLASS, 32, "llama-3.1-8b", "bf16:8192", heavy_clock,
                   [(float(t), 1.4 if t < 60 else 1.0, 1.43 if t < 60 else 1.0) for t in range(0, 201)])
    return PowerModel("h100-sxm-80gb", "9.0", 700.0, "NVIDIA H100 80GB HBM3", [ld], [rec])


def test_decode_steps_after_a_capped_prefill_follow_the_probes_recovery():
    pm = model()
    # 15 steps of 5 ms: those starting before 60 ms take 7 ms (starts 0, 7, ..., 56: nine), the rest 5 ms
    f, note = pm.decode_factor(CUTLASS, 65536, 1.5, CUTLASS, 32, 0.005, 15, 1.0)
    assert f == pytest.approx((9 * 7 + 6 * 5) / 75)
    assert "after a capped prefill" in note and "M=32" in note
    # a GEMM share of half the step halves the excess; a shallower cap scales it by the deficits' ratio
    assert pm.decode_factor(CUTLASS, 65536, 1.5, CUTLASS, 32, 0.005, 1, 0.5)[0] == pytest.approx(1.2)
    shallow = model(load_clock=1 / (1 + 0.5 * (1 / 0.7 - 1)))
    assert shallow.decode_factor(CUTLASS, 65536, 1.5, CUTLASS, 32, 0.005, 1, 1.0)[0] == pytest.approx(1.2)
    # a prefill too short to reach the cap, or a decode kernel without a probe, leaves decode at full clock
    assert pm.decode_factor(CUTLASS, 65536, 0.02, CUTLASS, 32, 0.005, 15, 1.0)[0] == 1.0
    f, note = pm.decode_factor(CUTLASS, 65536, 1.5, "bf16 cuBLAS", 32, 0.005, 15, 1.0)
    assert f == 1.0 and "no recovery probe of bf16" in note
    f, note = pm.prefill_factor("int4 tinygemm", 2048, 1.0, 1.0)
    assert f == 1.0 and "no power load of tinygemm kernels near M=2,048" in note


def test_the_power_file_applies_to_boards_of_its_architecture_and_limit_only():
    profs = load_profiles()
    pm = model()
    assert pm.applies_to(profs["h200-sxm-141gb"]) is None
    assert "arch 8.0" in pm.applies_to(profs["a100-sxm-80gb"])
    assert "350 W" in pm.applies_to(profs["h100-pcie-80gb"])      # same chip, another power limit
    assert pm.label("h200-sxm-141gb").startswith("power loads from h100-sxm-80gb")
    assert pm.label("h100-sxm-80gb").startswith("power loads measured on h100-sxm-80gb")


def bench_json(tmp_path: Path) -> Path:
    loads = [{"kernel": CUTLASS, "M": 1024, "replay_ms": [list(p) for p in capped_series()], "clock_fraction": 0.77,
              "power_mean_w": 694.0}]
    rec = [{"heavy": "bf16:8192", "probe": "int4 CUTLASS:32", "probe_kernel": CUTLASS,
            "heavy_clock": {"clock_fraction": 0.7},
            "series": [{"t_ms": float(t), "probe_ratio": 1.4 if t < 60 else 1.0, "clock_ratio": 1.4 if t < 60 else 1.0}
                       for t in range(0, 200, 5)]}]
    p = tmp_path / "power-8b.json"
    p.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "model": "llama-3.1-8b", "power_limit_w": 700.0,
                             "loads": loads, "recovery": rec}))
    return p


def test_calibrate_writes_a_power_file_and_bad_input_is_a_one_line_error(tmp_path):
    src, out = bench_json(tmp_path), tmp_path / "power.json"
    res = CliRunner().invoke(calibrate_cli, ["--power-from", str(src), "--profile", "h100-sxm-80gb", "--out", str(out)])
    assert res.exit_code == 0, res.output
    pm = load_power(out)
    assert (pm.profile, pm.arch, pm.power_limit_w) == ("h100-sxm-80gb", "9.0", 700.0)
    assert pm.loads[0].m == 1024 and pm.loads[0].block == "llama-3.1-8b" and pm.recoveries[0].m == 32
    assert pm.provenance["sources"] == [str(src)]
    res = CliRunner().invoke(calibrate_cli, ["--power-from", str(src), "--out", str(out)])
    assert res.exit_code == 2 and "--profile" in res.output
    res = CliRunner().invoke(calibrate_cli, ["--power-from", str(src), "--profile", "h100-sxm-80gb", "--from-kernels",
                                             str(src)])
    assert res.exit_code == 2 and "on its own" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = CliRunner().invoke(calibrate_cli, ["--power-from", str(bad), "--profile", "h100-sxm-80gb"])
    assert res.exit_code == 2 and "not bench/power_gpu.py output" in res.output
    # a calibration file is not a power file
    res = CliRunner().invoke(validate_plan, ["--measured", str(REF / "h200" / "bf16-b1-off"), "--calibrate-with",
                                             str(REF / "calibration" / "h200-kernel-curves.json"),
                                             "--power", str(REF / "calibration" / "h200-kernel-curves.json")])
    assert res.exit_code == 2 and "not a power file" in res.output


def test_the_capped_qwen_cell_is_projected_slower_with_the_committed_h100_power_file():
    """The H200 qwen2.5-7b int4 batch-32 prompt-2048 cell (power-capped prefills) from the H200 kernel curves:
    at full clock its decode is projected 14.7% fast; with the H100's loads the decode after each prefill is
    slower, by the recovery the H100 measured, and the row says where the figure came from."""
    profs = load_profiles()
    cal = load_calibration(REF / "calibration" / "h200-kernel-curves.json")
    pm = load_power(REF / "calibration" / "h100-power.json")
    cells = cells_from_records(load_records(REF / "h200" / "session6-20261203" / "qwen-int4-b32-p2048"), "q")
    dec = next(c for c in cells if c.phase == "decode")
    full = project_cell(dec, [cal], profs, same_device=True)
    capped = project_cell(dec, [cal], profs, same_device=True, powers=[pm])
    assert 1.10 < full.tok_s / capped.tok_s < 1.25
    assert "power loads from h100-sxm-80gb" in capped.source and "after a capped prefill" in capped.source
    assert capped.high == pytest.approx(full.high)        # another board's cap: the fast end stays at full clock
    assert abs(capped.tok_s / dec.median - 1) < abs(full.tok_s / dec.median - 1)
    # an 8B batch-1 prefill of 128 tokens is over before the cap: unchanged
    small = next(c for c in cells_from_records(load_records(REF / "h200" / "session6-20261203" / "cells-8b-b1"), "s")
                 if c.phase == "prefill" and c.variant == "baseline")
    a, b = project_cell(small, [cal], profs, True), project_cell(small, [cal], profs, True, [pm])
    assert b.tok_s == pytest.approx(a.tok_s, rel=0.01)


def test_plan_scales_a_long_prefill_with_the_power_file_and_needs_curves_for_it(tmp_path):
    """70B int4 (CUTLASS) at 2 x 1,024 tokens on the H200: a prefill of about 0.4 s, past the H100 loads' cap
    onset, projected slower than at full clock; the row names the board the loads came from."""
    from harness.cli.profiles import plan
    base = ["--model", "synthetic:llama-3.1-70b", "--variants", "int4-wo[cutlass]", "--context", "1024", "--batch", "2",
            "--profiles", "h200-sxm-141gb", "--format", "json",
            "--calibrate-with", str(REF / "calibration" / "h200-kernel-curves.json")]
    power = ["--power", str(REF / "calibration" / "h100-power.json")]
    rows = []
    for extra, out in (([], "a"), (power, "b")):
        res = CliRunner().invoke(plan, base + extra + ["--out", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
        rows.append(json.loads(res.stdout))
    row = [r["rows"][0] if isinstance(r, dict) else r[0] for r in rows]
    assert row[0]["curve_prefill_tok_s"] / row[1]["curve_prefill_tok_s"] > 1.03
    assert "power loads from h100-sxm-80gb" in row[1]["curve_from"] and "power" not in row[0]["curve_from"]
    res = CliRunner().invoke(plan, base[:-2] + power + ["--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--calibrate-with" in res.output


@pytest.mark.gpu
def test_the_power_bench_runs_on_this_gpu_and_its_output_makes_a_power_file(tmp_path):
    """bench/power_gpu.py, short: two bf16 loads, one recovery probe; its JSON through calibrate --power-from."""
    import subprocess
    import sys
    out = tmp_path / "power.json"
    bench = Path(__file__).resolve().parents[1] / "bench" / "power_gpu.py"
    done = subprocess.run([sys.executable, str(bench), "--loads", "bf16:1,bf16:2048", "--heavy", "bf16:2048",
                           "--probes", "bf16:1", "--hold-s", "0.6", "--heavy-s", "0.5", "--probe-s", "0.1",
                           "--idle-s", "0.3", "--out", str(out)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["errors"] == [] and [ld["M"] for ld in d["loads"]] == [1, 2048]
    for ld in d["loads"]:
        assert ld["power_mean_w"] > 0 and len(ld["replay_ms"]) > 10 and ld["sm_clock_median_hz"] > 0
    assert d["loads"][1]["tflops"] > 10 * d["loads"][0]["tflops"]       # the GEMM is compute-heavy, the GEMV not
    assert len(d["recovery"]) == 1 and d["recovery"][0]["series"]
    from harness.profiles.detection import detect
    pid = detect().profile.id
    res = CliRunner().invoke(calibrate_cli, ["--power-from", str(out), "--profile", pid, "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert len(load_power(tmp_path / "p.json").loads) == 2
