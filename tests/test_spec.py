import pytest

from harness.models import PRESETS, ModelSpecError, parse_spec, shape_of


def test_embedded_and_synthetic_specs():
    assert parse_spec("smollm2-135m").kind == "embedded"
    s = parse_spec("synthetic:llama-3.1-8b")
    assert (s.kind, s.preset, s.real_weights) == ("synthetic", "llama-3.1-8b", False)


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(ModelSpecError) as e:
        parse_spec("synthetic:llama-9")
    for name in ("llama-3.2-1b", "llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "mistral-7b", "tiny"):
        assert name in str(e.value)


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth"])
def test_pickle_checkpoints_are_refused(tmp_path, suffix):
    f = tmp_path / f"model{suffix}"
    f.write_bytes(b"\x80\x04")
    with pytest.raises(ModelSpecError, match="arbitrary code"):
        parse_spec(str(f))


def test_folder_needs_config_and_safetensors(tmp_path):
    with pytest.raises(ModelSpecError, match="config.json"):
        parse_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelSpecError, match="pickle"):
        parse_spec(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert parse_spec(str(tmp_path)).kind == "hf-dir"


def test_missing_gguf_and_garbage():
    with pytest.raises(ModelSpecError, match="no such GGUF"):
        parse_spec("/nonexistent/model.gguf")
    with pytest.raises(ModelSpecError, match="not a model spec"):
        parse_spec("gpt-17")
    with pytest.raises(ModelSpecError, match="empty"):
        parse_spec("  ")


# Published shapes (config.json of each checkpoint) and parameter counts.
@pytest.mark.parametrize("name,hidden,layers,heads,kv,inter,vocab,params_b", [
    ("llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, 1.24),
    ("llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256, 8.03),
    ("llama-3.1-70b", 8192, 80, 64, 8, 28672, 128256, 70.55),
    ("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, 7.62),
    ("mistral-7b", 4096, 32, 32, 8, 14336, 32768, 7.25),
])
def test_preset_shapes(name, hidden, layers, heads, kv, inter, vocab, params_b):
    s = PRESETS[name]
    assert (s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.num_key_value_heads,
            s.intermediate_size, s.vocab_size) == (hidden, layers, heads, kv, inter, vocab)
    assert s.param_count() / 1e9 == pytest.approx(params_b, abs=0.01)


def test_tiny_is_a_few_million_and_matches_the_built_model(tiny_loaded):
    import torch

    m = tiny_loaded.instantiate(torch.device("cpu"), torch.float32)
    n = sum(p.numel() for p in m.parameters())
    assert 1e6 < n < 2e7
    assert n == shape_of("synthetic:tiny").param_count()


def test_synthetic_built_in_target_dtype_without_fp32_detour(tiny_loaded):
    import torch

    m = tiny_loaded.instantiate(torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    # seeded: two instances are identical
    m2 = tiny_loaded.instantiate(torch.device("cpu"), torch.bfloat16)
    assert torch.equal(m.lm_head.weight, m2.lm_head.weight)
