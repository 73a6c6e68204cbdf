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
