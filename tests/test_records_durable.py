"""Durable records: whole-line appends, a full disk, torn last lines, views written atomically."""
import errno
import json
import os
import pathlib
import warnings

import pandas as pd
import pytest

from harness.records import Record, RecordsWriteError, append_jsonl, load_records, read_jsonl, to_envelope, write_tables
from harness.report import write_charts, write_report


def _rec(**kw):
    base = dict(model="m", variant="baseline", backend="pytorch", profile="p", batch_size=1, prompt_tokens=8,
                new_tokens=4, decode_tok_s=10.0)
    base.update(kw)
    return Record(**base)


def _jsonl(tmp_path, n=2):
    path = tmp_path / "records.jsonl"
    for b in range(1, n + 1):
        append_jsonl(path, _rec(batch_size=b))
    return path


def test_one_write_call_per_record_and_fsync(tmp_path, monkeypatch):
    calls = {"write": 0, "fsync": 0}
    real_write, real_fsync = os.write, os.fsync

    def write(fd, data):
        calls["write"] += 1
        return real_write(fd, data)

    def fsync(fd):
        calls["fsync"] += 1
        return real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    append_jsonl(tmp_path / "records.jsonl", _rec(tpot_s_samples=[0.1] * 5000))
    assert calls == {"write": 1, "fsync": 1}
    assert [r.tpot_s_samples[:1] for r in read_jsonl(tmp_path / "records.jsonl")] == [[0.1]]


@pytest.mark.parametrize("how", ["enospc", "short", "fsync"])
def test_a_full_disk_names_the_file_and_leaves_no_partial_line(tmp_path, monkeypatch, how):
    path = _jsonl(tmp_path)
    before = path.read_bytes()
    real_write = os.write

    def write(fd, data):
        if how == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[: len(data) // 2])   # the disk filled up halfway through

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync" if how == "fsync" else "write", fsync if how == "fsync" else write)
    with pytest.raises(RecordsWriteError) as e:
        append_jsonl(path, _rec(batch_size=9))
    assert str(path) in str(e.value) and "disk is full" in str(e.value)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before                     # rolled back to the previous size
    append_jsonl(path, _rec(batch_size=3))                 # and the file still takes records
    assert [r.batch_size for r in load_records(tmp_path)] == [1, 2, 3]


def test_other_os_errors_are_named_too(tmp_path):
    with pytest.raises(RecordsWriteError, match="no-such-folder.*OS refused"):
        append_jsonl(tmp_path / "no-such-folder" / "records.jsonl", _rec())


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = _jsonl(tmp_path)
    torn = json.dumps(to_envelope(_rec(batch_size=7)))[:40]
    with open(path, "a") as f:
        f.write(torn)
    with pytest.warns(UserWarning, match=r"records.jsonl:3: skipping a torn last line"):
        assert [r.batch_size for r in read_jsonl(path)] == [1, 2]


def test_an_invalid_line_elsewhere_is_an_error_naming_file_and_line(tmp_path):
    path = _jsonl(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2: not a valid record"):
        read_jsonl(path)
    # a last line that is JSON but not a record is not a torn write: still an error
    path.write_text("\n".join([lines[0], '{"status": "great"}']) + "\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2"):
        read_jsonl(path)


def test_appending_after_a_torn_line_cuts_it_off(tmp_path):
    """A resumed run appends to a file whose last write was torn: the fragment must not glue itself
    to the next record (which would turn both into an invalid line in the middle)."""
    path = _jsonl(tmp_path)
    with open(path, "a") as f:
        f.write('{"schema_version": 3, "mod')
    with pytest.warns(UserWarning, match=r"records.jsonl: cutting off a torn last line"):
        append_jsonl(path, _rec(batch_size=5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.batch_size for r in read_jsonl(path)] == [1, 2, 5]


def test_a_whole_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(to_envelope(_rec(batch_size=1))))       # hand-written, no trailing newline
    append_jsonl(path, _rec(batch_size=2))
    assert [r.batch_size for r in read_jsonl(path)] == [1, 2]


def _fail_halfway(monkeypatch, cls, name):
    real = getattr(cls, name)

    def broken(self, target, *a, **kw):
        pathlib.Path(target).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cls, name, broken)
    return real


def test_write_tables_never_leaves_a_truncated_table(tmp_path, monkeypatch):
    recs = load_records(_jsonl(tmp_path))
    write_tables(recs, tmp_path)
    good = (tmp_path / "records.parquet").read_bytes()
    _fail_halfway(monkeypatch, pd.DataFrame, "to_parquet")
    with pytest.raises(RecordsWriteError, match=r"records.parquet.*disk is full"):
        write_tables(recs + [_rec(batch_size=4)], tmp_path)
    assert (tmp_path / "records.parquet").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.csv", "records.jsonl", "records.parquet"]


def test_write_report_and_charts_fail_loudly_and_keep_the_old_files(tmp_path, monkeypatch):
    recs = load_records(_jsonl(tmp_path))
    old = write_report(recs, {}, tmp_path).read_text()
    chart = write_charts(recs, tmp_path)[0]
    old_png = chart.read_bytes()
    real_write_text = pathlib.Path.write_text

    def write_text(self, data, *a, **kw):
        real_write_text(self, data[:10], *a, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    with pytest.raises(RecordsWriteError, match=r"report.md.*disk is full"):
        write_report(recs + [_rec(batch_size=4)], {}, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "report.md").read_text() == old

    import matplotlib.figure

    _fail_halfway(monkeypatch, matplotlib.figure.Figure, "savefig")
    with pytest.raises(RecordsWriteError, match=r"decode_tok_s.png"):
        write_charts(recs, tmp_path)
    assert chart.read_bytes() == old_png
    assert sorted(p.name for p in chart.parent.iterdir()) == [f"{n}.{x}" for n in ("decode_tok_s", "decode_vs_batch", "memory")
                                                             for x in ("png", "svg")]
