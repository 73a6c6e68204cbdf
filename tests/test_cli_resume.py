"""`harness run --resume RUN_DIR [--retry-failed]`: exactly the cells without a record, never a duplicate,
the sweep definition from run.json."""
import json
import shutil

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.records import load_records
from harness.run_folder import cell_key

TINY = ["--model", "synthetic:tiny", "--variants", "baseline", "--quick", "--no-quality", "--warmup", "0",
        "--repeats", "1", "--min-seconds", "0", "--prompt-tokens", "8", "--new-tokens", "4", "--isolation", "none"]


def invoke(*args):
    return CliRunner().invoke(main, ["run", *args])


def spy_sweep(mp):
    """Wrap the real run_sweep, keeping the indices of the cells each call was given."""
    import harness.runner

    real, calls = harness.runner.run_sweep, []

    def spy(cells, *a, **k):
        calls.append([c.index for c in cells])
        return real(cells, *a, **k)

    mp.setattr(harness.runner, "run_sweep", spy)
    return calls


def fail_cell(mp, index: int, exc):
    from harness.pipeline.cell import GroupPipeline as GroupRunner

    real = GroupRunner.run

    def run(self, cell):
        if cell.index == index:
            raise exc
        return real(self, cell)

    mp.setattr(GroupRunner, "run", run)


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    with pytest.MonkeyPatch.context() as mp:
        fail_cell(mp, 1, KeyboardInterrupt())       # Ctrl-C during the second of three cells
        first = invoke(*TINY, "--batch", "1,2,3", "--out", str(out))
    before = json.loads((out / "run.json").read_text())
    head = (out / "records.jsonl").read_text()
    with open(out / "records.jsonl", "a") as f:       # and a record cut short by the crash
        f.write('{"schema_version": 2, "model": "synth')
    with pytest.MonkeyPatch.context() as mp:
        calls = spy_sweep(mp)
        resumed = invoke("--resume", str(out))
        again = invoke("--resume", str(out))
    return out, first, before, head, resumed, calls, again


def test_interrupted_run_keeps_its_records_and_definition(interrupted_then_resumed):
    out, first, before, head, *_ = interrupted_then_resumed
    assert first.exit_code != 0 and "[2/3]" in first.output
    assert before["complete"] is False and before["missing_cells"] == 2 and before["cells"] == 3
    assert before["axes"]["batch_sizes"] == [1, 2, 3] and len(head.splitlines()) == 1


def test_resume_runs_exactly_the_missing_cells(interrupted_then_resumed):
    out, _, before, head, resumed, calls, again = interrupted_then_resumed
    assert resumed.exit_code == 0, resumed.output
    assert "dropped a last line cut short" in resumed.output and "2 of 3 cells (resumed)" in resumed.output
    assert calls == [[1, 2]]                        # the second --resume had nothing to run
    assert again.exit_code == 0, again.output
    text = (out / "records.jsonl").read_text()
    assert text.startswith(head)                    # the first record untouched
    recs = load_records(out)
    assert [r.batch_size for r in recs] == [1, 2, 3] and all(r.status == "ok" for r in recs)
    assert len({cell_key(r) for r in recs}) == 3 and len({r.run_id for r in recs}) == 1
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is True and run["run_id"] == before["run_id"]
    assert [x["cells"] for x in run["resumes"]] == [2, 0]
    assert run["provenance"] == before["provenance"]


def test_resume_refuses_another_sweep(interrupted_then_resumed, tmp_path):
    src = interrupted_then_resumed[0]
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    r = invoke("--resume", str(out), "--batch", "4", "--no-meters")
    assert r.exit_code == 2
    assert "--batch: batch_sizes is 1,2,3 in the run, 4 on the command line" in r.output
    assert "--no-meters/--meter-overhead: meters is on in the run, off on the command line" in r.output
    same = invoke("--resume", str(out), "--batch", "1,2,3", "--isolation", "process")
    assert same.exit_code == 0, same.output         # the same definition, and a per-invocation option
    assert invoke("--resume", str(out), "--out", str(tmp_path / "elsewhere")).exit_code == 2
    assert invoke(*TINY, "--out", str(out)).exit_code == 2          # a fresh run into it: refused
    assert len(load_records(out)) == 3
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "profile": "h100-sxm-80gb"}))
    r = invoke("--resume", str(out))
    assert r.exit_code == 2 and "was measured on profile h100-sxm-80gb" in r.output


def test_a_last_record_without_newline_gets_one(tmp_path):
    from harness.records import Record, append_jsonl, to_envelope
    from harness.run_folder import read_records

    rec = Record(model="m", variant="baseline", backend="pytorch", profile="p", batch_size=1, prompt_tokens=8,
                 new_tokens=4)
    (tmp_path / "records.jsonl").write_text(json.dumps(to_envelope(rec)))
    assert len(read_records(tmp_path)) == 1
    append_jsonl(tmp_path / "records.jsonl", rec)
    assert len(read_records(tmp_path)) == 2


def test_retry_failed_supersedes_the_failed_record(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        fail_cell(mp, 1, RuntimeError("deliberate failure"))
        r = invoke(*TINY, "--batch", "1,2", "--out", str(out))
    assert r.exit_code == 1 and "--resume" in r.output and "--retry-failed" in r.output
    assert [x.status for x in load_records(out)] == ["ok", "failed"]
    calls = spy_sweep(monkeypatch)
    kept = invoke("--resume", str(out))
    assert kept.exit_code == 1 and calls == []      # a failed record counts as a record without --retry-failed
    retried = invoke("--resume", str(out), "--retry-failed")
    assert retried.exit_code == 0, retried.output
    assert calls == [[1]]
    recs = load_records(out)
    assert [(x.batch_size, x.status) for x in recs] == [(1, "ok"), (2, "ok")]
    old = [json.loads(line) for line in (out / "records.superseded.jsonl").read_text().splitlines()]
    assert [(x["batch_size"], x["status"]) for x in old] == [(2, "failed")] and "deliberate" in old[0]["reason"]
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is True and run["status_counts"] == {"ok": 2}


@pytest.mark.parametrize("setup,args,msg", [
    (None, ["--retry-failed"], "--retry-failed goes with --resume"),
    ("empty", [], "no run.json there"),
    ("old", [], "written before --resume existed"),
])
def test_resume_bad_input(tmp_path, setup, args, msg):
    folder = tmp_path / "r"
    folder.mkdir()
    if setup == "old":
        (folder / "run.json").write_text(json.dumps({"run_id": "x", "settings": {"meters": "on"}}))
    extra = ["--resume", str(folder)] if setup else ["--out", str(folder), *TINY]
    r = invoke(*extra, *args)
    assert r.exit_code == 2 and msg in r.output, r.output
