"""Crafted profiles and run folders for the advise tests: figures chosen so the expected ranking is known."""
from __future__ import annotations

from pathlib import Path

import yaml

from harness.records import Record, append_jsonl

REAL = "smollm2-135m"          # real weights: quality figures count
GPU = {"id": "gpu-a", "name": "Test GPU A", "vendor": "Test", "class": "enterprise", "memory_bytes": 80_000_000_000,
       "memory_type": "HBM", "bandwidth_bytes_per_s": 3_000_000_000_000,
       "peak_dense_tflops": {"fp32": 60, "fp16": 1000, "bf16": 1000, "fp8": 2000, "int8": 2000, "int4": None, "fp4": None},
       "peak_sparse_tflops": {}, "sparse_2to4_speedup": None, "npu": None, "power_w": 700, "compute_capability": "9.0",
       "features": {"fp8": True, "int8": True, "int4_weight_kernels": True, "sparse_2to4": False},
       "software": [], "onnxruntime_eps": [], "nvml_names": [], "sources": ["test"], "notes": ""}


def write_profiles(root: Path, **overrides) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    small = dict(GPU, id="dev-b", name="Test device B", **{"class": "edge"}, memory_bytes=8_000_000_000,
                 bandwidth_bytes_per_s=100_000_000_000, power_w=20, compute_capability="8.7")
    for p in (dict(GPU, **overrides), small):
        (root / f"{p['id']}.yaml").write_text(yaml.safe_dump(p), encoding="utf-8")
    return root


def record(variant="baseline", batch=1, *, model=REAL, profile="gpu-a", tok_s=100.0, kl=None, top1=None,
           verdict="", tpot=(0.010, 0.012, 0.015), prefill=(0.02, 0.02, 0.03), prompt=128, new=32, j=0.5,
           backend="pytorch", status="ok") -> Record:
    return Record(model=model, variant=variant, backend=backend, profile=profile, batch_size=batch,
                  prompt_tokens=prompt, new_tokens=new, status=status, decode_tok_s=tok_s if status == "ok" else None,
                  ttft_s=sorted(prefill)[len(prefill) // 2], prefill_s_samples=list(prefill), tpot_p50_s=tpot[0],
                  tpot_p90_s=tpot[1], tpot_p99_s=tpot[2], tpot_s_samples=[tpot[0]] * 10, j_per_token_decode=j,
                  energy_source="nvml_counter", weight_bytes=270_000_000, peak_vram_bytes=1_000_000_000,
                  kl_mean=kl, top1_agreement=top1, quality_verdict=verdict, run_id="crafted")


def write_run(path: Path, records: list[Record]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for r in records:
        append_jsonl(path / "records.jsonl", r)
    return path


def quality_run(path: Path) -> Path:
    """baseline, int8-wo (passes KL 0.05) and int4-wo (faster and cheaper per token, fails KL) on gpu-a."""
    return write_run(path, [
        record("baseline", tok_s=100.0, kl=0.0, top1=1.0, verdict="pass", j=1.0),
        record("int8-wo", tok_s=150.0, kl=0.01, top1=0.97, verdict="pass", j=0.7),
        record("int4-wo", tok_s=220.0, kl=0.30, top1=0.70, verdict="fail", j=0.4),
    ])
