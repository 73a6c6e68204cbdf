"""The ORT benchmark's table from a run folder: ORT int4 vs ORT fp32 vs torch int4 (and int8-dq), decode
tok/s over the run's repetitions and KL against the torch fp32 baseline, all from the same run.

Usage: python bench/ort_table.py RUN_DIR. Reads records.jsonl only (no torch). Decode tok/s is the median
of the repetitions' own decode tok/s (each a cell measured on the same prepared engine), with their
min-max; KL, top-1 and the verdict come from the cell's quality evaluation (one per cell, not per
repetition). A repetition measured while other processes loaded the machine is counted in 'busy'.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from harness.report.fmt import NA, num, sig
from harness.run_folder import read_records

ROWS = [("ort", "baseline"), ("ort", "int8-dq"), ("ort", "int4-wo"),
        ("pytorch", "baseline"), ("pytorch", "int8-dq"), ("pytorch", "int4-wo"),
        ("llama.cpp", "baseline"), ("llama.cpp", "q4_k_m")]


def _median(recs, attr):
    vals = [getattr(r, attr) for r in recs if getattr(r, attr) is not None]
    return statistics.median(vals) if vals else None


def table(records) -> list[str]:
    by: dict[tuple[str, str], list] = {}
    for r in records:
        if r.status == "ok" and r.meters:
            by.setdefault((r.backend, r.variant), []).append(r)
    med = {k: _median(v, "decode_tok_s") for k, v in by.items()}
    out = ["| backend | variant | reps | decode tok/s median (min-max) | vs same backend fp32 | mean KL | top-1 | "
           "verdict | busy reps | kernel |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in ROWS:
        recs = by.get(key, [])
        if not recs:
            bad = [r for r in records if (r.backend, r.variant) == key]
            if key[0] == "llama.cpp" and not bad:
                continue   # a run without the llama.cpp backend (bench/ort_cpu.sh without llama-cpp-python)
            out.append(f"| {key[0]} | {key[1]} | 0 | {bad[0].status + ': ' + bad[0].reason[:80] if bad else 'not in run'}"
                       " | | | | | | |")
            continue
        tok = [r.decode_tok_s for r in recs if r.decode_tok_s is not None]
        base = med.get((key[0], "baseline"))
        ratio = f"{med[key] / base:.2f}x" if med[key] is not None and base else NA
        q = recs[0]
        busy = sum(bool((r.extra.get("foreign_load") or {}).get("flags")) for r in recs)
        out.append(f"| {key[0]} | {key[1]} | {len(recs)} | {num(med[key])} ({num(min(tok))}-{num(max(tok))}) | {ratio} | "
                   f"{sig(q.kl_mean)} | {NA if q.top1_agreement is None else f'{q.top1_agreement:.1%}'} | "
                   f"{q.quality_verdict or NA} | {busy} | {q.kernel.split('; aten ops')[0]} |")
    a, b, c = med.get(("ort", "int4-wo")), med.get(("ort", "baseline")), med.get(("pytorch", "int4-wo"))
    if a and b:
        out.append(f"\nORT int4 / ORT fp32 decode tok/s: {a / b:.2f}x")
    if a and c:
        out.append(f"ORT int4 / torch int4 decode tok/s: {a / c:.2f}x")
    d = med.get(("llama.cpp", "q4_k_m"))
    if d and c:
        out.append(f"llama.cpp Q4_K_M / torch int4 decode tok/s: {d / c:.2f}x")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "records.jsonl").is_file():
        print("usage: python bench/ort_table.py RUN_DIR (a folder with records.jsonl)", file=sys.stderr)
        return 2
    print("\n".join(table(read_records(Path(argv[0]), echo=lambda s: print(s, file=sys.stderr)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
