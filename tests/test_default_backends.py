"""--backends auto: ORT rows beside the torch rows on a local CPU run of the embedded default model,
only where onnxruntime-genai imports; otherwise absent with one line saying why."""
import pytest

from harness.backends.defaults import resolve_backends
from harness.models.spec import EMBEDDED_DEFAULT
from harness.options import DEFAULT_VARIANTS, SweepAxes
from harness.sweep import expand


def _axes(**kw):
    kw.setdefault("models", (EMBEDDED_DEFAULT,))
    return SweepAxes(**kw)


def _ok():
    return None


def test_default_cpu_run_adds_ort_for_three_variants():
    axes, why = resolve_backends(_axes(), "cpu", ort_error=_ok)
    assert why is None and axes.backends == ("pytorch", "ort")
    cells = expand(axes)
    ort = [c.variant for c in cells if c.backend == "ort"]
    assert ort == ["baseline", "int8-dq", "int4-wo"]
    assert [c.variant for c in cells if c.backend == "pytorch"] == list(DEFAULT_VARIANTS)
    keys = [(c.model, c.variant, c.backend) for c in cells]
    assert len(set(keys)) == len(keys)


def test_ort_left_out_with_one_line_when_it_does_not_import():
    axes, why = resolve_backends(_axes(), "cpu", ort_error=lambda: "ImportError: No module named 'onnxruntime_genai'")
    assert axes.backends == ("pytorch",) and "\n" not in why
    assert "onnxruntime-genai does not import" in why and "[ort] extra" in why
    assert all(c.backend == "pytorch" for c in expand(axes))


@pytest.mark.parametrize("kw, device, executor, says", [
    ({}, "cuda", "local", "auto adds ort on CPU runs only"),
    ({}, "cpu", "ray", "--executor ray"),
    ({"models": ("synthetic:tiny",)}, "cpu", "local", "embedded default model"),
    ({"variants": ("int8-wo", "int4-awq")}, "cpu", "local", "none of them is in --variants"),
])
def test_gpu_other_models_and_other_variants_stay_torch_only(kw, device, executor, says):
    axes, why = resolve_backends(_axes(**kw), device, executor, ort_error=_ok)
    assert axes.backends == ("pytorch",) and says in why


def test_named_backends_and_given_pairs_are_kept():
    named = _axes(backends=("pytorch", "ort"))
    assert resolve_backends(named, "cpu", ort_error=_ok) == (named, None)
    axes, _ = resolve_backends(_axes(backend_variants=("ort=int4-wo",)), "cpu", ort_error=_ok)
    assert [c.variant for c in expand(axes) if c.backend == "ort"] == ["int4-wo"]
    # a subset of the variants keeps only the ORT defaults among them
    axes, _ = resolve_backends(_axes(variants=("baseline", "int8-wo")), "cpu", ort_error=_ok)
    assert [(c.variant, c.backend) for c in expand(axes)] == [("baseline", "pytorch"), ("baseline", "ort"),
                                                              ("int8-wo", "pytorch")]


def test_default_run_plans_ort_cells_and_resume_keeps_them_apart(tmp_path, monkeypatch):
    import json

    from harness.backends import defaults
    from harness.options import RunOptions, RunSettings
    from harness.records import Record, append_jsonl
    from harness.run_command import prepare

    monkeypatch.setattr(defaults, "ort_import_error", _ok)
    out, lines = tmp_path / "run", []
    opts = RunOptions(axes=SweepAxes(variants=("baseline", "int4-wo"), prompt_tokens=(8,), new_tokens=(4,)),
                      settings=RunSettings(device="cpu"), out=out)
    plan = prepare(opts, echo=lines.append)
    plan.lock.release()
    assert [(c.variant, c.backend) for c in plan.cells] == [("baseline", "pytorch"), ("baseline", "ort"),
                                                            ("int4-wo", "pytorch"), ("int4-wo", "ort")]
    stored = json.loads((out / "run.json").read_text())
    assert stored["axes"]["backends"] == ["pytorch", "ort"] and stored["backends_note"] is None
    assert not any("no ort rows" in s for s in lines)
    c = plan.cells[0]                     # the torch baseline is measured; ORT's cell of the same variant is not
    append_jsonl(out / "records.jsonl", Record(model=c.model, variant=c.variant, backend=c.backend, profile=c.profile,
                                               batch_size=c.batch_size, prompt_tokens=8, new_tokens=4))
    # resumed where onnxruntime-genai no longer imports: the stored sweep still has its ORT cells
    monkeypatch.setattr(defaults, "ort_import_error", lambda: "ImportError: gone")
    again = prepare(RunOptions(settings=RunSettings(device="cpu"), resume=out), echo=lines.append)
    again.lock.release()
    assert [(c.variant, c.backend) for c in again.todo] == [("baseline", "ort"), ("int4-wo", "pytorch"),
                                                            ("int4-wo", "ort")]


def test_a_default_run_without_onnxruntime_genai_says_so_once(tmp_path, monkeypatch):
    import json

    from harness.backends import defaults
    from harness.options import RunOptions, RunSettings
    from harness.run_command import prepare

    monkeypatch.setattr(defaults, "ort_import_error", lambda: "ImportError: No module named 'onnxruntime_genai'")
    lines = []
    plan = prepare(RunOptions(axes=SweepAxes(variants=("baseline",), prompt_tokens=(8,), new_tokens=(4,)),
                              settings=RunSettings(device="cpu"), out=tmp_path / "run"), echo=lines.append)
    plan.lock.release()
    assert [c.backend for c in plan.cells] == ["pytorch"]
    said = [s for s in lines if "no ort rows" in s]
    assert len(said) == 1 and "onnxruntime-genai does not import" in said[0]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "no ort rows" in meta["backends_note"]
    from harness.report.markdown import render_report

    assert "- backends: --backends auto: no ort rows (onnxruntime-genai does not import" in render_report([], meta)
