"""`--executor ray`: each model group of each profile is a Ray task placed on a node that advertises
that profile (the custom resource `profile:<id>`, one unit per node, set by `harness worker`), and
its records stream back to this process, the driver, as its cells finish.

Guarantees, the same as the local executor's (harness/executor/local.py), the driver being the only
writer of the run folder:
- records arrive through `on_record` in order of completion across nodes, each cell exactly once
  (the task is never retried by Ray: max_retries=0; a duplicate message is refused);
- on the node, the local supervisor runs the group (a crash, hang or OOM in a cell is its `failed`
  record there);
- a node lost mid-group (its raylet dies, the machine goes away): the cell in flight becomes a
  `failed` record ("node lost: ..."), and the group's remaining cells are submitted again, at most
  MAX_RESUBMITS times (each resubmission noted on the records in extra["ray_resubmits"]);
- a profile with no live node for `ray_node_timeout_s`: its cells are
  `unsupported: no node with profile X`, never a task waiting forever;
- SIGINT/SIGTERM: the tasks are cancelled, the cells in flight recorded as failed, Interrupted.

ray is imported only here, when --executor ray is asked for (an optional extra: pip install .[ray]).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from harness.executor.ray_node import resource_name
from harness.executor.signals import Interrupted, SignalWatch, signal_name

POLL_S = 0.5          # ray.wait timeout: how often the driver checks signals and node liveness
MAX_RESUBMITS = 2     # a group whose node was lost runs again on another node at most this often


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs the ray package: pip install 'harness[ray]'") from None
    return ray


def fleet_profile(request: str, profiles_dir, cpu_power_w):
    """The run's profile for `harness run --executor ray`: the requested ids (comma list), which need
    not be known here (a node advertises its own); `auto` is this machine's detected profile. Returns
    (a profile-like object whose id is the ids joined by commas, why)."""
    ids = [p.strip() for p in request.split(",") if p.strip()]
    if not ids:
        raise ValueError("--profile: give at least one profile id")
    if "auto" in ids:
        from harness.profiles import detect

        auto = detect(profiles_dir, cpu_power_w=cpu_power_w).profile
        ids = [auto.id if p == "auto" else p for p in ids]
    dup = sorted({p for p in ids if ids.count(p) > 1})
    if dup:
        raise ValueError(f"--profile: {', '.join(dup)} given twice")
    _ray()   # bad input before anything runs: the extra is missing
    return SimpleNamespace(id=",".join(ids)), f"run on the Ray nodes advertising {', '.join(ids)}"


@dataclass
class _Group:
    profile: str
    cells: list                       # still without a record, in order
    resubmits: int = 0
    gen: object = None                # the task's ObjectRefGenerator once submitted
    in_flight: object = None          # the cell whose ("start") came last
    node: dict = field(default_factory=dict)
    waiting_since: float | None = None   # since when no live node has its profile


def _groups(cells: list) -> list[_Group]:
    key = lambda c: (c.profile, c.model, c.variant, c.backend)  # noqa: E731
    return [_Group(k[0], list(g)) for k, g in itertools.groupby(cells, key=key)]


def run_ray(cells: list, settings, ctx, on_record=None, on_start=None, profiles_dir=None, on_phase=None) -> list:
    """Run `cells` (Cell.profile set) on the Ray cluster at settings.ray_address; returns the records
    in order of completion. Raises Interrupted on SIGINT/SIGTERM. on_phase(cell, name, n): the phase
    of a cell in flight on a node (harness.phases), relayed from the node's supervisor."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=settings.ray_address or "auto", log_to_driver=False, logging_level="WARNING")
    d = _Driver(ray, len(cells), settings, ctx, on_record, on_start, profiles_dir)
    d.on_phase = on_phase
    with SignalWatch() as watch:
        d.todo = _groups(cells)
        while d.todo or d.active:
            if watch.signum is not None:
                d.interrupt(watch.signum)
                raise Interrupted(watch.signum, d.records)
            d.submit_ready()
            d.poll()
    return d.records


class _Driver:
    def __init__(self, ray, n, settings, ctx, on_record, on_start, profiles_dir):
        from harness.executor.ray_node import run_group_on_node

        self.ray, self.n, self.settings, self.ctx = ray, n, settings, ctx
        self.on_record, self.on_start = on_record, on_start
        self.on_phase = None
        self.profiles_dir = str(profiles_dir) if profiles_dir else None
        self.records: list = []
        self.done: set[int] = set()
        self.todo: list[_Group] = []
        self.active: list[_Group] = []
        self.task = ray.remote(num_returns="streaming", max_retries=0, num_cpus=0)(run_group_on_node)

    # -- nodes ------------------------------------------------------------------------------------
    def live_profiles(self) -> set[str]:
        return {k for n in self.ray.nodes() if n.get("Alive") for k in n.get("Resources", {})}

    def _no_node(self, g: _Group, live: set[str], now: float) -> bool:
        """True once g's profile has had no live node for ray_node_timeout_s."""
        if resource_name(g.profile) in live:
            g.waiting_since = None
            return False
        g.waiting_since = g.waiting_since or now
        return now - g.waiting_since >= self.settings.ray_node_timeout_s

    def submit_ready(self) -> None:
        live, now, still = self.live_profiles(), time.monotonic(), []
        for g in self.todo:
            if resource_name(g.profile) in live:
                g.waiting_since = None
                g.gen = self.task.options(resources={resource_name(g.profile): 1}).remote(
                    g.cells, self.settings, self.ctx.run_id, self.ctx.provenance, self.profiles_dir)
                self.active.append(g)
            elif self._no_node(g, live, now):
                self._unsupported(g)
            else:
                still.append(g)
        self.todo = still
        for g in list(self.active):   # a queued task whose only node went away would wait forever
            if g.in_flight is None and self._no_node(g, live, now):
                self.ray.cancel(g.gen, force=True)
                self.active.remove(g)
                self._unsupported(g)

    # -- messages ---------------------------------------------------------------------------------
    def poll(self) -> None:
        if not self.active:
            if self.todo:
                time.sleep(POLL_S)
            return
        ready, _ = self.ray.wait([g.gen for g in self.active], num_returns=1, timeout=POLL_S)
        for gen in ready:
            g = next(x for x in self.active if x.gen is gen)
            try:
                msg = self.ray.get(next(gen))
            except StopIteration:
                self.active.remove(g)
                self._fail_rest(g, "the node's task ended without their record")
                continue
            except self.ray.exceptions.RayTaskError as e:   # an error raised by the task itself
                self.active.remove(g)
                self._fail_rest(g, f"node task failed: {str(e).strip().splitlines()[-1][:300]}")
                continue
            except Exception as e:  # noqa: BLE001  (node died, worker crashed, object lost: the node is gone)
                self.active.remove(g)
                self._lost(g, e)
                continue
            self._handle(g, msg)

    def _handle(self, g: _Group, msg: tuple) -> None:
        kind = msg[0]
        if kind == "node":
            g.node = msg[1]
        elif kind == "start":
            g.in_flight = next(c for c in g.cells if c.index == msg[1])
            if self.on_start:
                self.on_start(g.in_flight, self.n)
        elif kind == "phase":
            if self.on_phase and g.in_flight is not None and g.in_flight.index == msg[1]:
                self.on_phase(g.in_flight, msg[2], self.n)
        elif kind == "record":
            from harness.records import from_envelope

            cell = next(c for c in g.cells if c.index == msg[1])
            rec = from_envelope(msg[2])
            if g.resubmits:
                rec.extra["ray_resubmits"] = g.resubmits
            g.cells.remove(cell)
            g.in_flight = None
            self._emit(cell, rec)
        elif kind == "gpu":
            self.merge_gpu(msg[1], g.node)
        elif kind == "error":
            self._fail_rest(g, f"node supervisor failed: {msg[1]}")

    def merge_gpu(self, snap, node: dict) -> None:
        """A node's GPU run meters, as the local supervisor merges its workers' (run.json's gpu_meters:
        the first node's copy bandwidth and counter period, idle power per model from all), and each
        node's own under ctx.gpu_by_node (nodes of several profiles differ)."""
        key = node.get("ray_node_id") or node.get("host") or "node"
        self.ctx.gpu_by_node[key] = snap
        if self.ctx.gpu is None:
            self.ctx.gpu = SimpleNamespace(copy_bw=snap.copy_bw, meter=snap.meter,
                                           idle_by_model=dict(snap.idle_by_model))
        else:
            for k, v in snap.idle_by_model.items():
                self.ctx.gpu.idle_by_model.setdefault(k, v)

    def _lost(self, g: _Group, e: BaseException) -> None:
        why = f"node lost: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
        if g.in_flight is not None:
            self._fail(g, g.in_flight, why)
        if not g.cells:
            return
        if g.resubmits >= MAX_RESUBMITS:
            self._fail_rest(g, f"{why} (after {g.resubmits} resubmission(s))")
            return
        self.todo.insert(0, _Group(g.profile, list(g.cells), g.resubmits + 1))

    # -- records ----------------------------------------------------------------------------------
    def _emit(self, cell, rec) -> None:
        if cell.index in self.done:
            raise RuntimeError(f"cell {cell.index} got a second record")
        self.done.add(cell.index)
        self.records.append(rec)
        if self.on_record:
            self.on_record(cell, rec, self.n)

    def _record(self, cell, status: str, reason: str, node: dict):
        from harness.sweep import cell_record

        extra = {"node": node} if node else {}
        return cell_record(cell, self.ctx, status=status, reason=reason, extra=extra)

    def _fail(self, g: _Group, cell, why: str) -> None:
        g.cells.remove(cell)
        g.in_flight = None
        self._emit(cell, self._record(cell, "failed", why, g.node))

    def _fail_rest(self, g: _Group, why: str) -> None:
        for cell in list(g.cells):
            self._fail(g, cell, why)

    def _unsupported(self, g: _Group) -> None:
        why = f"no node with profile {g.profile} (waited {self.settings.ray_node_timeout_s:g} s)"
        for cell in list(g.cells):
            g.cells.remove(cell)
            self._emit(cell, self._record(cell, "unsupported", why, {}))

    def interrupt(self, signum: int) -> None:
        for g in self.active:
            self.ray.cancel(g.gen, force=True)
            if g.in_flight is not None:
                self._fail(g, g.in_flight, f"interrupted by {signal_name(signum)}")
        self.active = []
