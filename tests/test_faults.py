"""Fault injection: cells that raise, exit, segfault, are OOM-killed (simulated: SIGKILL to itself)
or hang, each in one group of the `fault-test` variant (tests/fault_plugin.py), on synthetic:tiny on
CPU. The sweep must finish, with exactly one record per cell, in cell order, and the faulty cells
`failed` with a reason that names what happened; the rest run on fresh workers."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fault_plugin
from harness.records import load_records
from harness.runner import run_sweep

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 8.0     # the hang's cost; a normal cell here takes well under a second after start-up


@pytest.fixture(scope="module")
def fault_sweep():
    """Batch b of fault-test does FAULTS[b] (1 and 8 run normally): six workers in all."""
    cells = fault_plugin.tiny_cells(range(1, 9))
    started, emitted = [], []
    t0 = time.perf_counter()
    recs = run_sweep(cells, fault_plugin.tiny_settings(cell_timeout_s=TIMEOUT_S), fault_plugin.tiny_context(),
                     on_record=lambda c, r, n: emitted.append((c.index, r)),
                     on_start=lambda c, n: started.append(c.index))
    return cells, recs, started, emitted, time.perf_counter() - t0


def by_batch(recs):
    return {r.batch_size: r for r in recs}


def test_sweep_completes_one_record_per_cell_in_order(fault_sweep):
    cells, recs, started, emitted, wall = fault_sweep
    assert [r.batch_size for r in recs] == [c.batch_size for c in cells] == list(range(1, 9))
    assert [i for i, _ in emitted] == [c.index for c in cells]          # on_record: each cell once, in order
    assert [r for _, r in emitted] == recs
    assert started == [c.index for c in cells]                           # on_start: each cell once
    assert wall < 240, wall


def test_cells_beside_the_faults_are_ok(fault_sweep):
    _, recs, *_ = fault_sweep
    b = by_batch(recs)
    assert {k: r.status for k, r in b.items() if k not in fault_plugin.FAULTS} == {1: "ok", 8: "ok"}
    assert b[1].decode_tok_s > 0 and b[8].decode_tok_s > 0
    assert all(r.status == "failed" for k, r in b.items() if k in fault_plugin.FAULTS)


def test_a_raising_cell_is_a_row_and_its_worker_goes_on(fault_sweep):
    b = by_batch(fault_sweep[1])
    assert b[2].reason == "RuntimeError: deliberate fault in the forward"
    assert "deliberate fault" in b[2].extra["traceback"]
    assert fault_plugin.worker_pid(b[2]) == fault_plugin.worker_pid(b[1]) != os.getpid()


def test_non_zero_exit(fault_sweep):
    r = by_batch(fault_sweep[1])[3]
    assert r.reason.startswith("worker exited with code 3")
    assert r.extra["worker"]["exitcode"] == 3 and "worker_stderr_tail" in r.extra
    assert fault_plugin.worker_pid(r) == fault_plugin.worker_pid(by_batch(fault_sweep[1])[1])


def test_segfault_names_the_signal_and_keeps_the_stack(fault_sweep):
    r = by_batch(fault_sweep[1])[4]
    assert r.reason == "worker killed by SIGSEGV; stderr: Fatal Python error: Segmentation fault"
    assert r.extra["worker"]["exitcode"] == -signal.SIGSEGV
    tail = r.extra["worker_stderr_tail"]
    assert "fault_plugin.py" in tail and "misbehave" in tail and len(tail) <= 2100


def test_oom_kill_simulated_by_sigkill(fault_sweep):
    r = by_batch(fault_sweep[1])[5]
    assert r.reason.startswith("worker killed by SIGKILL (the host's OOM killer")
    assert r.extra["worker"]["exitcode"] == -signal.SIGKILL


def test_hang_is_killed_at_the_timeout_with_its_stack(fault_sweep):
    r = by_batch(fault_sweep[1])[6]
    assert r.reason.startswith(f"timed out after {TIMEOUT_S:g} s (killed)")
    assert r.extra["worker"]["exitcode"] == -signal.SIGKILL
    assert "in misbehave" in r.extra["worker_stderr_tail"]     # faulthandler's dump before the kill


def test_cuda_error_retires_the_worker_and_a_fresh_one_goes_on(fault_sweep):
    b = by_batch(fault_sweep[1])
    assert b[7].reason.startswith("RuntimeError: CUDA error: an illegal memory access")
    # every crash and the retirement cost one worker: b1-b3, b4, b5, b6, b7, b8 each on its own
    pids = [fault_plugin.worker_pid(b[k]) for k in (1, 4, 5, 6, 7, 8)]
    assert len(set(pids)) == 6 and os.getpid() not in pids
    assert f"pid={fault_plugin.worker_pid(b[8])}" in b[8].kernel      # measured in the worker it names


# -- the whole run interrupted ---------------------------------------------------------------------
SWEEP = ["--model", "synthetic:tiny", "--variants", "fault-test", "--batch", "1,6,8", "--prompt-tokens", "8",
         "--new-tokens", "4", "--warmup", "0", "--repeats", "1", "--min-seconds", "0", "--no-quality",
         "--device", "cpu", "--cpu-power-w", "40"]


def _start_cli(out: Path, new_session: bool, args=None, **env_extra) -> subprocess.Popen:
    env = dict(os.environ, HARNESS_PLUGINS="fault_plugin", HARNESS_PLUGIN_PATH=str(ROOT / "tests"),
               PYTHONPATH=str(ROOT), **env_extra)
    cmd = [sys.executable, "-m", "harness.cli", "run"] + (args or SWEEP + ["--out", str(out)])
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_interrupted_mid_sweep(tmp_path, signum):
    """SIGTERM to the parent (a scheduler), SIGINT to the whole process group (Ctrl-C in a terminal,
    which the worker must leave to the parent): exit 143 / 130, the finished cell and the interrupted
    one recorded, run.json complete: false, the run folder printed last."""
    out = tmp_path / "run"
    p = _start_cli(out, new_session=True)
    watchdog = threading.Timer(180, p.kill)
    watchdog.start()
    try:
        seen = []
        for line in p.stderr:                 # the parent's progress lines
            seen.append(line)
            if line.startswith("[2/3]") and "batch=6" in line:   # the hanging cell has started
                break
        assert seen and seen[-1].startswith("[2/3]"), "".join(seen)
        if signum == signal.SIGINT:
            os.killpg(p.pid, signal.SIGINT)
        else:
            p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
    name = signal.Signals(signum).name
    assert p.returncode == 128 + signum, "".join(seen) + stderr
    assert stdout.strip().splitlines()[-1] == str(out)
    recs = load_records(out)
    assert [(r.batch_size, r.status) for r in recs] == [(1, "ok"), (6, "failed")]
    assert recs[1].reason == f"interrupted by {name}"
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False and run["cells"] == 3 and run["interrupted_by"] == name
    assert (out / "report.md").is_file()
    with pytest.raises(ProcessLookupError):                 # no worker left behind
        os.kill(fault_plugin.worker_pid(recs[1]), 0)


def test_run_sigkilled_mid_sweep_then_resumed(tmp_path):
    """SIGKILL to the parent (nothing can be caught): the finished cell's record survives, the lock
    dies with the process, and --resume measures exactly the two cells without a record."""
    out = tmp_path / "run"
    p = _start_cli(out, new_session=True)
    watchdog = threading.Timer(180, p.kill)
    watchdog.start()
    try:
        for line in p.stderr:
            if line.startswith("[2/3]") and "batch=6" in line:   # cell 1 recorded, cell 2 hanging
                break
        os.killpg(p.pid, signal.SIGKILL)                          # the parent and its worker
        p.wait(timeout=60)
    finally:
        watchdog.cancel()
    assert p.returncode == -signal.SIGKILL
    assert [(r.batch_size, r.status) for r in load_records(out)] == [(1, "ok")]
    assert json.loads((out / "run.json").read_text())["complete"] is False
    r = _start_cli(out, new_session=True, args=["--resume", str(out)], FAULT_PLUGIN_NO_HANG="1")
    stdout, stderr = r.communicate(timeout=300)
    assert r.returncode == 0, stderr
    recs = load_records(out)
    assert [(x.batch_size, x.status) for x in recs] == [(1, "ok"), (6, "ok"), (8, "ok")]   # none lost, none twice
    assert json.loads((out / "run.json").read_text())["complete"] is True
