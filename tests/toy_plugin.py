"""A backend and a meter defined outside harness/, registered the way any plugin would be
(tests/test_pipeline_plugins.py). Pure Python: no torch, no model files."""
from __future__ import annotations

import time

import numpy as np

from harness.backends import register_backend
from harness.backends.base import CellSkip, EngineChoice, PassResult
from harness.meters.base import register_meter

STEP_S = 0.001


class ToyEngine:
    name = "toy-loop"
    timing_source = "perf_counter"
    setup_s = 0.0

    def run_pass(self, ids, new_tokens):
        t0 = time.perf_counter()
        time.sleep(STEP_S)
        prefill = time.perf_counter() - t0
        steps = []
        for _ in range(new_tokens - 1):
            t = time.perf_counter()
            time.sleep(STEP_S)
            steps.append(time.perf_counter() - t)
        tokens = np.tile(np.arange(new_tokens), (ids.shape[0], 1))
        return PassResult(prefill, steps, tokens)

    def run_prefill(self, ids):
        time.sleep(STEP_S)


CHATTY_BATCH = 3   # this batch size hangs in its pass while announcing a phase every 50 ms


class ChattyHangEngine(ToyEngine):
    """Never finishes a pass, but sends phase messages all along: the cell timeout must still fire."""

    def run_pass(self, ids, new_tokens):
        from harness.phases import phase

        while True:
            phase("measure")
            time.sleep(0.05)


class ToyPrepared:
    device, device_type, dtype = "toy0", "toy", "int32"
    kernel = "toy kernel (sleep)"
    weight_bytes = 1234
    shape = None
    prepare_s = 0.0
    oom_errors = (MemoryError,)

    def __init__(self, variant):
        self.facts = {"weights_note": "no weights", "apply_s": 0.0}
        self.variant = variant

    def check_cell(self, cell):
        if cell.batch_size > 4:
            raise CellSkip("does-not-fit", "toy device holds batch 4 at most", kv_cache_bytes=cell.batch_size)
        return None

    def prompt(self, cell):
        return np.zeros((cell.batch_size, cell.prompt_tokens), dtype=np.int64), "zeros"

    def engine(self, cell):
        if cell.batch_size == CHATTY_BATCH:
            return EngineChoice(ChattyHangEngine(), ("a hang that keeps announcing phases",), True, {})
        return EngineChoice(ToyEngine(), ("toy has one path",), True, {})

    def reset_peaks(self):
        pass

    def release_engine(self):
        pass

    def quality(self):
        return None

    def close(self):
        pass


class ToyBackend:
    name = "toy"

    def prepare(self, model_spec, variant, settings, profile, model_cache):
        if variant.name != "baseline":       # variant: the cell's parsed harness.variants.VariantSpec
            raise CellSkip("unsupported", f"toy backend has no kernel for {variant.name}")
        return ToyPrepared(variant)


class ToyWindowMeter:
    """Wall time of the window, in a field the Record does not have (it lands in extra)."""
    name = "toy-window"

    def begin(self):
        self.t0 = time.perf_counter()

    def end(self):
        return time.perf_counter() - self.t0

    def record_fields(self, result):
        return {"toy_window_s": result}


register_backend("toy", ToyBackend)
register_meter("toy-window", lambda scope: ToyWindowMeter() if getattr(scope.cell, "backend", None) == "toy" else None)
