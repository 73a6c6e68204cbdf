"""pytest-benchmark JSON (tests/microbench, `make microbench`) -> harness Records, so nightly
comparisons cover single kernels beside whole-model cells.

Mapping, one Record per benchmark entry (entries come from tests/microbench/bench_linear.py, whose
`extra_info` carries the cell):
  backend        "microbench"
  model          extra_info.shape, "<preset>:<layer>" (e.g. "llama-3.1-8b:up_proj"); in/out features in extra
  variant        extra_info.variant
  profile        the caller's (`--profile`), else "unknown": the JSON names no hardware profile
  batch_size     M, the activation rows of the call (1 = a decode step at batch 1, 512 = a prefill)
  prompt_tokens  0, new_tokens 0: one layer call, no generation
  device, dtype, kernel, weight_bytes, timing_source: from extra_info; decode_path "eager" or "cuda-graph"
  decode_tok_s   M / mean seconds per call: rows through the layer per second (for both M; no
                 prefill_tok_s, so one column compares across runs)
  decode_tok_s_stdev  M * stdev / mean^2 of the per-call seconds (first-order propagation)
  decode_s_samples    per-call seconds, one per round
  repeats        rounds; timed_s: wall seconds of all timed rounds (per-iteration total x iterations)
  extra          per-call mean/median/min/max/stdev/iqr seconds, rounds, iterations, calls per round,
                 relative error vs the dense layer, benchmark name, versions
Seconds per call: pytest-benchmark's per-iteration round times / calls_per_round, except where
timing_source is "cuda_events": then the CUDA-event time of each graph replay / calls per graph.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from harness.records import Record

BACKEND = "microbench"
REQUIRED = ("variant", "shape", "m", "kernel", "device")


def _per_call_samples(bench: dict) -> list[float]:
    info, st = bench["extra_info"], bench["stats"]
    if info.get("timing_source") == "cuda_events" and info.get("event_s_per_call"):
        return [float(s) for s in info["event_s_per_call"]]
    per_round = st.get("data") or [st["mean"]]
    return [float(s) / info.get("calls_per_round", 1) for s in per_round]


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def _provenance(doc: dict) -> dict:
    commit, machine = doc.get("commit_info") or {}, doc.get("machine_info") or {}
    return {"source": f"pytest-benchmark {doc.get('version', '?')}", "git_commit": commit.get("id"),
            "git_dirty": commit.get("dirty"), "python": machine.get("python_version"),
            "cpu": (machine.get("cpu") or {}).get("brand_raw"), "node": machine.get("node"),
            "utc_time": doc.get("datetime")}


def record_from_benchmark(bench: dict, doc: dict, profile: str) -> Record:
    info = bench.get("extra_info") or {}
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise ValueError(f"benchmark {bench.get('fullname', bench.get('name'))!r}: extra_info lacks "
                         f"{', '.join(missing)} (not written by tests/microbench?)")
    m = int(info["m"])
    samples = _per_call_samples(bench)
    mean = statistics.fmean(samples)
    stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
    q1, q3 = _quartiles(samples)
    st = bench["stats"]
    return Record(
        model=info["shape"], variant=info["variant"], backend=BACKEND, profile=profile,
        batch_size=m, prompt_tokens=0, new_tokens=0, device=info["device"], dtype=info.get("dtype", ""),
        kernel=info["kernel"], decode_path=info.get("decode_path", ""),
        prompt_source="random activations (torch.randn)",
        decode_tok_s=m / mean, decode_tok_s_stdev=m * stdev / mean ** 2,
        repeats=int(st.get("rounds", len(samples))),
        timed_s=float(st["total"]) * int(st.get("iterations", 1)) if "total" in st else None,
        timing_source=info.get("timing_source", "perf_counter"), weight_bytes=info.get("weight_bytes"),
        decode_s_samples=samples, run_id=f"microbench-{doc.get('datetime', '')}", provenance=_provenance(doc),
        extra={"benchmark": bench.get("fullname", bench.get("name")), "preset": info.get("preset"),
               "layer": info.get("layer"), "in_features": info.get("in_features"),
               "out_features": info.get("out_features"), "phase": "decode" if m == 1 else "prefill",
               "s_per_call_mean": mean, "s_per_call_median": statistics.median(samples),
               "s_per_call_min": min(samples), "s_per_call_max": max(samples), "s_per_call_stdev": stdev,
               "s_per_call_iqr": q3 - q1, "rounds": st.get("rounds"), "iterations": st.get("iterations"),
               "calls_per_round": info.get("calls_per_round", 1),
               "wall_s_per_round_mean": st.get("mean"), "rel_err_vs_dense": info.get("rel_err_vs_dense"),
               "threads": info.get("threads"), "versions": info.get("versions"),
               "definitions": "decode_tok_s = M / mean seconds per layer call; one call of one linear layer"})


def records_from_benchmark_json(path: str | Path, profile: str = "unknown") -> list[Record]:
    """One Record per benchmark in a pytest-benchmark JSON file (see the module docstring)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a readable pytest-benchmark JSON file: {e}") from e
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        raise ValueError(f"{p}: no 'benchmarks' list (not pytest-benchmark --benchmark-json output)")
    return [record_from_benchmark(b, doc, profile) for b in doc["benchmarks"]]
