"""harness.microbench / `harness import-microbench`: pytest-benchmark JSON -> Records.

Collected by the normal test run (test_*.py); the benchmarks themselves (bench_*.py) are not.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.microbench import import_microbench
from harness.microbench import records_from_benchmark_json
from harness.records import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _bench(name, info, data, iterations=1):
    mean = sum(data) / len(data)
    return {"group": None, "name": name, "fullname": f"tests/microbench/bench_linear.py::{name}", "params": {},
            "extra_info": info, "options": {"timer": "perf_counter"},
            "stats": {"min": min(data), "max": max(data), "mean": mean, "stddev": 0.0, "rounds": len(data),
                      "median": sorted(data)[len(data) // 2], "iqr": 0.0, "ops": 1 / mean, "total": sum(data),
                      "data": data, "iterations": iterations}}


def _doc():
    cpu = {"variant": "int4-wo", "shape": "tiny:up_proj", "preset": "tiny", "layer": "up_proj", "in_features": 256,
           "out_features": 768, "m": 512, "kernel": "aten._weight_int4pack_mm_for_cpu g128", "device": "cpu",
           "dtype": "float32", "weight_bytes": 102000, "calls_per_round": 1, "timing_source": "perf_counter",
           "decode_path": "eager", "rel_err_vs_dense": 0.08}
    gpu = {"variant": "fp8-dq", "shape": "llama-3.1-8b:up_proj", "m": 1, "kernel": "torchao Float8 -> Float8Tensor x1",
           "device": "cuda:0 NVIDIA H100 80GB HBM3", "dtype": "bfloat16", "calls_per_round": 20,
           "timing_source": "cuda_events", "decode_path": "cuda-graph", "event_s_per_call": [40e-6, 42e-6, 44e-6]}
    return {"machine_info": {"node": "vm", "python_version": "3.11.7", "cpu": {"brand_raw": "AMD EPYC"}},
            "commit_info": {"id": "abc123", "dirty": True}, "datetime": "2026-11-22T05:00:00+00:00", "version": "5.3.1",
            "benchmarks": [_bench("test_linear[int4-wo-tiny:up_proj-M512]", cpu, [0.002, 0.002, 0.004], iterations=2),
                           _bench("test_linear[fp8-dq-llama-3.1-8b:up_proj-M1]", gpu, [0.001, 0.001, 0.001])]}


def test_mapping_from_hand_written_json(tmp_path):
    p = tmp_path / "mb.json"
    p.write_text(json.dumps(_doc()))
    cpu, gpu = records_from_benchmark_json(p, profile="h100-sxm-80gb")
    assert (cpu.backend, cpu.model, cpu.variant, cpu.batch_size, cpu.prompt_tokens, cpu.new_tokens) == \
        ("microbench", "tiny:up_proj", "int4-wo", 512, 0, 0)
    assert cpu.profile == "h100-sxm-80gb" and cpu.kernel.startswith("aten._weight_int4pack_mm_for_cpu")
    assert cpu.decode_tok_s == pytest.approx(512 / (0.008 / 3))
    assert cpu.decode_s_samples == [0.002, 0.002, 0.004] and cpu.repeats == 3
    assert cpu.timed_s == pytest.approx(0.016)               # per-iteration total x 2 iterations
    assert cpu.weight_bytes == 102000 and cpu.extra["phase"] == "prefill" and cpu.extra["in_features"] == 256
    assert cpu.provenance["git_commit"] == "abc123" and cpu.timing_source == "perf_counter"
    # CUDA-event figures win over the wall clock (1 ms per 20-call replay would be 50 us per call)
    assert gpu.decode_tok_s == pytest.approx(1 / 42e-6) and gpu.timing_source == "cuda_events"
    assert gpu.decode_path == "cuda-graph" and gpu.extra["phase"] == "decode"
    assert gpu.decode_tok_s_stdev == pytest.approx(2e-6 / 42e-6 ** 2)


def test_bad_json_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"benchmarks": [{"name": "t", "extra_info": {}, "stats": {}}]}')
    with pytest.raises(ValueError, match="extra_info lacks"):
        records_from_benchmark_json(p)
    p.write_text("[]")
    with pytest.raises(ValueError, match="x.json"):
        records_from_benchmark_json(p)


def test_cli_writes_every_view_and_appends(tmp_path):
    p = tmp_path / "microbench.json"
    p.write_text(json.dumps(_doc()))
    runner = CliRunner()
    for _ in range(2):
        res = runner.invoke(import_microbench, [str(p), "--out", str(tmp_path / "out")])
        assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert {f.name for f in out.iterdir()} >= {"records.jsonl", "records.csv", "records.parquet"}
    assert len(read_jsonl(out / "records.jsonl")) == 4
    import pandas as pd
    assert len(pd.read_parquet(out / "records.parquet")) == 4
    res = runner.invoke(import_microbench, [str(p)])          # default: a folder named after the JSON
    assert res.exit_code == 0 and (tmp_path / "microbench" / "records.jsonl").is_file()


def test_real_benchmark_run_imports(tmp_path):
    """Two real benchmarks (tiny shape, M=1) through pytest-benchmark, then the import."""
    out = tmp_path / "mb.json"
    cmd = [sys.executable, "-m", "pytest", "tests/microbench", "--benchmark-only", f"--benchmark-json={out}",
           "-q", "-p", "no:cacheprovider", "-k", "tiny and up_proj and M1 and (baseline or int4-wo)"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    recs = {r.variant: r for r in records_from_benchmark_json(out)}
    assert set(recs) == {"baseline", "int4-wo"}
    assert recs["int4-wo"].weight_bytes < recs["baseline"].weight_bytes / 6
    assert "Int4PackedLinearCPU" in recs["int4-wo"].kernel and recs["baseline"].decode_tok_s > 0
    assert recs["int4-wo"].model == "tiny:up_proj" and recs["int4-wo"].batch_size == 1
