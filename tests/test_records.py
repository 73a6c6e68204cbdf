import json

import pytest

from harness.records import (SCHEMA_VERSION, Record, append_jsonl, from_envelope, load_records, primary,
                             to_envelope, to_frame, write_tables)


def _rec(**kw):
    base = dict(model="m", variant="baseline", backend="pytorch-cpu", profile="p", batch_size=1,
                prompt_tokens=8, new_tokens=4)
    base.update(kw)
    return Record(**base)


def test_round_trip_jsonl_and_tables(tmp_path):
    r = _rec(decode_tok_s=12.5, tpot_s_samples=[0.1, 0.2], energy_source="estimate", energy_j=1.0)
    append_jsonl(tmp_path / "records.jsonl", r)
    append_jsonl(tmp_path / "records.jsonl", _rec(status="failed", reason="boom"))
    back = load_records(tmp_path)
    assert back[0] == r and back[1].status == "failed" and back[1].decode_tok_s is None
    write_tables(back, tmp_path)
    import pandas as pd

    df = pd.read_parquet(tmp_path / "records.parquet")
    assert list(df.columns) == list(to_frame(back).columns)
    assert json.loads(df.loc[0, "tpot_s_samples"]) == [0.1, 0.2]
    assert pd.isna(df.loc[1, "decode_tok_s"])   # None stays missing, not 0


def test_envelope_versions():
    env = to_envelope(_rec())
    assert env["schema_version"] == SCHEMA_VERSION
    old = dict(env, schema_version=0, some_old_field=3)
    assert from_envelope(old).extra["some_old_field"] == 3
    with pytest.raises(ValueError, match="newer"):
        from_envelope(dict(env, schema_version=SCHEMA_VERSION + 1))


def test_invalid_status_and_energy_source():
    with pytest.raises(ValueError, match="status"):
        _rec(status="great")
    with pytest.raises(ValueError, match="energy_source"):
        _rec(energy_source="guess")


def test_version_1_records_upgrade_to_single_measurements():
    env = to_envelope(_rec())
    for k in ("repetition", "meters"):
        env.pop(k)
    on = from_envelope(dict(env, schema_version=1))
    assert on.repetition == 0 and on.meters is True
    off = from_envelope(dict(env, schema_version=1,
                             extra={"peak_vram_method": "torch.cuda.max_memory_allocated (meters off)"}))
    assert off.meters is False


def test_primary_keeps_the_first_meters_on_repetition_of_each_cell():
    recs = [_rec(repetition=0, meters=False, decode_tok_s=1.0), _rec(repetition=0, meters=True, decode_tok_s=2.0),
            _rec(repetition=1, meters=True, decode_tok_s=3.0), _rec(repetition=1, meters=False, decode_tok_s=4.0),
            _rec(batch_size=2, repetition=0, meters=False, decode_tok_s=5.0),
            _rec(batch_size=2, repetition=1, meters=False, decode_tok_s=6.0)]
    assert [r.decode_tok_s for r in primary(recs)] == [2.0, 5.0]
    # a plain run: every record is primary, in order; duplicates from merged runs all stay
    plain = [_rec(batch_size=b) for b in (1, 2, 1)]
    assert primary(plain) == plain
