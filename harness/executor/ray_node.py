"""The node side of `--executor ray`: what a Ray task runs on the node that a model group was placed
on, and the names nodes advertise their profile under.

The task runs the group with the local supervisor (harness.executor.local.run_supervised) on that
node, so a cell that crashes, hangs or exhausts memory there costs one `failed` record exactly as on
one machine, and yields its messages to the driver as they happen (a Ray streaming generator):

    ("node", info)                    first: who measures (host, Ray node id, CPU, GPUs, driver)
    ("start", cell_index)             before each cell
    ("phase", cell_index, name)       the cell enters a phase (harness.phases)
    ("record", cell_index, envelope)  its Record (harness.records.to_envelope)
    ("gpu", snapshot)                 last, where a CUDA cell opened the GPU run meters on this node:
                                      their run-level figures (harness.executor.worker.gpu_snapshot),
                                      which the driver writes to run.json as the local executor does

`settings.isolation` is honoured as on one machine: `process` runs each model in a spawned worker
under the local supervisor; `none` runs the cells in the Ray worker process itself (harness.runner's
in-process loop), for debugging.

The node writes no file of the run: the driver appends each record. Imported by Ray workers only
(and by `harness worker` for the resource names); importing it does not import ray.
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import socket
import threading

RESOURCE_PREFIX = "profile:"
_RESOURCE_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
_END = object()


def resource_name(profile_id: str) -> str:
    """The Ray custom resource a node of `profile_id` advertises (one unit: one group at a time, so
    two benchmarks never share a machine). Profile ids are slugs ([a-z0-9-], see profiles/*.yaml and
    detection's `cpu-<model>`); anything else is mapped to `_` so the name stays a plain token."""
    return RESOURCE_PREFIX + _RESOURCE_CHARS.sub("_", profile_id)


def resources_json(profile_id: str) -> str:
    """The `ray start --resources` argument of a node of `profile_id`."""
    return json.dumps({resource_name(profile_id): 1})


def node_info() -> dict:
    """Who measures on this node: host, Ray node id and address, CPU, GPUs and the NVIDIA driver."""
    from harness.profiles.detection import read_nvml
    from harness.provenance import cpu_name

    info = {"host": socket.gethostname(), "pid": os.getpid(), "cpu": cpu_name(), "gpu": None, "gpu_count": 0,
            "gpu_driver": None}
    try:
        import ray

        rc = ray.get_runtime_context()
        info["ray_node_id"] = rc.get_node_id()
        info["ip"] = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001  (outside a Ray worker: no node id)
        pass
    gpu, _ = read_nvml()
    if gpu is not None:
        info.update(gpu=gpu.name, gpu_count=gpu.count, gpu_driver=gpu.driver)
    return info


def node_profile(profile_id: str, profiles_dir: str | None, cpu_power_w: float | None):
    """The Profile of this node for cells of `profile_id`: the shipped (or --profiles-dir) profile of
    that id, else this machine's detected one; a node started with `harness worker --profile ID` (its
    operator's word) gets the detected figures under that id. Returns (profile, how)."""
    from harness.profiles import detect, load_profiles

    try:
        known = load_profiles(profiles_dir)
    except Exception:  # noqa: BLE001  (the driver's --profiles-dir need not exist on this node)
        known = load_profiles(None)
    if profile_id in known:
        return known[profile_id], "the profile of that id"
    d = detect(profiles=known, cpu_power_w=cpu_power_w)
    if d.profile.id == profile_id:
        return d.profile, d.reason
    return dataclasses.replace(d.profile, id=profile_id), f"advertised as {profile_id}; detected {d.profile.id}"


def run_group_on_node(cells: list, settings, run_id: str, provenance: dict, profiles_dir: str | None):
    """Generator body of the Ray task (see the module docstring). The cells run in a thread so that
    nothing installs a signal handler in the Ray worker (SignalWatch and run_interruptible watch
    nothing off the main thread); a driver that goes away takes the Ray worker with it, and a spawned
    cell worker dies with its parent (PR_SET_PDEATHSIG)."""
    from harness.executor.plugins import load_plugins
    from harness.records import to_envelope
    from harness.sweep import RunContext

    load_plugins(settings.plugins)
    info = node_info()
    profile, how = node_profile(cells[0].profile, profiles_dir, settings.cpu_power_w)
    info["profile_reason"] = how
    info["isolation"] = settings.isolation
    yield ("node", info)
    ctx = RunContext(run_id=run_id, profile=profile, provenance={**provenance, "node": info})
    local = dataclasses.replace(settings, executor="local")
    q: queue.Queue = queue.Queue()

    def on_record(cell, rec, _n):
        rec.extra["node"] = info
        q.put(("record", cell.index, to_envelope(rec)))

    def body():
        try:
            _run_cells(cells, local, ctx, on_record, lambda cell, _n: q.put(("start", cell.index)),
                       lambda cell, name, _n: q.put(("phase", cell.index, name)))
            if ctx.gpu is not None:
                from harness.executor.worker import gpu_snapshot

                q.put(("gpu", gpu_snapshot(ctx.gpu)))
        except BaseException as e:  # noqa: BLE001  (reported to the driver, which records the cells)
            q.put(("error", f"{type(e).__name__}: {e}"[:500]))
        finally:
            q.put(_END)

    t = threading.Thread(target=body, name="harness-node-supervisor", daemon=True)
    t.start()
    while True:
        msg = q.get()
        if msg is _END:
            break
        yield msg
    t.join()


def _run_cells(cells: list, settings, ctx, on_record, on_start, on_phase) -> None:
    """The local executor's two ways, as `harness run --isolation` picks them on one machine."""
    if settings.isolation == "none":
        from harness.executor.in_process import run_in_process
        from harness.executor.worker import configure_device
        from harness.phases import listening

        configure_device(settings)   # what a spawned worker does first: multicast off, CUDA allocator
        in_flight = [None]

        def start(cell, n: int) -> None:
            in_flight[0] = cell
            on_start(cell, n)

        with listening(lambda name: on_phase(in_flight[0], name, len(cells))):
            run_in_process(cells, settings, ctx, on_record, start)
    else:
        from harness.executor.local import run_supervised

        run_supervised(cells, settings, ctx, on_record, on_start, on_phase)
