"""The ort backend through the cell pipeline: a sweep with --backends ort yields records like any
other backend (synthetic:tiny, CPU EP)."""
import pytest

pytest.importorskip("onnxruntime_genai")

from harness.runner import RunSettings, SweepAxes, expand, run_sweep  # noqa: E402


@pytest.mark.slow
def test_ort_cells_run_through_the_pipeline(tmp_path, monkeypatch):
    import fault_plugin

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    axes = SweepAxes(("synthetic:tiny",), ("baseline", "int4-awq"), (1,), (8,), (4,), backends=("ort",))
    settings = fault_plugin.tiny_settings(isolation="none", plugins=())
    recs = run_sweep(expand(axes), settings, fault_plugin.tiny_context())
    ok, awq = recs
    assert ok.status == "ok" and ok.backend == "ort" and "onnxruntime" in ok.kernel and "CPU EP" in ok.kernel
    assert ok.decode_path == "ort-genai" and ok.decode_tok_s > 0 and len(ok.tpot_s_samples) == ok.repeats * 3
    assert ok.weight_bytes > 0 and ok.quality_verdict == "skipped"             # quality off in these settings
    assert awq.status == "unsupported" and "no ONNX Runtime recipe" in awq.reason
