"""Tensor parallelism on two CUDA GPUs (NCCL): the compiled decode step captured as a CUDA graph
on each rank, its all-reduces inside the graph; greedy tokens equal to the one-GPU engine's.
Skipped without CUDA (conftest) and without a second GPU."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("compile_step", [False, True])
def test_two_nccl_ranks_match_the_one_gpu_graph_engine(compile_step):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    from harness.backends.pytorch.cuda_engine import CudaGraphEngine
    from harness.backends.pytorch.tp.engine import TensorParallelEngine
    from harness.backends.pytorch.tp.rank import RankJob
    from harness.models import load_model

    B, P, N = 2, 16, 8
    loaded = load_model("synthetic:tiny")
    ids, _ = loaded.prompt_ids("", "", B, P)
    dev = torch.device("cuda", 0)
    one = CudaGraphEngine(loaded.instantiate(dev, torch.float32), dev, B, P, N, compile_step=compile_step, tune=False)
    want = one.run_pass(ids.to(dev), N).tokens
    del one
    torch.cuda.empty_cache()
    eng = TensorParallelEngine(RankJob("synthetic:tiny", "cuda", "float32", B, P, N, compile_step=compile_step,
                                       tune=False), 2, start_timeout_s=600)
    try:
        got = eng.run_pass(ids, N)
        eng.run_prefill(ids)
    finally:
        eng.close()
    assert eng.timing_source == "cuda_events" and eng.cuda_indices() == [0, 1]
    assert torch.equal(got.tokens, want)
    assert len(got.step_s) == N - 1 and all(s > 0 for s in got.step_s)
