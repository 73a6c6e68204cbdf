"""Tensor-parallel lean decoder on CPU: two gloo ranks on loopback against the one-process lean
decoder, the sharding's refusals, and the launcher's child environment (NVLink multicast off)."""
from __future__ import annotations

import os

import pytest
import torch

from harness.backends.pytorch.tp.env import NO_MULTICAST_ENV
from harness.backends.pytorch.tp.launch import RankError, RankGroup
from harness.backends.pytorch.tp.shard import tp_unsupported


def _report_env(rank, world, conn):
    import torch.distributed as dist

    t = torch.tensor([rank + 1.0])
    dist.all_reduce(t)
    conn.send({"env": {k: os.environ.get(k) for k in NO_MULTICAST_ENV}, "sum": t.item(), "world": world})


def _fail(rank, world, conn):
    if rank == 1:
        raise SystemExit(3)
    conn.send("fine")


def test_ranks_join_one_group_and_see_multicast_off(monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")          # a user's setting is overridden in the children
    monkeypatch.delenv("NVSHMEM_DISABLE_NVLS", raising=False)
    g = RankGroup(2, _report_env, backend="gloo")
    try:
        replies = g.recv_all(120)
    finally:
        g.close()
    for r in replies:
        assert r["env"] == NO_MULTICAST_ENV
        assert r["sum"] == 3.0 and r["world"] == 2       # 1 + 2: both ranks in one gloo group
    assert os.environ["NCCL_NVLS_ENABLE"] == "0"          # the launching process too


def test_dead_rank_is_an_error_not_a_hang():
    g = RankGroup(1, _fail, backend="gloo")
    try:
        assert g.recv(0, 120) == "fine"
    finally:
        g.close()


def test_unsupported_splits_name_the_reason():
    from types import SimpleNamespace as NS

    cfg = NS(num_attention_heads=4, num_key_value_heads=2, intermediate_size=768)
    assert tp_unsupported(cfg, 2) is None
    assert "2 KV heads do not split across 4 GPUs" in tp_unsupported(cfg, 4)
    assert "intermediate size 771" in tp_unsupported(NS(num_attention_heads=4, num_key_value_heads=2,
                                                       intermediate_size=771), 2)


def test_two_gloo_ranks_match_the_single_process_lean_decoder():
    from harness.backends.pytorch.tp.engine import TensorParallelEngine
    from harness.backends.pytorch.tp.rank import LeanLoopEngine, RankJob
    from harness.models import load_model

    B, P, N = 2, 12, 6
    loaded = load_model("synthetic:tiny")
    ids, _ = loaded.prompt_ids("", "", B, P)
    ref = LeanLoopEngine(loaded.instantiate(torch.device("cpu"), torch.float32), torch.device("cpu"), B, P, N)
    want = ref.run_pass(ids, N, keep_logits=True)
    eng = TensorParallelEngine(RankJob("synthetic:tiny", "cpu", "float32", B, P, N), 2, start_timeout_s=300)
    try:
        got = eng.run_pass(ids, N, keep_logits=True)
        again = eng.run_pass(ids, N)                      # the static cache is reused across passes
        eng.run_prefill(ids)
        assert eng.kv_cache_bytes() == ref.kv_cache_bytes()   # each rank holds half the KV heads
        assert [r["kv_cache_bytes"] for r in eng.ranks] == [ref.kv_cache_bytes() // 2] * 2
        with pytest.raises(ValueError, match="engine built for batch 2"):
            eng.run_pass(ids[:1], N)
    finally:
        eng.close()
    assert torch.equal(got.tokens, want.tokens)
    assert torch.equal(again.tokens, want.tokens)
    assert got.extra["logits"].shape == want.extra["logits"].shape == (B, N, 8192)
    torch.testing.assert_close(got.extra["logits"], want.extra["logits"], rtol=1e-4, atol=1e-5)
    assert len(got.step_s) == N - 1 and got.prefill_s > 0
    assert eng.timing_source == "perf_counter" and eng.name == "tensor-parallel x2 (lean-eager)"


def test_fewer_gpus_than_asked_is_unsupported_with_the_count(monkeypatch):
    from harness.backends.pytorch.tp.prepared import gpus_unsupported

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpus_unsupported(2, "cuda") == "needs 2 GPUs, this machine has 1"
    assert gpus_unsupported(1, "cuda") is None
    assert gpus_unsupported(8, "cpu") is None          # gloo ranks on CPU


def test_executor_workers_turn_multicast_off(monkeypatch):
    from harness.executor.worker import configure_device
    from harness.options import RunSettings

    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    monkeypatch.setenv("TORCH_SYMM_MEM_DISABLE_MULTICAST", "0")
    configure_device(RunSettings(device="cpu"))       # the worker's first step after start-up
    assert {k: os.environ[k] for k in NO_MULTICAST_ENV} == NO_MULTICAST_ENV


def test_per_shard_build_keeps_replicated_weights_identical_across_ranks():
    from harness.backends.pytorch.tp.materialize import synthetic_shard
    from harness.models import load_model

    loaded = load_model("synthetic:tiny")
    full = loaded.instantiate(torch.device("cpu"), torch.float32)
    r0, r1 = (synthetic_shard(loaded, r, 2, torch.device("cpu"), torch.float32) for r in (0, 1))
    assert torch.equal(r0.model.embed_tokens.weight, r1.model.embed_tokens.weight)
    assert torch.equal(r0.lm_head.weight, r1.lm_head.weight)
    q0, q1 = r0.model.layers[0].self_attn.q_proj.weight, r1.model.layers[0].self_attn.q_proj.weight
    assert q0.shape == (128, 256) and not torch.equal(q0, q1)     # half the heads each, own draws
    assert r0.model.layers[0].mlp.down_proj.linear.weight.shape == (256, 384)
    assert torch.equal(r0.model.rotary_emb.inv_freq, full.model.rotary_emb.inv_freq)
    assert torch.all(r0.model.norm.weight == 1.0) and r0.config.num_key_value_heads == 1


@pytest.mark.parametrize("variant", ["int8-wo", "int4-wo"])
def test_two_gloo_ranks_apply_the_variant_to_their_shards(variant):
    """Each rank applies the registry's variant to its shard after sharding; the logits agree with the
    one-process model with the same variant (int4 g128: the same groups exactly; int8-wo: the
    row-parallel scales are per shard, so close, not equal), and so do the first greedy tokens."""
    from harness.backends.pytorch.tp.engine import TensorParallelEngine
    from harness.backends.pytorch.tp.rank import LeanLoopEngine, RankJob
    from harness.models import load_model
    from harness.variants import parse_variant

    B, P, N = 2, 12, 6
    loaded = load_model("synthetic:tiny")
    ids, _ = loaded.prompt_ids("", "", B, P)
    one = loaded.instantiate(torch.device("cpu"), torch.float32)
    spec = parse_variant(variant)
    applied = spec.apply(one, spec.context("cpu", torch.float32, None, loaded.shape.num_hidden_layers))
    want = LeanLoopEngine(one, torch.device("cpu"), B, P, N).run_pass(ids, N, keep_logits=True)
    dense = LeanLoopEngine(loaded.instantiate(torch.device("cpu"), torch.float32), torch.device("cpu"), B, P,
                           N).run_pass(ids, N, keep_logits=True).extra["logits"]
    eng = TensorParallelEngine(RankJob("synthetic:tiny", "cpu", "float32", B, P, N, variant=variant), 2,
                               start_timeout_s=300)
    try:
        got = eng.run_pass(ids, N, keep_logits=True)
    finally:
        eng.close()
    r0 = eng.ranks[0]
    assert r0["kernel"].split(" (")[0] == applied.kernel.split(" (")[0]          # the same kernel on the shard
    assert [r["layers_changed"] for r in eng.ranks] == [applied.layers_changed] * 2
    g, w = got.extra["logits"], want.extra["logits"]
    err, shift = (g - w).abs().max().item(), (dense - w).abs().max().item()
    # int4: 0.009 x the quantization's own shift of the logits; int8-wo: 0.59 x (per-shard row scales)
    assert shift > 0 and err < (0.75 if variant == "int8-wo" else 0.05) * shift, (err, shift)
    assert torch.equal(got.tokens, want.tokens)                 # all N greedy tokens


def test_variants_that_cannot_shard_are_refused_with_the_reason():
    from harness.backends.pytorch.tp.variants import tp_variant_unsupported
    from harness.models.presets import PRESETS

    tiny = PRESETS["tiny"]
    assert tp_variant_unsupported("baseline", tiny, 2) is None
    assert tp_variant_unsupported("int8-wo@keep-attn", tiny, 2) is None
    assert tp_variant_unsupported("int4-wo", tiny, 2) is None
    why = tp_variant_unsupported("int4-wo", tiny, 4)      # o_proj: 256 inputs / 4 = 64, not a g128 group
    assert why.startswith("int4-wo g128 across 4 GPUs: each rank's o_proj input slice (256 / 4 = 64)")
    assert "int4-awq under tensor parallelism is not implemented" in tp_variant_unsupported("int4-awq", tiny, 2)
