"""Typed record sections (schema 3): round trips, the 2 -> 3 upgrade, unknown keys."""
import json

import pandas as pd
import pytest

from harness.records import (SCHEMA_VERSION, BandwidthDetail, EnergyDetail, EngineInfo, MemoryDetail, QualityDetail,
                             Record, VramBudgetDetail, append_jsonl, from_envelope, load_records, sections_from_extra,
                             to_envelope, write_tables)


def _rec(**kw):
    base = dict(model="m", variant="baseline", backend="pytorch", profile="p", batch_size=1, prompt_tokens=8,
                new_tokens=4)
    base.update(kw)
    return Record(**base)


# the `extra` of a GPU record as torch_cell, gpu_meters, records_fill and quality wrote it in schema 2
V2_EXTRA = {
    "rss_method": "psutil RSS", "definitions": "ttft = ...", "first_row_tokens": [1, 2, 3],
    "apply_s": 1.5, "load_s": 2.5, "calibration_tokens": 4096, "fused_projections": True,
    "engine_notes": ["eager: no"], "coordinate_descent_tuning": None, "engine_reused": False,
    "compile_mode": "default",
    "energy_net": {"basis": "net (idle 100 W subtracted)", "j_per_token_decode": 0.5, "j_per_token_prefill": 0.01},
    "j_per_output_token": 0.6, "idle_method": "NVML power, 3 s idle",
    "power_timeline": {"source": "nvml", "t_s": [0.0, 0.05], "power_w": [300.0, 310.0], "rate_hz": 20.0},
    "peak_vram_source": "nvml_process",
    "vram": {"torch_max_allocated_bytes": 100, "torch_max_reserved_bytes": 120, "process_bytes": 150,
             "notes": ["n1"]},
    "vram_budget": {"expected_bytes": 140, "weight_bytes": 80, "kv_cache_bytes": 20, "activation_bytes": 10,
                    "runtime_bytes": 30, "peak_bytes": 150, "ratio": 150 / 140, "within_tolerance": True,
                    "tolerance": 0.1, "method": "expected = ..."},
    "copy_bandwidth_bytes_per_s": 3e12, "copy_bandwidth_method": "d2d copy", "bandwidth_share_of_profile_peak": 0.7,
    "decode_bytes_per_step": 1e9, "decode_context_for_kv_bytes": 132.0, "prefill_flop_per_s": 1e14,
    "mfu_format": "bf16",
    "quality": {"reason": "kl ok", "tokens": 512, "forward_tokens": 700, "eval_s": 3.0, "baseline_perplexity": 9.0,
                "window": 256, "stride": 128, "reference_dtype": "bfloat16", "kl": "nats", "note": "",
                "future_key": 1},
    "traceback": "none",
}


def _check_upgraded(r: Record) -> None:
    assert r.engine == EngineInfo(load_s=2.5, apply_s=1.5, calibration_tokens=4096, fused_projections=True,
                                  compile_mode="default", coordinate_descent_tuning=None, reused=False,
                                  notes=("eager: no",))
    assert r.energy.net_j_per_token_decode == 0.5 and r.energy.net_basis.startswith("net")
    assert r.energy.j_per_output_token == 0.6 and r.energy.power_timeline["power_w"] == [300.0, 310.0]
    assert r.memory.nvml_process_bytes == 150 and r.memory.vram_notes == ("n1",)
    assert isinstance(r.memory.budget, VramBudgetDetail) and r.memory.budget.expected_bytes == 140
    assert r.bandwidth.share_of_profile_peak == 0.7 and r.bandwidth.decode_context_tokens == 132.0
    assert r.quality == QualityDetail(reason="kl ok", scored_tokens=512, forward_tokens=700, eval_s=3.0,
                                      baseline_perplexity=9.0, window_tokens=256, stride_tokens=128,
                                      reference_dtype="bfloat16", kl_definition="nats", note="")
    # what no section knows stays in extra, the section's leftovers under their old key
    assert r.extra == {"definitions": "ttft = ...", "first_row_tokens": [1, 2, 3], "traceback": "none",
                       "quality": {"future_key": 1}}


def test_schema_2_file_upgrades_to_3(tmp_path):
    env = {k: v for k, v in to_envelope(_rec()).items() if k not in ("engine", "energy", "memory", "bandwidth",
                                                                       "quality")}
    env.update(schema_version=2, extra=V2_EXTRA)
    (tmp_path / "records.jsonl").write_text(json.dumps(env) + "\n")
    (r,) = load_records(tmp_path)
    _check_upgraded(r)
    # and written back it is a version-3 envelope that reads the same
    assert to_envelope(r)["schema_version"] == SCHEMA_VERSION == 3
    assert from_envelope(json.loads(json.dumps(to_envelope(r)))) == r


def test_producer_extra_fills_the_sections():
    r = _rec(**sections_from_extra(V2_EXTRA))
    _check_upgraded(r)


def test_empty_energy_net_leaves_fields_unknown():
    kw = sections_from_extra({"energy_net": None, "idle_method": "x"})
    assert kw["energy"] == EnergyDetail(idle_power_method="x") and kw["extra"] == {}
    assert kw["energy"].net_j_per_token_decode is None      # unknown, never 0


def test_sections_round_trip_through_jsonl_and_tables(tmp_path):
    r = _rec(engine=EngineInfo(load_s=1.0, notes=("a", "b")), energy=EnergyDetail(net_j_per_token_decode=0.25),
             memory=MemoryDetail(rss_method="psutil", budget=VramBudgetDetail(expected_bytes=10, ratio=1.2)),
             bandwidth=BandwidthDetail(mfu_format="fp8"), quality=QualityDetail(reason="ok"))
    append_jsonl(tmp_path / "records.jsonl", r)
    append_jsonl(tmp_path / "records.jsonl", _rec(status="failed", reason="boom"))
    back = load_records(tmp_path)
    assert back[0] == r and back[1].engine == EngineInfo() and back[1].memory.budget is None
    line = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[0])
    assert line["memory"]["budget"]["ratio"] == 1.2 and line["engine"]["notes"] == ["a", "b"]   # nested objects
    write_tables(back, tmp_path)
    for df in (pd.read_parquet(tmp_path / "records.parquet"), pd.read_csv(tmp_path / "records.csv")):
        assert json.loads(df.loc[0, "memory"])["budget"]["expected_bytes"] == 10      # JSON strings, flat view
        assert json.loads(df.loc[0, "energy"])["net_j_per_token_decode"] == 0.25
        assert json.loads(df.loc[1, "energy"])["net_j_per_token_decode"] is None


def test_unknown_section_keys_land_in_extra_and_bad_sections_are_refused():
    env = to_envelope(_rec())
    env["engine"] = dict(env["engine"], load_s=3.0, warp_factor=9)
    r = from_envelope(env)
    assert r.engine.load_s == 3.0 and r.extra == {"engine.warp_factor": 9}
    with pytest.raises(ValueError, match="section 'energy'"):
        from_envelope(dict(to_envelope(_rec()), energy=[1, 2]))
    with pytest.raises(TypeError, match="EngineInfo"):
        _rec(engine={"load_s": 1.0})


def test_report_reads_the_typed_sections():
    from harness.report.markdown import render_report

    r = _rec(power_mean_w=400.0, peak_vram_bytes=150_000_000_000, j_per_token_decode=1.5,
             energy=EnergyDetail(net_j_per_token_decode=0.75),
             memory=MemoryDetail(rss_method="psutil every 5 ms",
                                 budget=VramBudgetDetail(expected_bytes=100_000_000_000, ratio=1.5,
                                                         within_tolerance=False)),
             quality_verdict="fail", quality=QualityDetail(reason="kl too high", scored_tokens=512, window_tokens=256,
                                                            stride_tokens=128, reference_dtype="bfloat16"))
    text = render_report([r], {"run_id": "x"})
    (energy_row,) = [ln for ln in text.splitlines() if ln.startswith("| m | baseline | pytorch | 1 | 8 | 1.5 |")]
    assert "| 0.75 |" in energy_row and "1.50x of 100.00 **over**" in energy_row
    assert "peak RSS: psutil every 5 ms." in text and "| kl too high |" in text
    assert "512 scored positions" in text and "window 256, stride 128" in text
