import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.records import FIELD_NAMES, load_records


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "harness" in r.output
    r = CliRunner().invoke(main, ["run", "--help"])
    assert r.exit_code == 0
    for opt in ("--model", "--variants", "--batch", "--prompt-tokens", "--new-tokens", "--repeats",
                "--min-seconds", "--out", "--quick", "--profile", "--repetitions", "--meter-overhead",
                "--compile-mode", "--tune", "--no-meters"):
        assert opt in r.output


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    res = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "baseline,int8-wo",
                                    "--batch", "1,2", "--quick", "--cpu-power-w", "40", "--out", str(out)])
    return res, out


def test_quick_run_writes_every_view(quick_run):
    res, out = quick_run
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(out)      # last line: the run folder
    for f in ("records.jsonl", "records.parquet", "records.csv", "run.json", "report.md", "charts/decode_tok_s.png"):
        assert (out / f).is_file(), f
    run = json.loads((out / "run.json").read_text())
    assert run["cells"] == 4 and run["complete"] is True
    assert run["provenance"]["versions"]["torch"]


def test_quick_run_records(quick_run):
    _, out = quick_run
    recs = load_records(out)
    assert [(r.variant, r.batch_size) for r in recs] == [("baseline", 1), ("baseline", 2), ("int8-wo", 1), ("int8-wo", 2)]
    for r in recs:
        assert r.status == "ok", r.reason
        assert r.decode_tok_s > 0 and r.prefill_tok_s > 0 and r.ttft_s > 0
        assert r.tpot_p50_s <= r.tpot_p90_s <= r.tpot_p99_s
        assert r.repeats >= 2 and len(r.decode_s_samples) == r.repeats
        assert len(r.tpot_s_samples) == r.repeats * (r.new_tokens - 1)
        assert r.peak_rss_bytes > 0 and r.weight_bytes > 0
        assert r.profile.startswith("cpu-") or r.profile
        assert r.provenance["profile"] == r.profile
        # no RAPL on these machines -> the estimate from --cpu-power-w, labelled as such
        assert r.energy_source in ("rapl", "estimate")
        if r.energy_source == "estimate":
            assert "40 W" in r.energy_method and r.j_per_token_decode > 0
        # random weights: quality is reported as not meaningful, never computed
        assert r.quality_verdict == "not-meaningful" and r.perplexity is None and r.kl_mean is None
        # the planner's projection sits beside the measured bytes, and agrees on this model
        assert r.planned_weight_bytes == pytest.approx(r.weight_bytes, rel=0.02)
    base, q = recs[0], recs[2]
    assert q.weight_bytes < base.weight_bytes
    assert "Int8" in q.kernel and "float32" in base.kernel
    header = (out / "records.csv").read_text().splitlines()[0].split(",")
    assert header == list(FIELD_NAMES)


def test_report_names_machine_and_every_cell(quick_run):
    _, out = quick_run
    md = (out / "report.md").read_text()
    assert "machine:" in md and "| synthetic:tiny | int8-wo |" in md and "estimate" in md


@pytest.mark.parametrize("args,msg", [
    (["--model", "synthetic:nope"], "unknown synthetic preset"),
    (["--variants", "baseline,int3"], "unknown variant"),
    (["--batch", "0"], "positive integers"),
    (["--model", "weights.pt"], "arbitrary code"),
    (["--corpus", "/nonexistent.txt"], "corpus"),
    (["--device", "tpu"], "--device"),
    (["--profile", "no-such-profile"], "unknown profile"),
    pytest.param(["--device", "cuda"], "no CUDA GPU", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_input_is_a_usage_error(args, msg, tmp_path):
    r = CliRunner().invoke(main, ["run", "--quick", "--model", "synthetic:tiny", "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == 2, r.output
    assert msg in r.output
    assert not (tmp_path / "x").exists()    # refused before any output folder is made


def test_no_quality_marks_records_skipped(tmp_path):
    out = tmp_path / "nq"
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "baseline", "--quick",
                                  "--no-quality", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rec = load_records(out)[0]
    assert rec.quality_verdict == "skipped" and "--no-quality" in rec.quality.note


def test_bad_quality_threshold_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--quick", "--quality-stride", "900",
                                  "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "stride" in r.output


def test_a_failing_cell_is_a_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    # the failing variant comes from a plug-in module (tests/fault_plugin.py), which the spawned
    # worker imports too: a monkeypatched registry would exist in this process only
    monkeypatch.setenv("HARNESS_PLUGINS", "fault_plugin")
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "apply-fails,baseline",
                                  "--quick", "--out", str(out)])           # in a worker process (the default)
    assert r.exit_code == 1, r.output          # a failed cell fails the run, after every cell ran
    assert r.output.strip().splitlines()[-1] == str(out)
    recs = load_records(out)
    assert [r.status for r in recs] == ["failed", "ok"]
    assert "deliberate failure" in recs[0].reason and recs[0].decode_tok_s is None


def test_batch_curve_chart_when_several_batches(quick_run):
    _, out = quick_run
    assert (out / "charts" / "decode_vs_batch.png").is_file()


@pytest.mark.gpu
def test_gpu_run_uses_cuda_graphs_and_compares_with_generate(tmp_path):
    out = tmp_path / "g"
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "baseline", "--device", "cuda",
                                  "--quick", "--batch", "1,4",
                                  "--backends", "pytorch,transformers-generate", "--energy-window-s", "1",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = load_records(out)
    backends = [x.backend for x in recs]
    assert backends == ["pytorch", "pytorch", "transformers-generate", "transformers-generate"], backends
    for x in recs:
        assert x.status == "ok", x.reason
        assert x.peak_vram_bytes > 0 and x.kv_cache_bytes > 0
    ours = recs[0]
    assert ours.decode_path == "compiled+cuda-graph" and ours.timing_source == "cuda_events"
    assert ours.setup_s > 0
    assert ours.energy_source == "nvml_counter" and ours.energy_j > 0 and ours.power_mean_w > 0
    assert ours.idle_power_w > 0 and ours.mbu is not None and 0 < ours.mbu < 1.5


def test_report_command_rebuilds_views_from_records(quick_run, tmp_path):
    import shutil

    _, out = quick_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "report.md").unlink()
    r = CliRunner().invoke(main, ["report", str(copy)])
    assert r.exit_code == 0, r.output
    assert "| synthetic:tiny | int8-wo |" in (copy / "report.md").read_text()
    assert CliRunner().invoke(main, ["report", str(tmp_path)]).exit_code == 2   # no records there


def test_power_timeline_chart_from_stored_timelines(tmp_path):
    from harness.records import EnergyDetail, Record
    from harness.report import write_charts

    r = Record(model="m", variant="baseline", backend="pytorch", profile="h100-sxm-80gb", batch_size=1,
               prompt_tokens=8, new_tokens=4, decode_tok_s=1.0, power_mean_w=400.0, idle_power_w=120.0,
               energy=EnergyDetail(power_timeline={"t_s": [0.0, 0.05, 0.1], "power_w": [390.0, 410.0, 400.0],
                                                   "rate_hz": 20.0}))
    paths = write_charts([r], tmp_path)
    assert (tmp_path / "charts" / "power_timeline.png") in paths


def test_repetitions_with_meter_overhead_reuse_the_engine(tmp_path):
    out = tmp_path / "reps"
    res = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "baseline", "--quick",
                                    "--repetitions", "2", "--meter-overhead", "--cpu-power-w", "40", "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = load_records(out)
    assert [(r.repetition, r.meters) for r in recs] == [(0, False), (0, True), (1, True), (1, False)]
    assert all(r.status == "ok" for r in recs)
    # one engine for the cell: only the first measurement built it
    assert [r.engine.reused for r in recs] == [False, True, True, True]
    assert recs[0].peak_rss_bytes is None and recs[1].peak_rss_bytes > 0   # the RSS sampler is a meter
    run = json.loads((out / "run.json").read_text())
    assert run["cells"] == 4 and run["axes"]["meters"] == "alternate" and run["axes"]["repetitions"] == 2
    assert run["settings"]["meters"] is True
    md = (out / "report.md").read_text()
    assert "## Repetitions (meters on)" in md and "## Meter overhead" in md


def test_bad_compile_mode_and_repetitions_are_refused(tmp_path):
    for args in (["--compile-mode", "fastest"], ["--repetitions", "0"]):
        res = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--quick", *args, "--out", str(tmp_path / "x")])
        assert res.exit_code == 2 and args[0] in res.output
    assert not (tmp_path / "x").exists()


def test_meter_overhead_needs_meters(tmp_path):
    res = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--quick", "--no-meters", "--meter-overhead",
                                    "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--meter-overhead" in res.output
    assert not (tmp_path / "x").exists()


@pytest.mark.gpu
def test_gpu_repetitions_meter_overhead_and_vram_budget(tmp_path):
    out = tmp_path / "g"
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "baseline", "--device", "cuda",
                                  "--quick", "--repetitions", "2", "--meter-overhead", "--energy-window-s", "1",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = load_records(out)
    assert [(x.repetition, x.meters) for x in recs] == [(0, False), (0, True), (1, True), (1, False)]
    for x in recs:
        assert x.status == "ok", x.reason
        assert x.decode_path == "compiled+cuda-graph"
        assert x.timed_s >= 1.0                     # meters off: held as long as the energy window
        if x.meters:
            assert x.energy_source == "nvml_counter" and x.j_per_token_decode > 0
            b = x.memory.budget
            assert x.vram_expected_bytes == b.expected_bytes > b.weight_bytes > 0
            assert b.ratio == pytest.approx(x.peak_vram_bytes / x.vram_expected_bytes)
        else:
            assert x.energy_source == "unavailable" and x.energy_j is None and x.power_mean_w is None
    assert [x.engine.reused for x in recs] == [False, True, True, True]
    run = json.loads((out / "run.json").read_text())
    assert run["cuda_allocator"].startswith("expandable_segments:True")
    assert "## Meter overhead" in (out / "report.md").read_text()
