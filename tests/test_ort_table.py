"""bench/ort_table.py: the ORT benchmark's table, from a run folder's records (medians over repetitions)."""
import importlib.util
from pathlib import Path

from harness.records import Record, append_jsonl

_SPEC = importlib.util.spec_from_file_location("ort_table", Path(__file__).parent.parent / "bench" / "ort_table.py")
ort_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ort_table)


def _r(backend, variant, rep, tok, **kw):
    return Record(model="smollm2-135m", variant=variant, backend=backend, profile="p", batch_size=1, prompt_tokens=128,
                  new_tokens=64, repetition=rep, decode_tok_s=tok, kernel="k; aten ops: x", **kw)


def test_table_medians_ratios_and_a_missing_row(tmp_path, capsys):
    recs = [_r("ort", "baseline", i, t, kl_mean=1e-8, top1_agreement=1.0, quality_verdict="pass")
            for i, t in enumerate((20.0, 10.0, 30.0))]
    recs += [_r("ort", "int4-wo", i, t, kl_mean=0.7) for i, t in enumerate((60.0, 50.0, 40.0))]
    recs += [_r("pytorch", "int4-wo", i, t, extra={"foreign_load": {"flags": ["busy"]}} if i else {})
             for i, t in enumerate((25.0, 25.0, 25.0))]
    recs.append(_r("pytorch", "baseline", 0, None, status="failed", reason="boom"))
    for r in recs:
        append_jsonl(tmp_path / "records.jsonl", r)
    assert ort_table.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| ort | int4-wo | 3 | 50.0 (40.0-60.0) | 2.50x | 0.7 |" in out        # median 50 / ORT fp32 median 20
    assert "| pytorch | int4-wo | 3 | 25.0 (25.0-25.0) | — | — | — | — | 2 | k |" in out   # no ok torch baseline
    assert "| pytorch | baseline | 0 | failed: boom |" in out and "| ort | int8-dq | 0 | not in run |" in out
    assert "ORT int4 / ORT fp32 decode tok/s: 2.50x" in out and "ORT int4 / torch int4 decode tok/s: 2.00x" in out


def test_bad_folder_is_exit_2(tmp_path):
    assert ort_table.main([str(tmp_path)]) == 2
