"""ONNX Runtime backend without running the model builder: EP choice, unsupported reasons, the cache's
manifest checks and the builder's architecture pre-check. (tests/test_ort_build.py exports models.)"""
import json
import re
from types import SimpleNamespace

import pytest

pytest.importorskip("onnxruntime_genai")

from harness.backends.ort import (OrtBackend, OrtSettings, OrtUnsupported, UnknownEpError,  # noqa: E402
                                  UnknownKernelError)
from harness.backends.ort import cache as ort_cache  # noqa: E402
from harness.backends.ort import eps  # noqa: E402
from harness.backends.ort.recipes import CPU_EP, RECIPES  # noqa: E402


@pytest.fixture
def backend(tmp_path):
    return OrtBackend(OrtSettings(cache_dir=str(tmp_path / "cache")))


def _profile(*names):
    return SimpleNamespace(id="test-profile", onnxruntime_eps=names)


# -- execution providers -----------------------------------------------------------------------------

def test_cpu_ep_is_the_default_and_always_runs(backend):
    assert eps.resolve_ep(None) == CPU_EP
    assert eps.resolve_ep(_profile()) == CPU_EP
    assert eps.ep_reason(CPU_EP) is None
    for name in RECIPES:
        assert backend.unsupported_reason(name) is None, name


def test_profile_ep_missing_here_is_unsupported_not_swapped_for_cpu(backend, monkeypatch):
    monkeypatch.setattr(eps, "available_eps", lambda: ("CPUExecutionProvider",))
    snapdragon = _profile("QNNExecutionProvider", "DmlExecutionProvider")
    assert backend.unsupported_reason("int4-wo", snapdragon) == "QNNExecutionProvider not available on this machine"
    # the override wins over the profile
    assert backend.unsupported_reason("int4-wo", snapdragon, ep="cpu") is None
    with pytest.raises(OrtUnsupported, match="OpenVINOExecutionProvider not available on this machine"):
        backend.prepare(None, "baseline", _profile("OpenVINOExecutionProvider"))


def test_ep_short_names_and_typos():
    assert eps.normalize_ep("cuda") == "CUDAExecutionProvider"
    assert eps.normalize_ep("QNN") == "QNNExecutionProvider"
    assert eps.normalize_ep("openvino") == "OpenVINOExecutionProvider"
    with pytest.raises(UnknownEpError, match="unknown execution provider 'cdua'"):
        eps.resolve_ep(None, "cdua")


def test_int8_activation_kernels_are_cpu_only():
    """accuracy_level 4 (int8 activations) is an MLAS kernel: a CUDA build would silently compute in fp."""
    int8_dq, int4 = RECIPES["int8-dq"], RECIPES["int4-wo"]
    why = int8_dq.ep_reason(int8_dq.kernel(None), "CUDAExecutionProvider")
    assert why and "CPU EP kernel" in why
    assert int4.ep_reason(int4.kernel("block128"), "CUDAExecutionProvider") is None
    assert "CPU EP kernel" in int4.ep_reason(int4.kernel("block32-int8act"), "CUDAExecutionProvider")
    assert "no recipe for CUDAExecutionProvider" in RECIPES["int8-static"].ep_reason(
        RECIPES["int8-static"].kernel(None), "CUDAExecutionProvider")


def test_variant_names_without_a_recipe(backend):
    assert "no ONNX Runtime recipe" in backend.unsupported_reason("fp8-wo")
    assert "policies are not implemented" in backend.unsupported_reason("int4-wo@keep-attn")
    with pytest.raises(UnknownKernelError, match="choices: block128, block32"):
        backend.unsupported_reason("int4-wo", kernel="block64")
    with pytest.raises(UnknownKernelError):
        OrtBackend(OrtSettings(kernel="nope"))


def test_kernel_labels_name_block_and_activation_precision():
    r = RECIPES["int4-wo"]
    assert r.kernel_label(r.kernel(None), CPU_EP) == (
        "onnxruntime MatMulNBits int4 block 128, fp32 activations (accuracy_level 1) (CPU EP)")
    assert "block 32, int8 activations" in r.kernel_label(r.kernel("block32-int8act"), CPU_EP)


# -- cache entries ---------------------------------------------------------------------------------

def _built(tmp_path, parts=None):
    entry = ort_cache.Entry(tmp_path, parts or {"k": 1}, ("model.onnx", "genai_config.json"))
    with entry.build() as scratch:
        (scratch / "model.onnx").write_bytes(b"graph" * 100)
        (scratch / "model.onnx.data").write_bytes(b"\x01" * 4096)
        (scratch / "genai_config.json").write_text("{}")
    return entry


def test_entry_is_valid_after_build_and_records_its_key(tmp_path):
    entry = _built(tmp_path)
    assert entry.valid(), entry.invalid_reason
    assert json.loads((entry.path / "key.json").read_text()) == {"k": 1}
    assert not list(tmp_path.glob(".*build*"))        # the scratch folder was moved, not left behind


@pytest.mark.parametrize("damage, reason", [
    (lambda p: (p / "model.onnx.data").write_bytes(b"\x01" * 100), "model.onnx.data is 100 bytes"),
    (lambda p: (p / "genai_config.json").unlink(), "genai_config.json missing"),
    (lambda p: (p / "model.onnx.data").write_bytes(b"\x02" * 4096), "differs from its manifest sha256"),
    (lambda p: (p / "manifest.json").unlink(), "no manifest"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "unreadable manifest"),
])
def test_damaged_entry_is_not_trusted(tmp_path, damage, reason):
    entry = _built(tmp_path)
    damage(entry.path)
    assert not entry.valid()
    assert reason in entry.invalid_reason


def test_failed_build_leaves_no_entry(tmp_path):
    entry = ort_cache.Entry(tmp_path, {"k": 2}, ("model.onnx",))
    with pytest.raises(RuntimeError, match="builder crashed"):
        with entry.build() as scratch:
            (scratch / "model.onnx").write_bytes(b"half")
            raise RuntimeError("builder crashed")
    assert not entry.path.exists() and not entry.valid()
    assert not list(tmp_path.glob(".*build*"))


def test_key_changes_with_tool_versions(monkeypatch):
    parts = {"variant": "int4-wo", "versions": ort_cache.tool_versions()}
    before = ort_cache.entry_key(parts)
    bumped = dict(parts, versions=dict(parts["versions"], **{"onnxruntime-genai": "99.0"}))
    assert ort_cache.entry_key(bumped) != before
    assert ort_cache.entry_key(dict(parts)) == before


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    assert ort_cache.cache_root() == tmp_path / "ort"
    monkeypatch.delenv("HARNESS_CACHE_DIR")
    assert ort_cache.cache_root().parts[-3:] == (".cache", "harness", "ort")


def test_model_identity_of_gguf_tracks_the_file(tmp_path):
    from harness.models.spec import parse_spec

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 60)
    loaded = SimpleNamespace(spec=parse_spec(str(f)), shape=None)
    first = ort_cache.model_identity(loaded)
    f.write_bytes(b"GGUF" + b"\0" * 61)
    assert ort_cache.model_identity(loaded) != first


# -- architectures the builder refuses ---------------------------------------------------------------

def _gpt2_loaded():
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.models.loader import LoadedModel
    from harness.models.spec import ModelSpec

    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    return LoadedModel(ModelSpec("synthetic:gpt2-test", "synthetic", preset="gpt2-test"), None, None,
                       "random weights", 0.0, lambda device, dtype: GPT2LMHeadModel(cfg))


def test_architecture_the_builder_refuses_is_unsupported_with_its_name(backend):
    with pytest.raises(OrtUnsupported) as e:
        backend.prepare(_gpt2_loaded(), "baseline")
    assert "cannot export architecture GPT2LMHeadModel" in e.value.reason
    assert re.search(r"it exports \d+ architectures: ", e.value.reason)
    assert not [p for p in backend.root.iterdir() if p.name not in ("hf",)]   # no build entry was made
