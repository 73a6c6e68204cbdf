"""--executor ray on a real local Ray cluster (ray.cluster_utils.Cluster: a head and two worker
nodes, each its own raylet on this machine, advertising the profiles ray-test-a and ray-test-b),
on synthetic:tiny on CPU with the fault-test variant (tests/fault_plugin.py). Placement by profile,
records streamed as cells finish with no duplicate, a profile without a node, the driver SIGKILLed
and resumed, and (last: it changes the cluster) a node lost mid-cell."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

import fault_plugin  # noqa: E402
from harness.records import load_records  # noqa: E402
from harness.run_command import _stamp_profiles  # noqa: E402
from harness.runner import run_sweep  # noqa: E402

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
A, B = "ray-test-a", "ray-test-b"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The nodes' raylets and workers inherit this environment: the worktree's harness and
    tests/fault_plugin.py importable, Ray's files under a temporary folder, no usage report."""
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "HARNESS_PLUGIN_PATH": str(TESTS),
           "RAY_TMPDIR": str(tmp_path_factory.mktemp("ray")), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_SCHEDULER_EVENTS": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes = {A: c.add_node(num_cpus=1, resources={f"profile:{A}": 1}),
                 B: c.add_node(num_cpus=1, resources={f"profile:{B}": 1})}
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)   # this process is the driver of the in-process sweeps
        yield c, nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def node_of(profile: str) -> set:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"] and f"profile:{profile}" in n["Resources"]}


def sweep(c, batches, profiles, **kw):
    cells = _stamp_profiles(fault_plugin.tiny_cells(batches), list(profiles))
    settings = fault_plugin.tiny_settings(executor="ray", ray_address=c.address, **kw)
    events = []
    recs = run_sweep(cells, settings, fault_plugin.tiny_context("ray"),
                     on_record=lambda cell, r, n: events.append(("record", cell.index, time.monotonic())),
                     on_start=lambda cell, n: events.append(("start", cell.index, time.monotonic())))
    return cells, recs, events


def test_placement_by_profile_and_streamed_records(cluster):
    c, _ = cluster
    cells, recs, events = sweep(c, (1, 8), (A, B), ray_node_timeout_s=60)
    assert sorted((r.profile, r.batch_size) for r in recs) == [(A, 1), (A, 8), (B, 1), (B, 8)]
    assert all(r.status == "ok" and r.decode_tok_s > 0 for r in recs), [r.reason for r in recs]
    for r in recs:   # measured on a node advertising the record's profile, which provenance names
        assert {r.extra["node"]["ray_node_id"]} <= node_of(r.profile)
        assert r.extra["worker"]["pid"] != r.extra["node"]["pid"]   # --isolation process: a spawned worker
        assert r.extra["node"]["host"] and r.provenance["node"]["ray_node_id"] == r.extra["node"]["ray_node_id"]
    got = [i for kind, i, _ in events if kind == "record"]
    assert sorted(got) == [c.index for c in cells]                      # each cell once, no duplicate
    starts = [t for kind, _, t in events if kind == "start"]
    first_record = next(t for kind, _, t in events if kind == "record")
    assert first_record < max(starts)          # streamed: a record came in before the last cell started


def test_profile_without_a_node_is_unsupported(cluster):
    c, _ = cluster
    t0 = time.monotonic()
    _, recs, _ = sweep(c, (1, 8), ("ray-test-nobody",), ray_node_timeout_s=2)
    assert [r.status for r in recs] == ["unsupported", "unsupported"]
    assert all(r.reason.startswith("no node with profile ray-test-nobody") for r in recs)
    assert time.monotonic() - t0 < 30


def test_isolation_none_runs_the_cells_in_the_node_process(cluster):
    c, _ = cluster
    _, recs, _ = sweep(c, (1, 8), (A,), ray_node_timeout_s=60, isolation="none")
    assert [r.status for r in recs] == ["ok", "ok"], [r.reason for r in recs]
    assert all("worker" not in r.extra for r in recs)          # no spawned worker stamped them
    assert {r.extra["node"]["isolation"] for r in recs} == {"none"}
    assert len({r.extra["node"]["pid"] for r in recs}) == 1 and recs[0].extra["node"]["pid"] != os.getpid()


METER_KEYS = ("energy_source", "energy_method", "energy_j", "power_mean_w", "idle_power_w", "mbu",
              "peak_vram_bytes", "achieved_bandwidth_bytes_per_s")


def _meter_view(r) -> dict:
    """What a record says about its meters, less the figures that differ between two runs."""
    d = r.to_dict()
    view = {k: d.get(k) for k in METER_KEYS}
    view["energy_j"] = view["energy_j"] is None
    view["power_mean_w"] = view["power_mean_w"] is None
    view["energy_method"] = (view["energy_method"] or "").split(";")[0]
    view["rss"] = r.peak_rss_bytes is not None and r.peak_rss_bytes > 0
    return view


def test_node_meters_say_what_the_local_path_says(cluster):
    from harness.run_command import NO_GPU_METERS, gpu_meters_meta

    c, _ = cluster
    cells = _stamp_profiles(fault_plugin.tiny_cells((1,)), [A])
    local_ctx, ray_ctx = fault_plugin.tiny_context("local"), fault_plugin.tiny_context("ray")
    local = run_sweep(cells, fault_plugin.tiny_settings(), local_ctx)
    remote = run_sweep(cells, fault_plugin.tiny_settings(executor="ray", ray_address=c.address), ray_ctx)
    assert [r.status for r in local + remote] == ["ok", "ok"], [r.reason for r in local + remote]
    assert local[0].energy_source is not None and _meter_view(remote[0]) == _meter_view(local[0])
    # CPU: the GPU run meters are unavailable, with the same reason on both paths, never missing
    assert gpu_meters_meta(ray_ctx) == gpu_meters_meta(local_ctx) == {"available": False, "reason": NO_GPU_METERS}


def test_progress_counts_finished_cells_across_concurrent_groups(cluster):
    """harness run's progress lines (run_command.Progress) fed by a sweep whose two groups run at the
    same time on the two nodes. Each cell times passes for at least 1.5 s, so that the groups overlap
    although the nodes' workers start a second or two apart."""
    from harness.options import MeterSettings
    from harness.run_command import Progress

    c, _ = cluster
    cells = _stamp_profiles(fault_plugin.tiny_cells((1, 8, 9)), [A, B])
    progress, lines = Progress(len(cells), 0, several_profiles=True), []
    settings = fault_plugin.tiny_settings(executor="ray", ray_address=c.address,
                                          meter=MeterSettings(warmup=0, min_repeats=1, min_seconds=1.5))
    run_sweep(cells, settings, fault_plugin.tiny_context("ray"),
              on_start=lambda cell, n: lines.append(progress.start_line(cell)),
              on_record=lambda cell, r, n: lines.append(progress.record_line(cell, r.status)))
    text = "\n".join(lines)
    started = [ln for ln in lines if " ... (" in ln]
    finished = [ln for ln in lines if " ... (" not in ln]
    assert [ln.split("]")[0] for ln in started] == [f"[{i}/6" for i in range(1, 7)], text
    assert [ln.split("]")[0] for ln in finished] == [f"[{i}/6" for i in range(1, 7)], text
    assert started[-1].endswith("(0 after this)") and all(ln.endswith(": ok") for ln in finished), text
    # the two groups ran at the same time: each one's first cell started before the other's last ended
    # (cell order puts A's first: numbering by cell index would not have counted up)
    at = {(kind, prof): [i for i, ln in enumerate(lines) if (" ... (" in ln) == (kind == "start")
                         and f" on {prof}" in ln] for kind in ("start", "record") for prof in (A, B)}
    assert all(len(v) == 3 for v in at.values()), text
    assert at["start", A][0] < at["record", B][-1] and at["start", B][0] < at["record", A][-1], text


def _cli(c, out: Path, *extra):
    env = dict(os.environ, HARNESS_PLUGIN_PATH=str(TESTS))
    args = [sys.executable, "-m", "harness.cli", "run", "--executor", "ray", "--address", c.address,
            "--profile", A, "--model", "synthetic:tiny", "--variants", "fault-test", "--batch", "1,6,8",
            "--prompt-tokens", "8", "--new-tokens", "4", "--warmup", "0", "--repeats", "1", "--min-seconds", "0",
            "--device", "cpu", "--cpu-power-w", "40", "--no-quality", "--cell-timeout-s", "8",
            "--plugins", "fault_plugin", *extra]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_driver_killed_then_resumed(cluster, tmp_path):
    c, _ = cluster
    out = tmp_path / "run"
    p = _cli(c, out, "--out", str(out))
    jsonl = out / "records.jsonl"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:
            if jsonl.exists() and jsonl.read_text().count("\n") >= 1:   # batch 1 in; batch 6 hangs now
                break
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    first = load_records(jsonl)
    assert [r.batch_size for r in first] == [1]
    q = _cli(c, out, "--resume", str(out))
    stdout, stderr = q.communicate(timeout=300)
    assert q.returncode == 1, stderr                       # batch 6 hangs past its timeout again: failed
    recs = load_records(jsonl)
    assert sorted(r.batch_size for r in recs) == [1, 6, 8]  # no duplicate, nothing lost
    assert recs[0] == first[0]
    by = {r.batch_size: r for r in recs}
    assert by[6].status == "failed" and "timed out after 8 s" in by[6].reason
    assert by[8].status == "ok" and by[8].profile == A
    assert stdout.strip().splitlines()[-1] == str(out)


def test_node_lost_mid_cell_fails_that_cell_and_the_rest_run(cluster):
    """Last: it removes node B (SIGKILL of its raylet and workers) while B's cell hangs, then adds a
    fresh B node, on which the group's remaining cell runs (one recorded resubmission). The sweep
    runs in a thread: Ray adds nodes from the main thread only."""
    c, nodes = cluster
    old = node_of(B)
    cells = _stamp_profiles(fault_plugin.tiny_cells((6, 8)), [B])
    settings = fault_plugin.tiny_settings(executor="ray", ray_address=c.address, ray_node_timeout_s=120,
                                          cell_timeout_s=300)
    hanging, result = threading.Event(), {}

    def on_start(cell, n):
        if cell.batch_size == 6:
            hanging.set()

    def body():
        result["recs"] = run_sweep(cells, settings, fault_plugin.tiny_context("ray"), on_start=on_start)

    t0 = time.monotonic()
    t = threading.Thread(target=body, daemon=True)
    t.start()
    assert hanging.wait(180)
    time.sleep(2.0)
    c.remove_node(nodes[B], allow_graceful=False)
    nodes[B] = c.add_node(num_cpus=1, resources={f"profile:{B}": 1})
    t.join(240)
    assert not t.is_alive()
    recs = result["recs"]
    by = {r.batch_size: r for r in recs}
    assert sorted(by) == [6, 8] and len(recs) == 2
    assert by[6].status == "failed" and by[6].reason.startswith("node lost"), by[6].reason
    assert by[8].status == "ok" and by[8].extra["ray_resubmits"] == 1, by[8].reason
    assert by[8].extra["node"]["ray_node_id"] not in old
    assert time.monotonic() - t0 < 300
