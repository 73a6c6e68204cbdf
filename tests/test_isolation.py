"""Process isolation's parts: what travels to a worker, plug-ins, exit codes, stderr tails, and the
in-process path (`isolation="none"`) with its interrupt handling."""
import json
import os
import pickle
import signal
import threading
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import fault_plugin
from harness.executor import Interrupted, PluginError, exit_code_for, load_plugins
from harness.executor.local import _Supervisor, stderr_headline, stderr_tail
from harness.executor.worker import gpu_snapshot
from harness.runner import RunSettings, run_sweep


def test_context_and_settings_travel_to_a_worker():
    from multiprocessing.reduction import ForkingPickler

    import harness.executor.local  # noqa: F401  (registers the MappingProxyType reducer)

    ctx = fault_plugin.tiny_context()
    back = pickle.loads(ForkingPickler.dumps(ctx))
    assert back.profile == ctx.profile and back.provenance == ctx.provenance and back.gpu is None
    assert back.profile.peak_flops == ctx.profile.peak_flops and type(back.profile.peak_flops) is type(ctx.profile.peak_flops)
    s = fault_plugin.tiny_settings(cell_timeout_s=12.5)
    assert pickle.loads(pickle.dumps(s)) == s
    d = RunSettings()
    assert (d.isolation, d.cell_timeout_s, d.plugins) == ("process", 1800.0, ())


def test_exit_codes_follow_the_shell_convention():
    assert exit_code_for(signal.SIGINT) == 130 and exit_code_for(signal.SIGTERM) == 143
    e = Interrupted(signal.SIGTERM, [1, 2])
    assert (e.exit_code, e.signame, e.records, str(e)) == (143, "SIGTERM", [1, 2], "interrupted by SIGTERM")


def test_plugins_from_settings_and_environment(tmp_path, monkeypatch):
    (tmp_path / "plug_a.py").write_text("import os\nos.environ['PLUG_A_LOADED'] = '1'\n")
    monkeypatch.setenv("HARNESS_PLUGIN_PATH", str(tmp_path))
    monkeypatch.setenv("HARNESS_PLUGINS", "plug_a, fault_plugin")
    monkeypatch.delenv("PLUG_A_LOADED", raising=False)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    assert load_plugins(("fault_plugin",)) == ("fault_plugin", "plug_a")
    assert os.environ["PLUG_A_LOADED"] == "1" and str(tmp_path) in __import__("sys").path
    with pytest.raises(PluginError, match="no_such_plugin"):
        load_plugins(("no_such_plugin",))


def test_a_missing_plugin_is_a_usage_error(tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_PLUGINS", "no_such_plugin")
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--quick", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no_such_plugin" in r.output
    assert not (tmp_path / "x").exists()


def test_unknown_isolation_is_refused():
    with pytest.raises(ValueError, match="isolation must be one of process, none"):
        run_sweep([], fault_plugin.tiny_settings(isolation="thread"), fault_plugin.tiny_context())


def test_stderr_tail_and_the_line_that_names_the_crash(tmp_path):
    log = tmp_path / "w.stderr"
    log.write_text("noise\n" * 1000 + "Fatal Python error: Segmentation fault\n\nThread 0x1:\n  File \"x.py\"\n"
                   + "  File \"y.py\"\n" * 400 + "Extension modules: " + "torch._C, " * 500 + "\n")
    tail = stderr_tail(str(log))   # faulthandler's list of extension modules (5 KB here) is left out
    assert tail.startswith("...  File") and tail.endswith('File "y.py"\n') and len(tail) <= 2048 + 3
    assert "Extension modules" not in tail
    assert stderr_headline(stderr_tail(str(log), 65536)) == "Fatal Python error: Segmentation fault"
    tb = "Traceback (most recent call last):\n  File \"a.py\"\nUserWarning: x\nValueError: bad shape\n"
    assert stderr_headline(tb) == "ValueError: bad shape"
    assert stderr_headline("USDT: profiler_stop\n") == ""
    assert stderr_tail(str(tmp_path / "missing")) == ""


def test_gpu_meter_figures_reach_the_parent_for_run_json():
    copy_bw = SimpleNamespace(value_per_s=3e12, samples_per_s=(3e12,), method="copy_")
    idle = SimpleNamespace(power_w=70.0, method="nvml")
    gpu = SimpleNamespace(copy_bw=copy_bw, idle_by_model={"m1": idle}, nvml=object(),
                          meter=SimpleNamespace(update_period_s=0.1, method="nvml energy counter", handles=object()))
    snap = pickle.loads(pickle.dumps(gpu_snapshot(gpu)))
    assert snap.meter.update_period_s == 0.1 and snap.idle_by_model["m1"].power_w == 70.0
    ctx = fault_plugin.tiny_context()
    sup = _Supervisor(1, fault_plugin.tiny_settings(), ctx, None, None)
    sup._merge_gpu(snap)
    later = gpu_snapshot(SimpleNamespace(copy_bw=SimpleNamespace(value_per_s=1.0), meter=gpu.meter,
                                         idle_by_model={"m1": None, "m2": idle}))
    sup._merge_gpu(later)
    assert ctx.gpu.copy_bw.value_per_s == 3e12 and set(ctx.gpu.idle_by_model) == {"m1", "m2"}
    assert ctx.gpu.idle_by_model["m1"].power_w == 70.0      # the first worker's figure stays


def test_in_process_path_runs_here_and_retired_groups_go_on(one_thread):
    recs = run_sweep(fault_plugin.tiny_cells([1, 7, 8]), fault_plugin.tiny_settings(isolation="none"),
                     fault_plugin.tiny_context())
    assert [(r.batch_size, r.status) for r in recs] == [(1, "ok"), (7, "failed"), (8, "ok")]
    assert f"pid={os.getpid()}" in recs[0].kernel and "worker" not in recs[0].extra


def test_in_process_path_records_the_interrupted_cell(one_thread):
    """isolation none: SIGINT lands inside the hanging cell; it is recorded failed, the sweep stops."""
    emitted, before = [], signal.getsignal(signal.SIGINT)

    def on_start(cell, n):
        if cell.batch_size == 6:   # the hang: interrupt it from outside once it sleeps
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(Interrupted) as exc:
        run_sweep(fault_plugin.tiny_cells([1, 6, 8]), fault_plugin.tiny_settings(isolation="none"),
                  fault_plugin.tiny_context(), on_record=lambda c, r, n: emitted.append(r), on_start=on_start)
    e = exc.value
    assert e.exit_code == 130 and [(r.batch_size, r.status) for r in e.records] == [(1, "ok"), (6, "failed")]
    assert e.records[1].reason == "interrupted by SIGINT" and emitted == e.records
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.gpu
def test_gpu_run_in_workers_keeps_run_level_gpu_figures(tmp_path):
    from harness.cli import main
    from harness.records import load_records

    out = tmp_path / "g"
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "baseline,int8-wo", "--device",
                                  "cuda", "--quick", "--energy-window-s", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = load_records(out)
    assert [x.status for x in recs] == ["ok", "ok"], [x.reason for x in recs]
    # one worker per model: both variants ran in it, the model loaded once
    assert recs[0].extra["worker"]["pid"] == recs[1].extra["worker"]["pid"] != os.getpid()
    assert all(x.mbu is not None and x.energy_source == "nvml_counter" for x in recs)
    g = json.loads((out / "run.json").read_text())["gpu_meters"]
    assert g["copy_bandwidth_bytes_per_s"] > 0 and g["idle_power"]["synthetic:tiny"]["power_w"] > 0


@pytest.mark.gpu
def test_a_real_cuda_error_retires_the_worker_and_later_cells_still_run(tmp_path):
    """An out-of-bounds gather on the device (a device-side assert) poisons the CUDA context: the cell
    is failed with the CUDA error, the worker retired, and the next cell of the same group runs in a
    fresh worker. transformers-generate calls the model's forward, where the plug-in's hook sits."""
    from harness.cli import main
    from harness.records import load_records

    out = tmp_path / "cuda-error"
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "fault-test", "--device", "cuda",
                                  "--backends", "transformers-generate", "--batch", "1,10,9", "--quick",
                                  "--no-quality", "--plugins", "fault_plugin", "--energy-window-s", "1",
                                  "--out", str(out)])
    assert r.exit_code == 1, r.output
    recs = load_records(out)
    assert [(x.batch_size, x.status) for x in recs] == [(1, "ok"), (10, "failed"), (9, "ok")], [x.reason for x in recs]
    assert "CUDA error" in recs[1].reason
    assert recs[1].extra["worker"]["pid"] != recs[2].extra["worker"]["pid"]
    assert recs[2].decode_tok_s > 0


def test_one_worker_per_model_runs_every_variant_group_of_it(tmp_path):
    """The model is loaded once per worker, so a worker takes all the groups of its model: two
    variants of tiny share a worker; a crash in one still costs only its own cell (test_faults)."""
    from harness.runner import run_sweep

    cells = fault_plugin.tiny_cells((1,), variants=("baseline", "int8-wo"))
    recs = run_sweep(cells, fault_plugin.tiny_settings(), fault_plugin.tiny_context())
    assert [(r.variant, r.status) for r in recs] == [("baseline", "ok"), ("int8-wo", "ok")]
    assert fault_plugin.worker_pid(recs[0]) == fault_plugin.worker_pid(recs[1]) != os.getpid()
