"""What one rank runs: load the model, shard it, build its engine, then serve the pipeline's
commands until ("close",). Every rank runs every pass; rank 0's PassResult is the cell's.

On CUDA a rank's engine is the one-GPU engine (harness.backends.pytorch.cuda_engine: the compiled
decode step captured as a CUDA graph, CUDA-event timing) over its shard, its all-reduces captured in
the graph. On CPU (gloo) it is LeanLoopEngine: the same lean forward, eager, timed with perf_counter.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from harness.backends.base import PassResult


@dataclass(frozen=True)
class RankJob:
    """Everything a rank needs to build its engine (picklable: sent through spawn)."""
    model_spec: str
    device_type: str            # "cuda" | "cpu"
    dtype: str                  # torch dtype name, e.g. "bfloat16"
    batch: int
    prompt_tokens: int
    new_tokens: int
    compile_step: bool = True
    tune: bool | None = None
    compile_mode: str = "default"
    trust_remote_code: bool = False
    variant: str = "baseline"   # applied by each rank to its shard (tp.variants)


class LeanLoopEngine:
    """The lean forward (static KV cache) in a plain greedy loop: the CPU rank's engine, and the
    one-process reference the tensor-parallel tokens are checked against."""
    name = "lean-eager"
    timing_source = "perf_counter"
    setup_s = 0.0

    def __init__(self, model, device: torch.device, batch: int, prompt_tokens: int, new_tokens: int):
        from harness.backends.pytorch.lean import LeanDecoder

        self.device, self.P = device, prompt_tokens
        self.dec = LeanDecoder(model, batch, prompt_tokens + new_tokens)

    @torch.inference_mode()
    def run_pass(self, ids: torch.Tensor, new_tokens: int, keep_logits: bool = False) -> PassResult:
        ids = ids.to(self.device)
        B, P = ids.shape
        out = torch.empty((B, new_tokens), dtype=torch.long)
        logits_seen = []
        t0 = time.perf_counter()
        logits = self.dec(ids, torch.arange(P, device=self.device))
        nxt = logits.argmax(-1)
        out[:, 0] = nxt
        prefill_s = time.perf_counter() - t0
        steps = []
        for i in range(1, new_tokens):
            if keep_logits:
                logits_seen.append(logits.float().cpu())
            ts = time.perf_counter()
            logits = self.dec(nxt[:, None], torch.tensor([P + i - 1], device=self.device))
            nxt = logits.argmax(-1)
            out[:, i] = nxt
            steps.append(time.perf_counter() - ts)
        if keep_logits:
            logits_seen.append(logits.float().cpu())
        extra = {"logits": torch.stack(logits_seen, 1)} if keep_logits else {}
        return PassResult(prefill_s, steps, out, extra)

    def run_prefill(self, ids: torch.Tensor) -> None:
        self.run_pass(ids, 1)

    def kv_cache_bytes(self) -> int:
        return self.dec.kv_cache_bytes()


def build_shard(job: RankJob, rank: int, world: int, device: torch.device, dtype: torch.dtype):
    """This rank's sharded model, how it was built, and what it read of a checkpoint (or None)."""
    from harness.backends.pytorch.tp.materialize import fits_one_device, synthetic_shard
    from harness.backends.pytorch.tp.shard import shard_model
    from harness.models import load_model
    from harness.models.spec import parse_spec

    spec = parse_spec(job.model_spec)
    if spec.kind == "hf-dir":
        # a real checkpoint: each rank reads only its slices of the safetensors files (tp.checkpoint)
        from harness.backends.pytorch.tp.checkpoint import load_shard

        model, read = load_shard(spec.path, rank, world, device, dtype, job.trust_remote_code)
        return model, "its slices read from the safetensors checkpoint (safe_open + get_slice)", read
    loaded = load_model(spec, job.trust_remote_code)
    if device.type == "cuda" and spec.kind == "synthetic" and not fits_one_device(loaded, dtype, device):
        # larger than one GPU: built shard by shard (random weights of its own seed, see materialize)
        return synthetic_shard(loaded, rank, world, device, dtype), "per-shard random weights (synthetic, " \
            "larger than one GPU)", None
    # a synthetic model that fits, or a GGUF file (dequantized whole by its reader): the full model is
    # built on the rank's device, then sliced
    return shard_model(loaded.instantiate(device, dtype), rank, world), "sliced from the full model", None


def build_rank_engine(job: RankJob, rank: int, world: int):
    from harness.backends.pytorch.tp.variants import apply_on_shard

    if job.device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    dtype = getattr(torch, job.dtype)
    model, build, read = build_shard(job, rank, world, device, dtype)
    t0 = time.perf_counter()
    applied = apply_on_shard(model, job.variant, device.type, dtype, getattr(model.config, "num_hidden_layers", None))
    apply_s = time.perf_counter() - t0
    if device.type == "cuda":
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        from harness.backends.pytorch.cuda_engine import CudaGraphEngine

        eng = CudaGraphEngine(model, device, job.batch, job.prompt_tokens, job.new_tokens,
                              compile_step=job.compile_step, tune=job.tune, compile_mode=job.compile_mode)
    else:
        eng = LeanLoopEngine(model, device, job.batch, job.prompt_tokens, job.new_tokens)
    eng.shard_build, eng.checkpoint_read = build, read
    eng.applied, eng.apply_s = applied, apply_s
    return eng


def _sync(engine) -> None:
    dev = getattr(engine, "device", None)
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def rank_info(engine, rank: int) -> dict:
    from harness.variants.inspect import tensor_bytes

    info = {"rank": rank, "engine": engine.name, "timing_source": engine.timing_source, "setup_s": engine.setup_s,
            "kv_cache_bytes": engine.kv_cache_bytes(), "tuned": getattr(engine, "tuned", None),
            "weight_bytes": tensor_bytes(engine.dec.hf), "pid": os.getpid(),
            "shard_build": getattr(engine, "shard_build", None),
            "checkpoint_read": getattr(engine, "checkpoint_read", None)}
    applied = getattr(engine, "applied", None)
    if applied is not None:
        info.update(kernel=applied.kernel, layers_changed=applied.layers_changed, apply_s=engine.apply_s)
    if engine.device.type == "cuda":
        info["cuda_index"] = engine.device.index
        info["torch_max_allocated_bytes"] = torch.cuda.max_memory_allocated(engine.device)
    return info


def serve(rank: int, world: int, conn, job: RankJob) -> None:
    """A rank's command loop: ("pass", ids, n, keep_logits) -> PassResult (rank 0) or None;
    ("prefill", ids) -> "ok" after the device is synchronized (the energy window's edge is in the
    launching process, which cannot synchronize this one's device); ("close",) ends it."""
    try:
        engine = build_rank_engine(job, rank, world)
        conn.send(("ready", rank_info(engine, rank)))
    except Exception as e:  # noqa: BLE001  (the launcher records why this rank could not start)
        conn.send(("error", f"{type(e).__name__}: {str(e)[:400]}"))
        return
    while True:
        msg = conn.recv()
        try:
            if msg[0] == "close":
                return
            if msg[0] == "pass":
                _, ids, n, keep = msg
                kw = {"keep_logits": True} if keep else {}
                res = engine.run_pass(ids, n, **kw)
                conn.send(res if rank == 0 else "ok")
            elif msg[0] == "prefill":
                engine.run_prefill(msg[1].to(engine.device))
                _sync(engine)
                conn.send("ok")
            elif msg[0] == "info":
                conn.send(rank_info(engine, rank))
            else:
                conn.send(("error", f"unknown command {msg[0]!r}"))
        except Exception as e:  # noqa: BLE001  (a failed pass is the cell's failed record, not a hung group)
            conn.send(("error", f"{type(e).__name__}: {str(e)[:400]}"))
            return
