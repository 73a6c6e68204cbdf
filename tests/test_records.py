import json

import pytest

from harness.records import (SCHEMA_VERSION, Record, append_jsonl, from_envelope, load_records, to_envelope,
                             to_frame, write_tables)


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
