"""A real safetensors checkpoint (small, random, written here) loaded shard by shard: each of two
gloo ranks reads only its slices (safe_open + get_slice), never the whole model, and the sharded
model's tokens and logits are the one-process model's."""
from __future__ import annotations

import pytest
import torch

SHARDED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, tie_word_embeddings=True)
    torch.manual_seed(7)
    model = LlamaForCausalLM(cfg).eval()
    folder = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def _tensor_bytes(folder):
    from safetensors import safe_open

    total = sharded = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                t = h.get_tensor(k)
                n = t.numel() * t.element_size()
                total += n
                sharded += n if k.split(".")[-2] in SHARDED else 0
    return total, sharded


def test_each_rank_reads_only_its_slices_and_matches_the_one_process_model(checkpoint):
    from transformers import AutoModelForCausalLM

    from harness.backends.pytorch.tp.engine import TensorParallelEngine
    from harness.backends.pytorch.tp.rank import LeanLoopEngine, RankJob

    B, P, N = 2, 10, 5
    ids = torch.randint(0, 512, (B, P), generator=torch.Generator().manual_seed(1))
    full = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval().requires_grad_(False)
    want = LeanLoopEngine(full, torch.device("cpu"), B, P, N).run_pass(ids, N, keep_logits=True)
    eng = TensorParallelEngine(RankJob(str(checkpoint), "cpu", "float32", B, P, N), 2, start_timeout_s=300)
    try:
        got = eng.run_pass(ids, N, keep_logits=True)
    finally:
        eng.close()
    total, sharded = _tensor_bytes(checkpoint)
    assert sharded > total / 2                                # most of the checkpoint is sharded
    for r in eng.ranks:
        read = r["checkpoint_read"]
        assert r["shard_build"].startswith("its slices read from the safetensors checkpoint")
        assert read["checkpoint_bytes"] == total
        # the replicated tensors whole, half of every sharded one: never the whole model
        assert read["bytes_read"] == (total - sharded) + sharded // 2, (read, total, sharded)
        assert read["bytes_read"] < 0.75 * total
    assert torch.equal(got.tokens, want.tokens)
    torch.testing.assert_close(got.extra["logits"], want.extra["logits"], rtol=1e-4, atol=1e-5)


def test_the_pipeline_process_reads_no_weight_of_a_tensor_parallel_checkpoint(checkpoint, monkeypatch):
    """The Prepared of a --gpus 2 cell on a checkpoint folder takes its shape and tokenizer only
    (light_model; the folder written here has no tokenizer, so light_model is stood in for)."""
    from harness.backends.pytorch.tp import checkpoint as ck
    from harness.backends.pytorch.tp.prepared import TensorParallelPrepared
    from harness.models import loader
    from harness.models.spec import shape_of

    def no_full_load(*a, **k):
        raise AssertionError("the whole checkpoint was loaded in the pipeline's process")

    monkeypatch.setattr(loader, "load_model", no_full_load)
    monkeypatch.setattr(ck, "light_model", lambda spec, trc=False: loader.LoadedModel(
        spec, shape_of(spec), None, "light", 0.0, no_full_load))
    cache: dict = {}
    loaded = TensorParallelPrepared._load(cache, str(checkpoint), False)
    assert loaded.shape.hidden_size == 256 and loaded.weights_note == "light"
    assert TensorParallelPrepared._load(cache, str(checkpoint), False) is loaded    # once per process
