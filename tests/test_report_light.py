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
