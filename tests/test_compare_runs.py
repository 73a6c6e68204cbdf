"""`harness compare` across runs: failed and vanished cells, new cells, flags, and the output formats."""
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from harness.cli.views import compare as compare_cmd
from harness.records import EngineInfo, Record, append_jsonl
from harness.report.compare import CompareError, compare, parse_thresholds, summary

PROV = {"git_commit": "a" * 40, "git_dirty": False, "versions": {"torch": "2.5.1"}}


def _r(**kw):
    base = dict(model="m", variant="baseline", backend="pytorch", profile="h100-sxm-80gb", batch_size=1,
                prompt_tokens=8, new_tokens=4, decode_tok_s=100.0, decode_tok_s_stdev=0.5, provenance=PROV)
    base.update(kw)
    return Record(**base)


def _run(tmp_path, name, *records):
    d = tmp_path / name
    d.mkdir()
    for r in records:
        append_jsonl(d / "records.jsonl", r)
    return str(d)


def _invoke(*args):
    return CliRunner().invoke(compare_cmd, list(args))


T = parse_thresholds("decode_tok_s:-5%")


def test_ok_before_and_failed_after_is_a_regression_row(tmp_path):
    ds = compare([_r(), _r(batch_size=2)], [_r(), _r(batch_size=2, status="failed", reason="CUDA error: boom")], T)
    (bad,) = [d for d in ds if d.status == "regression"]
    assert bad.metric == "status" and (bad.a, bad.b) == ("ok", "failed") and "boom" in bad.note
    a = _run(tmp_path, "a", _r(), _r(batch_size=2))
    b = _run(tmp_path, "b", _r(), _r(batch_size=2, status="failed", reason="CUDA error: boom"))
    res = _invoke(a, b)
    assert res.exit_code == 1
    row = [line for line in res.stdout.splitlines() if "| 2 |" in line]
    assert len(row) == 1 and "**regression** (failed: CUDA error: boom)" in row[0] and "| status |" in row[0]
    assert "1 regression(s)" in res.stdout


def test_a_vanished_cell_is_a_regression_and_a_new_one_is_not(tmp_path):
    a = _run(tmp_path, "a", _r(), _r(batch_size=2))
    b = _run(tmp_path, "b", _r(), _r(batch_size=4))
    res = _invoke(a, b)
    assert res.exit_code == 1
    assert "**regression** (not in AFTER)" in res.stdout and "**new**" in res.stdout
    ds = compare([_r()], [_r(), _r(batch_size=4)], T)
    assert [d.status for d in ds] == ["unchanged", "new"]
    assert _invoke(_run(tmp_path, "c", _r()), _run(tmp_path, "d", _r(), _r(batch_size=4))).exit_code == 0


def test_failed_cells_that_stay_failed_or_recover_are_not_regressions():
    before = [_r(status="failed", reason="x"), _r(batch_size=2, status="does-not-fit", reason="y"),
              _r(batch_size=3, status="failed", reason="z"), _r(batch_size=4)]
    after = [_r(status="failed", reason="x"), _r(batch_size=2), _r(batch_size=4)]
    assert [d.status for d in compare(before, after, T)] == ["still-failing", "fixed", "dropped", "unchanged"]


def test_no_common_cell_is_exit_2(tmp_path):
    with pytest.raises(CompareError, match="no cell in common"):
        compare([_r()], [_r(model="other")], T)
    res = _invoke(_run(tmp_path, "a", _r()), _run(tmp_path, "b", _r(model="other")))
    assert res.exit_code == 2 and "no cell in common" in res.stderr


def test_profile_is_matched_across_and_said_loudly(tmp_path):
    ds = compare([_r()], [_r(profile="h200-sxm-141gb", decode_tok_s=150.0)], T)
    (d,) = ds
    assert d.status == "improvement" and d.flags == ("profile",)
    (warning, count) = summary(ds)
    assert warning.startswith("WARNING: 1 cell(s) differ in hardware profile (h100-sxm-80gb -> h200-sxm-141gb)")
    assert "measure the hardware, not the code" in warning and count.startswith("0 regression")
    res = _invoke(_run(tmp_path, "a", _r()), _run(tmp_path, "b", _r(profile="h200-sxm-141gb")))
    assert "WARNING" in res.stdout and "h100-sxm-80gb -> h200-sxm-141gb" in res.stdout


def test_settings_commit_and_versions_are_flagged_per_row():
    other = dict(PROV, git_commit="b" * 40, versions={"torch": "2.6.0"})
    graph = dict(decode_path="compiled+cuda-graph", engine=EngineInfo(compile_mode="default"))
    ds = compare([_r(**graph), _r(batch_size=2), _r(batch_size=3)],
                 [_r(decode_path="eager", engine=EngineInfo(compile_mode="max-autotune"), provenance=other),
                  _r(batch_size=2), _r(batch_size=3, **graph)], T)
    assert ds[0].flags == ("settings", "commit", "versions") and ds[1].flags == ()
    assert "decode_path: 'compiled+cuda-graph' -> 'eager'" in ds[0].differences
    assert ds[2].flags == ()            # a setting the older record does not know is no difference
    lines = summary(ds)
    assert any("run settings (decode_path; engine.compile_mode)" in x and "'settings'" in x for x in lines)
    assert any(f"harness commit ({'a' * 12} -> {'b' * 12})" in x for x in lines)
    assert any("torch: 2.5.1 -> 2.6.0" in x for x in lines)


def test_json_and_junit_parse_back(tmp_path):
    a = _run(tmp_path, "a", _r(), _r(batch_size=2), _r(batch_size=3))
    b = _run(tmp_path, "b", _r(decode_tok_s=80.0), _r(batch_size=2, status="failed", reason="<oom> & more"),
             _r(batch_size=3, decode_tok_s=None))
    res = _invoke(a, b, "--format", "json")
    assert res.exit_code == 1
    rows = json.loads(res.stdout)
    assert [(r["batch_size"], r["metric"], r["status"]) for r in rows] == [
        (1, "decode_tok_s", "regression"), (2, "status", "regression"), (3, "decode_tok_s", "missing")]
    first = rows[0]
    assert {"metric", "before", "after", "change", "threshold", "status"} <= set(first)
    assert (first["before"], first["after"], first["threshold"]) == (100.0, 80.0, 0.05)
    assert first["change"] == pytest.approx(-0.2)
    assert "2 regression(s)" in res.stderr

    res = _invoke(a, b, "--format", "junit", "--fail-on", "decode_tok_s:-5%,ttft_s:+10%")
    assert res.exit_code == 1
    root = ET.fromstring(res.stdout.encode())
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) == 5       # 2 metrics x 2 ok cells + 1 status row
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["decode_tok_s", "status"] and suite.get("failures") == "2"
    assert "<oom> & more" in failed[1].find("failure").get("message")      # escaped by the XML writer, read back
    assert len([c for c in cases if c.find("skipped") is not None]) == int(suite.get("skipped")) == 3


def test_text_output_is_the_default_and_clean_runs_exit_0(tmp_path):
    a = _run(tmp_path, "a", _r())
    res = _invoke(a, _run(tmp_path, "b", _r(decode_tok_s=110.0)))
    assert res.exit_code == 0 and "**improvement**" in res.stdout and res.stdout.rstrip().endswith("0 regression(s) "
                                                                                                   "in 1 comparisons")
    assert _invoke(a, a, "--format", "yaml").exit_code == 2
