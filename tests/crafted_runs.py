"""Run folders written with harness.records for the view tests (report HTML, charts, history,
notebook): real Record envelopes, figures chosen so that the expected chart content is known."""
from __future__ import annotations

import json
from pathlib import Path

from harness.records import EnergyDetail, Record, append_jsonl

GPU_PROV = {"gpus": ["NVIDIA H200"], "cpu": "Xeon", "git_commit": "abc123", "utc_time": "2026-01-01T00:00:00"}
CPU_PROV = {"cpu": "AMD EPYC <test & co>", "git_commit": "abc123", "utc_time": "2026-01-01T00:00:00"}

# variant -> (decode tok/s at batch 1, kl_mean, verdict, J/token decode); fp8-wo is dominated by int8-wo
VARIANTS = {"baseline": (100.0, 0.0, "pass", 1.0), "int8-wo": (150.0, 0.01, "pass", 0.8),
            "int4-wo": (220.0, 0.30, "fail", 0.6), "fp8-wo": (120.0, 0.05, "pass", 0.9)}


def make_records(profile="h200-sxm-141gb", prov=GPU_PROV, run_id="run-a", model="m<1>", batches=(1, 8, 32),
                 scale=1.0, repetitions=1, unsupported=("sparse-2:4",), stdev=1.0) -> list[Record]:
    out = []
    for variant, (tok, kl, verdict, j) in VARIANTS.items():
        for b in batches:
            for rep in range(repetitions):
                out.append(Record(
                    model=model, variant=variant, backend="pytorch", profile=profile, batch_size=b, prompt_tokens=16,
                    new_tokens=8, decode_tok_s=tok * b * scale * (1 + 0.01 * rep), decode_tok_s_stdev=stdev,
                    ttft_s=0.01 * b, prefill_tok_s=1000.0, tpot_p50_s=1 / tok, tpot_p99_s=1.2 / tok,
                    tpot_s_samples=[1 / tok, 1.1 / tok, 0.9 / tok], weight_bytes=int(2e8 * (0.5 if "int" in variant else 1)),
                    peak_vram_bytes=int(6e8) if prov.get("gpus") else None, kv_cache_bytes=int(1e8 * b / 32),
                    peak_rss_bytes=int(1e9), j_per_token_decode=j, j_per_token_prefill=j / 10,
                    energy_source="nvml_counter" if prov.get("gpus") else "estimate",
                    kl_mean=kl if variant != "baseline" else None, quality_verdict=verdict if variant != "baseline" else "",
                    repetition=rep, run_id=run_id, provenance=dict(prov),
                    energy=EnergyDetail(power_timeline={"t_s": [0.0, 0.5, 1.0], "power_w": [300.0, 420.0, 410.0],
                                                        "rate_hz": 20.0}) if b == 1 and prov.get("gpus") else EnergyDetail()))
    for variant in unsupported:
        out.append(Record(model=model, variant=variant, backend="pytorch", profile=profile, batch_size=batches[0],
                          prompt_tokens=16, new_tokens=8, status="unsupported", reason="needs <sm80> & cutlass",
                          run_id=run_id, provenance=dict(prov)))
    return out


def write_run(path: Path, records: list[Record], profile="h200-sxm-141gb") -> Path:
    path.mkdir(parents=True)
    for r in records:
        append_jsonl(path / "records.jsonl", r)
    prov = records[0].provenance if records else {}
    (path / "run.json").write_text(json.dumps({"run_id": path.name, "profile": profile, "provenance": prov}))
    return path
