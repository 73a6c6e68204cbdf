"""ONNX Runtime backend on synthetic:tiny (Llama layout, random weights): real model-builder exports,
each quantization, the genai token loop, the logits hook, and the cache. Each builder run is a
subprocess of ~10-25 s on a 2-core machine (mostly its imports), so these are marked slow."""
import os

import pytest
import torch

pytest.importorskip("onnxruntime_genai")
onnx = pytest.importorskip("onnx")

from harness.backends.ort import OrtBackend, OrtSettings, OrtUnsupported  # noqa: E402
from harness.backends.ort import cache as ort_cache  # noqa: E402
from harness.backends.ort import export  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return OrtBackend(OrtSettings(cache_dir=str(tmp_path_factory.mktemp("ort-cache")), threads=1))


@pytest.fixture(scope="module")
def built(backend, tiny_loaded):
    """Every variant the tests look at, exported once for the module."""
    calib = torch.randint(0, tiny_loaded.vocab_size, (4, 32), generator=torch.Generator().manual_seed(3))
    out = {v: backend.prepare(tiny_loaded, v, kernel=k) for v, k in
           [("baseline", None), ("int4-wo", "block32"), ("int8-dq", None)]}
    out["int8-static"] = backend.prepare(tiny_loaded, "int8-static", calibration_ids=calib)
    return out


def _nodes(prepared, op):
    g = onnx.load(str(prepared.model_dir / "model.onnx"), load_external_data=False).graph
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in g.node if n.op_type == op]


def _ids(batch=2, seq=24, seed=0):
    return torch.randint(0, 8192, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_fp32_export_matches_torch_logits(built, tiny_loaded):
    p = built["baseline"]
    assert (p.model_dir / "genai_config.json").is_file() and not p.cache_hit
    assert _nodes(p, "GroupQueryAttention") and not _nodes(p, "MatMulNBits")
    params = tiny_loaded.shape.param_count()
    assert abs(p.weight_bytes - 4 * params) / (4 * params) < 0.05       # fp32: 4 bytes a parameter
    ids = _ids()
    with torch.inference_mode():
        ref = tiny_loaded.instantiate(torch.device("cpu"), torch.float32)(input_ids=ids).logits
    ours = p.logits(ids)
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() < 1e-3 * ref.abs().max().item()


def test_int4_block32_is_matmulnbits_4bit(built, tiny_loaded):
    nodes = _nodes(built["int4-wo"], "MatMulNBits")
    assert nodes and {(n["bits"], n["block_size"], n["accuracy_level"]) for n in nodes} == {(4, 32, 1)}
    assert built["int4-wo"].kernel_name == "block32"
    assert "int4 block 32, fp32 activations" in built["int4-wo"].kernel
    embed = 4 * tiny_loaded.shape.embedding_params()      # untied: the builder keeps the embedding fp32
    assert built["int4-wo"].weight_bytes - embed < 0.3 * (built["baseline"].weight_bytes - embed)


def test_int8_dq_has_int8_activations(built):
    nodes = _nodes(built["int8-dq"], "MatMulNBits")
    assert nodes and {(n["bits"], n["block_size"], n["accuracy_level"]) for n in nodes} == {(8, 128, 4)}


def test_static_qdq_quantizes_every_matmul(built):
    p = built["int8-static"]
    g = onnx.load(str(p.model_dir / "model.onnx"), load_external_data=False).graph
    matmuls = [n for n in g.node if n.op_type == "MatMul"]
    dq_out = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    assert matmuls and all(set(n.input) <= dq_out for n in matmuls)   # both operands dequantized
    int8 = [t for t in g.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8 and p.weight_bytes < 0.5 * built["baseline"].weight_bytes
    # its measured quality problem rides on every prepared model (and so on every record)
    from harness.backends.ort.recipes import QDQ_STATIC_CAVEAT

    assert p.notes[0] == QDQ_STATIC_CAVEAT and QDQ_STATIC_CAVEAT not in built["baseline"].notes


@pytest.mark.parametrize("variant", ["baseline", "int4-wo", "int8-dq", "int8-static"])
def test_engine_runs_fixed_tokens_and_agrees_with_its_own_logits(built, variant):
    """The genai loop (KV cache) and the full-sequence session pick the same first greedy token."""
    p = built[variant]
    ids = _ids(seed=1)
    r = p.engine().run_pass(ids, 6)
    assert r.tokens.shape == (2, 6) and r.tokens.dtype == torch.long
    assert len(r.step_s) == 5 and all(s > 0 for s in r.step_s) and r.prefill_s > 0
    assert torch.equal(r.tokens[:, 0], p.logits(ids)[:, -1].argmax(-1))


def test_quality_hook_scores_the_fp32_export_as_the_baseline(built, tiny_loaded):
    from harness.quality.evaluate import QualityReference, evaluate
    from harness.quality.settings import QualitySettings

    settings = QualitySettings(tokens=48, window=32, stride=16, reference_dtype="float32")
    ids = _ids(batch=1, seq=64, seed=2)[0]
    ref = QualityReference.build(tiny_loaded.instantiate(torch.device("cpu"), torch.float32), ids, settings)
    base = evaluate(built["baseline"].quality_module(), ref)
    int4 = evaluate(built["int4-wo"].quality_module(), ref)
    assert base.tokens == 48 and base.kl_mean < 1e-5 and base.top1_agreement > 0.97
    assert int4.kl_mean > 10 * base.kl_mean


def test_cache_hit_builds_nothing(backend, built, tiny_loaded):
    stamp = (built["baseline"].model_dir / "manifest.json").stat().st_mtime_ns
    again = backend.prepare(tiny_loaded, "baseline")
    assert again.cache_hit and again.model_dir == built["baseline"].model_dir
    assert (again.model_dir / "manifest.json").stat().st_mtime_ns == stamp


def test_version_change_is_a_new_entry(backend, built, tiny_loaded, monkeypatch):
    real = ort_cache.tool_versions()
    bumped = dict(real, **{"onnxruntime-genai": real["onnxruntime-genai"] + ".post9"})
    monkeypatch.setattr(ort_cache, "tool_versions", lambda: bumped)
    rebuilt = backend.prepare(tiny_loaded, "baseline")
    assert not rebuilt.cache_hit and rebuilt.model_dir != built["baseline"].model_dir
    assert built["baseline"].model_dir.is_dir()


def test_truncated_entry_is_rebuilt(backend, built, tiny_loaded):
    calib = torch.randint(0, tiny_loaded.vocab_size, (4, 32), generator=torch.Generator().manual_seed(3))
    path = built["int8-static"].model_dir / "model.onnx"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    again = backend.prepare(tiny_loaded, "int8-static", calibration_ids=calib)
    assert not again.cache_hit and again.model_dir == built["int8-static"].model_dir
    assert any(f"model.onnx is {size // 2} bytes" in n for n in again.notes), again.notes
    assert path.stat().st_size == size
    assert again.engine().run_pass(_ids(batch=1), 2).tokens.shape == (1, 2)


def test_builder_refusal_is_unsupported_with_its_message(tmp_path, monkeypatch):
    """Without the pre-check, the builder itself refuses GPT-2; the reason carries its message."""
    from tests.test_ort import _gpt2_loaded

    monkeypatch.setattr(export, "architecture_reason", lambda hf_dir: None)
    with pytest.raises(OrtUnsupported) as e:
        OrtBackend(OrtSettings(cache_dir=str(tmp_path))).prepare(_gpt2_loaded(), "baseline")
    assert "cannot export architecture GPT2LMHeadModel" in e.value.reason
    assert "not currently supported" in e.value.reason
    assert not [p for p in tmp_path.iterdir() if p.name != "hf"]       # no entry, no scratch left
    assert os.path.isdir(tmp_path / "hf")
