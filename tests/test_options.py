"""harness/options.py is the one source of `harness run`'s options: flags, defaults, run.json, runner."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from harness import options as O
from harness.cli.run import run as run_cmd
from harness.cli.run_options import from_cli

REPO = Path(__file__).resolve().parents[1]
GIVEN = (click.core.ParameterSource.COMMANDLINE,)


def parse(args):
    ctx = run_cmd.make_context("run", list(args))
    given = {n for n in ctx.params if ctx.get_parameter_source(n) in GIVEN}
    return from_cli(ctx.params, given)


def test_no_flags_give_the_dataclass_defaults():
    opts, paths = parse([])
    assert opts == O.RunOptions() and paths == set()
    assert opts.settings.energy_window_s == O.DEFAULT_ENERGY_WINDOW_S == 10.0
    assert opts.settings.compile_mode == "default" and opts.axes.repetitions == 1
    assert opts.settings.isolation == "process" and opts.settings.cell_timeout_s == 1800.0


def test_every_click_default_is_the_dataclass_default():
    defaults = O.RunOptions()
    by_dest = {p.name: p for p in run_cmd.params}
    parsed = run_cmd.make_context("run", []).params
    for p in O.params():
        opt = by_dest[p.dest]
        if p.flag_of is not None:
            assert opt.is_flag and parsed[p.dest] is False and opt.help == p.flag_of.help, p.flag
            continue
        want = O.get_path(defaults, p.path)
        assert parsed[p.dest] == (O.show(want) if isinstance(want, tuple) else want), p.flag
        assert opt.help == p.meta["help"]


def test_flags_keep_their_names_and_map_onto_fields():
    opts, paths = parse(["--batch", "1,8", "--repeats", "5", "--no-compile", "--meter-overhead", "--model",
                         "synthetic:tiny,synthetic:llama-3.2-1b", "--isolation", "none", "--cell-timeout-s", "60",
                         "--no-quality", "--quality-window", "128", "--quality-stride", "64"])
    assert opts.axes.batch_sizes == (1, 8) and opts.axes.models == ("synthetic:tiny", "synthetic:llama-3.2-1b")
    assert opts.settings.meter.min_repeats == 5 and opts.settings.compile is False
    assert opts.axes.meters == "alternate" and opts.settings.meters is True
    assert opts.settings.isolation == "none" and opts.settings.cell_timeout_s == 60.0
    q = opts.settings.quality
    assert q.enabled is False and (q.window, q.stride) == (128, 64)   # validated together, not field by field
    assert ("axes", "batch_sizes") in paths and ("settings", "meter", "min_repeats") in paths
    assert ("axes", "meters") in paths and ("axes", "prompt_tokens") not in paths
    off, _ = parse(["--no-meters"])
    assert off.axes.meters == "off" and off.settings.meters is False     # derived, never typed twice


def test_quick_sets_only_what_was_not_given():
    opts, paths = parse(["--quick", "--batch", "4"])
    assert opts.axes.batch_sizes == (4,) and opts.axes.prompt_tokens == (32,) and opts.axes.new_tokens == (16,)
    m = opts.settings.meter
    assert (m.warmup, m.min_repeats, m.min_seconds) == (1, 2, 0.5)
    assert opts.settings.quality.tokens == opts.settings.quality.quick_tokens
    assert ("axes", "prompt_tokens") in paths and ("settings", "meter", "min_seconds") in paths


@pytest.mark.parametrize("args,msg", [
    (["--no-meters", "--meter-overhead"], "--meter-overhead"),
    (["--batch", "1,x"], "--batch takes a comma list of positive integers"),
    (["--new-tokens", "0"], "--new-tokens takes a comma list of positive integers"),
])
def test_bad_values_are_value_errors(args, msg):
    with pytest.raises(ValueError, match=msg):
        parse(args)


def test_choices_and_ranges_are_click_errors():
    for args in (["--isolation", "thread"], ["--cell-timeout-s", "0"], ["--tune", "maybe"]):
        with pytest.raises(click.BadParameter):
            parse(args)


def test_run_json_round_trip():
    opts, _ = parse(["--batch", "2,4", "--meter-overhead", "--corpus", "/tmp/c.txt", "--quality-kl-mean-max", "0.1"])
    d = json.loads(json.dumps(O.sweep_dict(opts)))
    axes, settings = O.from_dict(O.SweepAxes, d["axes"]), O.from_dict(O.RunSettings, d["settings"])
    assert axes == opts.axes and settings == opts.settings
    assert settings.corpus == "/tmp/c.txt" and settings.quality.kl_mean_max == 0.1
    old = {k: v for k, v in d["settings"].items() if k != "isolation"}      # an option added later: its default
    assert O.from_dict(O.RunSettings, old).isolation == "process"
    with pytest.raises(ValueError, match="unknown key"):
        O.from_dict(O.RunSettings, {**d["settings"], "warp_speed": 9})


def test_runner_and_measure_use_the_same_classes():
    from harness import runner
    from harness.pipeline import timed as measure

    assert runner.SweepAxes is O.SweepAxes and runner.RunSettings is O.RunSettings
    assert runner.MeterSettings is measure.MeterSettings is O.MeterSettings
    assert measure.DEFAULT_MIN_SECONDS == O.MeterSettings().min_seconds
    assert "isolation" in {f.name for f in dataclasses.fields(O.RunSettings)}


def _fresh(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("command", ["report", "compare", "plan"])
def test_view_commands_start_without_torch(command):
    out = _fresh("import sys; from harness.cli import main; "
                 f"rc = main([{command!r}, '--help'], standalone_mode=False); "
                 "print(rc, 'torch' in sys.modules, 'harness.run_command' in sys.modules)")
    assert out.splitlines()[-1] == "0 False False"


def test_options_module_is_torch_free():
    assert _fresh("import sys, harness.options; print('torch' in sys.modules)") == "False"
