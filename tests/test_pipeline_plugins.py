"""The cell pipeline runs any registered backend and meter: a toy backend and a toy meter from a
test module (tests/toy_plugin.py), with no edit of harness/, go through a whole sweep."""
import sys

import toy_plugin  # noqa: F401  (registers the toy backend and meter)

from harness.profiles import load_profiles
from harness.runner import RunContext, RunSettings, SweepAxes, expand, run_sweep
from harness.pipeline.timed import MeterSettings


def _ctx():
    profile = next(iter(load_profiles().values()))
    return RunContext(run_id="toy-run", profile=profile, provenance={"profile": profile.id})


def test_a_toy_backend_and_meter_run_a_sweep_without_editing_harness():
    axes = SweepAxes(("toy-model",), ("baseline", "int4-wo"), (1, 2, 8), (4,), (5,), backends=("toy",))
    settings = RunSettings(meter=MeterSettings(warmup=0, min_repeats=3, min_seconds=0.0), isolation="none")
    recs = run_sweep(expand(axes), settings, _ctx())
    assert [(r.variant, r.batch_size, r.status) for r in recs] == [
        ("baseline", 1, "ok"), ("baseline", 2, "ok"), ("baseline", 8, "does-not-fit"),
        ("int4-wo", 1, "unsupported"), ("int4-wo", 2, "unsupported"), ("int4-wo", 8, "unsupported")]
    ok = recs[0]
    assert ok.backend == "toy" and ok.device == "toy0" and ok.kernel == "toy kernel (sleep)"
    assert ok.decode_path == "toy-loop" and ok.repeats == 3
    assert len(ok.tpot_s_samples) == 3 * 4 and all(t >= toy_plugin.STEP_S for t in ok.tpot_s_samples)
    assert ok.decode_tok_s < 1 / toy_plugin.STEP_S        # a sleep per token bounds the rate
    # the toy meter wrapped the timed loop: at least 3 passes x 5 sleeps
    assert ok.extra["toy_window_s"] >= 3 * 5 * toy_plugin.STEP_S
    assert ok.peak_rss_bytes > 0                            # the built-in host meter ran too
    # no energy meter applies to an unknown device type: unavailable, never 0
    assert ok.energy_j is None and ok.energy_source == "unavailable"
    assert recs[2].reason == "toy device holds batch 4 at most" and recs[2].kv_cache_bytes == 8
    assert recs[3].reason == "toy backend has no kernel for int4-wo"


def test_the_pipeline_modules_import_without_torch():
    import subprocess

    code = ("import sys; import harness.pipeline.cell, harness.backends, harness.meters.base; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
