"""The Engine (harness.backends.base) the cell pipeline times for a tensor-parallel cell: N rank
processes (launch.RankGroup) each running the same pass on its shard; rank 0's PassResult (tokens,
prefill and per-step times from its own CUDA events or clock) is the cell's. The all-reduces make
every step wait for the slowest rank, so rank 0's times are the group's.
"""
from __future__ import annotations

import time

from harness.backends.base import PassResult
from harness.backends.pytorch.tp.launch import DEFAULT_START_TIMEOUT_S, RankGroup
from harness.backends.pytorch.tp.rank import RankJob, serve


class TensorParallelEngine:
    def __init__(self, job: RankJob, world: int, start_timeout_s: float = DEFAULT_START_TIMEOUT_S):
        t0 = time.perf_counter()
        self.job, self.world = job, world
        self.group = RankGroup(world, serve, (job,), backend="nccl" if job.device_type == "cuda" else "gloo")
        try:
            ready = self.group.recv_all(start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.ranks = [r[1] for r in ready]
        self.name = f"tensor-parallel x{world} ({self.ranks[0]['engine']})"
        self.timing_source = self.ranks[0]["timing_source"]
        self.tuned = self.ranks[0].get("tuned")
        self.setup_s = time.perf_counter() - t0   # spawn, load, shard, compile and capture on every rank

    def _check(self, ids, new_tokens: int) -> None:
        j = self.job
        if tuple(ids.shape) != (j.batch, j.prompt_tokens) or new_tokens != j.new_tokens:
            raise ValueError(f"engine built for batch {j.batch}, prompt {j.prompt_tokens}, new {j.new_tokens}; "
                             f"got {tuple(ids.shape)}, new {new_tokens}")

    def run_pass(self, ids, new_tokens: int, keep_logits: bool = False) -> PassResult:
        self._check(ids, new_tokens)
        self.group.send_all(("pass", ids.cpu(), new_tokens, keep_logits))
        return self.group.recv_all()[0]

    def run_prefill(self, ids) -> None:
        self.group.send_all(("prefill", ids.cpu()))
        self.group.recv_all()

    def kv_cache_bytes(self) -> int:
        """Summed over ranks: each holds its KV heads' share."""
        return sum(r["kv_cache_bytes"] for r in self.ranks)

    def cuda_indices(self) -> list[int]:
        return [r["cuda_index"] for r in self.ranks if "cuda_index" in r]

    def facts(self) -> dict:
        return {"tensor_parallel": self.world, "ranks": self.ranks}

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass
