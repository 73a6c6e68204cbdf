"""The Ray executor is an optional extra: nothing imports ray unless --executor ray is asked for;
`harness worker` builds the `ray start` line from the detected profile."""
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from harness.executor.ray_node import resource_name, resources_json

ROOT = Path(__file__).resolve().parents[1]


def test_cli_and_run_help_do_not_import_ray():
    code = ("import sys, harness.cli\n"
            "from click.testing import CliRunner\n"
            "r = CliRunner().invoke(harness.cli.main, ['run', '--help'])\n"
            "assert r.exit_code == 0 and '--executor' in r.output and '--address' in r.output, r.output\n"
            "print('ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_resource_names_keep_slugs_and_map_other_characters():
    assert resource_name("cpu-amd-epyc") == "profile:cpu-amd-epyc"
    assert resource_name("h100 sxm/80gb") == "profile:h100_sxm_80gb"
    assert json.loads(resources_json("h100-sxm")) == {"profile:h100-sxm": 1}


def test_worker_prints_the_ray_start_line():
    from harness.cli import main

    r = CliRunner().invoke(main, ["worker", "--address", "10.0.0.1:6379", "--profile", "h100-sxm", "--dry-run",
                                  "--num-cpus", "4"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == ("ray start --address 10.0.0.1:6379 --resources "
                                                 "'{\"profile:h100-sxm\": 1}' --num-cpus 4")
    r = CliRunner().invoke(main, ["worker", "--head", "--dry-run"])
    assert r.exit_code == 0 and "ray start --head --port 6379 --resources '{\"profile:cpu-" in r.output
    r = CliRunner().invoke(main, ["worker", "--dry-run"])
    assert r.exit_code == 2 and "--address" in r.output


def test_progress_counts_over_the_run_whatever_the_order():
    from types import SimpleNamespace

    from harness.run_command import Progress

    cell = lambda i: SimpleNamespace(index=i, label=lambda: f"cell{i}")  # noqa: E731
    p = Progress(total=5, done_before=1)        # a resumed run: one cell already has its record
    assert p.start_line(cell(3)) == "[2/5] cell3 ... (3 after this)"   # two groups start together
    assert p.start_line(cell(1)) == "[3/5] cell1 ... (2 after this)"
    assert p.record_line(cell(1), "ok") == "[2/5]   ok"                # the later-started one ends first
    assert p.record_line(cell(4), "unsupported: x") == "[3/5]   unsupported: x"   # recorded unstarted
    assert p.start_line(cell(2)) == "[5/5] cell2 ... (0 after this)"
    assert p.record_line(cell(3), "ok") == "[4/5]   ok"
    assert p.record_line(cell(2), "ok") == "[5/5]   ok"
    several = Progress(total=2, done_before=0, several_profiles=True)
    c = SimpleNamespace(index=0, label=lambda: "cell0", profile="h100-sxm")
    assert several.start_line(c) == "[1/2] cell0 on h100-sxm ... (1 after this)"
    assert several.record_line(c, "ok") == "[1/2]   cell0 on h100-sxm: ok"


def test_driver_merges_each_nodes_gpu_run_meters_into_run_json():
    from types import SimpleNamespace

    from harness.executor.ray_executor import _Driver
    from harness.run_command import gpu_meters_meta

    fake_ray = SimpleNamespace(remote=lambda **kw: (lambda f: f))
    ctx = SimpleNamespace(gpu=None, gpu_by_node={})
    d = _Driver(fake_ray, 2, None, ctx, None, None, None)
    bw = lambda v: SimpleNamespace(value_per_s=v, method="copy", samples_per_s=(v,))  # noqa: E731
    snap = lambda v, idle: SimpleNamespace(copy_bw=bw(v), meter=SimpleNamespace(update_period_s=0.1, method="nvml"),  # noqa: E731
                                           idle_by_model=idle)
    idle = lambda w: SimpleNamespace(power_w=w, method="idle")  # noqa: E731
    d._handle(SimpleNamespace(node={"ray_node_id": "n1"}), ("gpu", snap(3e12, {"m1": idle(90.0)})))
    d._handle(SimpleNamespace(node={"ray_node_id": "n2"}), ("gpu", snap(2e12, {"m1": idle(70.0), "m2": idle(60.0)})))
    g = gpu_meters_meta(ctx)
    assert g["available"] and g["copy_bandwidth_bytes_per_s"] == 3e12
    assert g["idle_power"] == {"m1": {"power_w": 90.0, "method": "idle"}, "m2": {"power_w": 60.0, "method": "idle"}}
    assert g["by_node"]["n2"]["copy_bandwidth_bytes_per_s"] == 2e12
    assert g["by_node"]["n1"]["idle_power"] == {"m1": {"power_w": 90.0, "method": "idle"}}
