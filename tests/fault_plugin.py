"""Test-only plug-in: the `fault-test` variant, which misbehaves in the model's forward according to
the batch size of the cell, so that one group exercises every way a cell can go wrong while the other
cells of the group still run (on a fresh worker after a crash).

Loaded by name (`fault_plugin`) through RunSettings.plugins or $HARNESS_PLUGINS; pytest puts tests/
on sys.path and spawned workers inherit it; a `python -m harness.cli` subprocess gets it from
$HARNESS_PLUGIN_PATH. The out-of-memory kill is simulated: the worker sends itself SIGKILL, which is
what the Linux OOM killer sends.
"""
from __future__ import annotations

import os
import signal
import time

from harness.variants.registry import REGISTRY, ApplyResult, Requirements, Variant, register

NAME = "fault-test"
# batch size -> what the cell's forward does; other batch sizes run normally
FAULTS = {2: "raise", 3: "exit", 4: "segfault", 5: "oom-kill", 6: "hang", 7: "cuda-error", 10: "device-assert"}
HANG_S = 3600.0


def misbehave(fault: str, device=None) -> None:
    if fault == "raise":
        raise RuntimeError("deliberate fault in the forward")
    if fault == "exit":
        os._exit(3)
    if fault == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fault == "oom-kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang" and not os.environ.get("FAULT_PLUGIN_NO_HANG"):   # set: the resumed run gets past it
        time.sleep(HANG_S)
    if fault == "cuda-error":   # the text torch gives an illegal access: RetireWorker ends the worker
        raise RuntimeError("CUDA error: an illegal memory access was encountered (deliberate)")
    if fault == "device-assert":   # a real one on a GPU: an out-of-bounds gather trips a device-side assert,
        import torch               # which poisons the CUDA context for every later cell of this process

        x = torch.zeros(4, device=device)
        x[torch.tensor([1 << 20], device=device)].sum().item()


def _hook(module, args, kwargs):
    ids = kwargs.get("input_ids", args[0] if args else None)
    fault = FAULTS.get(int(ids.shape[0])) if ids is not None else None
    if fault:
        misbehave(fault, ids.device)


def _apply(model, ctx) -> ApplyResult:
    model.register_forward_pre_hook(_hook, with_kwargs=True)
    return ApplyResult(kernel=f"fault-test pid={os.getpid()}", layers_changed=0)


def _apply_fails(model, ctx) -> ApplyResult:
    raise RuntimeError("deliberate failure")


if NAME not in REGISTRY:
    # the baseline's storage layout: these variants change no weight (a hook; an apply that raises)
    _layout = REGISTRY["baseline"].layout
    register(Variant(NAME, "test-only: faults by batch size (tests/fault_plugin.py)", Requirements(devices=("cpu", "cuda")),
                     _apply, layout=_layout, changes_weights=False))
    register(Variant("apply-fails", "test-only: apply() raises (tests/fault_plugin.py)", Requirements(), _apply_fails,
                     layout=_layout))


# -- helpers for the tests that use this plug-in: a tiny CPU workload ------------------------------
def tiny_settings(**kw):
    from harness.options import MeterSettings
    from harness.quality.settings import QualitySettings
    from harness.runner import RunSettings

    base = dict(device="cpu", meter=MeterSettings(warmup=0, min_repeats=1, min_seconds=0.0), cpu_power_w=40.0,
                quality=QualitySettings(enabled=False), plugins=("fault_plugin",))
    return RunSettings(**{**base, **kw})


def tiny_context(run_id: str = "faults"):
    from harness import provenance
    from harness.run_command import resolve_profile
    from harness.runner import RunContext

    profile, _ = resolve_profile("auto", None, 40.0)
    return RunContext(run_id=run_id, profile=profile, provenance=provenance.collect(profile.id))


def tiny_cells(batches, variants=(NAME,)):
    from harness.runner import SweepAxes, expand

    return expand(SweepAxes(("synthetic:tiny",), tuple(variants), tuple(batches), (8,), (4,), backends=("pytorch",)))


def worker_pid(rec) -> int | None:
    return (rec.extra.get("worker") or {}).get("pid")
