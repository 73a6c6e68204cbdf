"""Views are light: `harness report` and `harness compare` never import torch."""
import json
import subprocess
import sys
from pathlib import Path

from harness.records import EnergyDetail, MemoryDetail, Record, VramBudgetDetail, append_jsonl

SCRIPT = r"""
import sys
from click.testing import CliRunner
from harness.cli import main

before, after = sys.argv[1], sys.argv[2]
r = CliRunner().invoke(main, ["report", before])
assert r.exit_code == 0, r.output
r = CliRunner().invoke(main, ["compare", before, after, "--format", "junit"])
assert r.exit_code == 1, r.output          # the second cell failed in AFTER
import harness.report.compare, harness.report.charts, harness.records, harness.quality  # noqa: E401
print("torch" in sys.modules, sorted(m for m in sys.modules if m.startswith(("torch", "transformers"))))
"""


def _run_folder(path: Path, failed: bool) -> str:
    path.mkdir()
    base = dict(model="m", variant="baseline", backend="pytorch", profile="h100-sxm-80gb", prompt_tokens=8,
                new_tokens=4, decode_tok_s=100.0, power_mean_w=400.0, idle_power_w=100.0, peak_vram_bytes=150,
                energy=EnergyDetail(power_timeline={"t_s": [0.0, 0.05], "power_w": [390.0, 410.0], "rate_hz": 20.0}),
                memory=MemoryDetail(budget=VramBudgetDetail(expected_bytes=140, ratio=150 / 140,
                                                            within_tolerance=True)))
    append_jsonl(path / "records.jsonl", Record(batch_size=1, **base))
    append_jsonl(path / "records.jsonl", Record(batch_size=2, **dict(base, status="failed" if failed else "ok")))
    (path / "run.json").write_text(json.dumps({"run_id": path.name, "provenance": {"cpu": "x"}}))
    return str(path)


def test_report_and_compare_do_not_import_torch(tmp_path):
    before, after = _run_folder(tmp_path / "a", False), _run_folder(tmp_path / "b", True)
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", SCRIPT, before, after], cwd=repo, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False []"
    assert (tmp_path / "a" / "report.md").is_file() and (tmp_path / "a" / "charts" / "power_timeline.png").is_file()


def test_quality_package_keeps_its_names():
    """The lazy package still hands out evaluate() the function, before and after its submodule loads."""
    code = ("import harness.quality.sensitivity\nfrom harness import quality\nfrom harness.quality import evaluate, "
            "QualitySettings\nassert callable(evaluate) and evaluate is quality.evaluate and "
            "evaluate.__module__ == 'harness.quality.evaluate'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_gpu_fallback_says_so_in_the_main_table_and_is_not_calibrated():
    """issue 13: a GPU cell that fell back from the compiled CUDA graph says which path ran, and the
    planner's calibration skips it."""
    from harness.plan.calibrate import calibrate
    from harness.profiles import load_profiles
    from harness.records import Record, slow_path
    from harness.report.markdown import render_report

    def rec(path, tok):
        return Record(model="synthetic:llama-3.1-8b", variant="baseline", backend="pytorch", profile="h100-sxm-80gb",
                      batch_size=1, prompt_tokens=128, new_tokens=64, status="ok", device="cuda:0", dtype="bfloat16",
                      decode_path=path, decode_tok_s=tok, prefill_tok_s=9000.0, weight_bytes=16_060_000_000)
    fast, slow = rec("compiled+cuda-graph", 160.0), rec("eager", 25.9)
    assert slow_path(fast) is None and slow_path(slow) == "eager"
    text = render_report([slow], {})
    assert "| ok (eager fallback) |" in text
    cal = calibrate([fast, slow], load_profiles())
    assert any("decode path eager (a fallback" in s for s in cal.skipped)
    assert sum("decode path" in s for s in cal.skipped) == 1   # the compiled one is kept
