"""The llama.cpp backend without running llama.cpp: names, the unsupported paths, the F32 GGUF copy
(the gguf package only) and the cache's rebuild of a damaged entry (with a stand-in quantizer)."""
import sys
from pathlib import Path

import pytest

from harness.backends import backend_names, get_backend
from harness.backends.base import CellSkip
from harness.backends.llamacpp import NOT_INSTALLED, recipes, unsupported_reason
from harness.variants import parse_variant


def test_registered_with_its_own_variants():
    assert "llama.cpp" in backend_names() and get_backend("llama.cpp").name == "llama.cpp"
    assert set(recipes.RECIPES) == {"baseline", "gguf-native", "q8_0", "q4_0", "q4_k_m"}
    for name in ("gguf-native", "q8_0", "q4_0", "q4_k_m"):
        spec = parse_variant(name)                    # the names parse and plan like every other
        assert spec.layout.compute_for("fp32") == "int8"
        why = spec.unsupported_reason("cpu", None)     # ... and the torch backends say where they run
        assert why and "--backends llama.cpp" in why


def test_planner_bytes_of_the_gguf_types():
    assert parse_variant("q8_0").layout.linear_bytes(32, 1, "fp32") == 34     # 32 int8 + fp16 scale
    assert parse_variant("q4_0").layout.linear_bytes(32, 1, "fp32") == 18
    assert parse_variant("gguf-native").layout.linear_bytes(32, 1, "fp32") == 20   # Q4_1: + fp16 min
    assert parse_variant("q4_k_m").layout.linear_bytes(256, 1, "fp32") == 144
    from harness.models.presets import SMOLLM2_135M as S
    from harness.plan.roofline import weight_bytes

    # llama-quantize stores the embedding at the type too; the torch variants keep it in the baseline format
    assert weight_bytes(S, parse_variant("q8_0"), "fp32").embedding == S.vocab_size * S.hidden_size * 34 / 32
    assert weight_bytes(S, parse_variant("int8-wo"), "fp32").embedding == S.vocab_size * S.hidden_size * 4


def test_torch_names_are_unsupported_with_the_nearest_type(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", type(sys)("llama_cpp"))    # importable stand-in
    why = unsupported_reason("smollm2-135m", "int4-wo")
    assert "not a llama.cpp variant" in why and "q4_0 or q4_k_m" in why and "weight-only" in why
    assert "nearest is q8_0" in unsupported_reason("smollm2-135m", "int8-wo")
    assert "no llama.cpp recipe" in unsupported_reason("smollm2-135m", "sparse-2:4")
    assert "policies" in unsupported_reason("smollm2-135m", "q4_0@keep-attn")
    assert "runs GGUF files" in unsupported_reason("synthetic:tiny", "baseline")
    assert unsupported_reason("smollm2-135m", "q4_k_m") is None


def test_not_installed_is_unsupported_before_any_load(monkeypatch):
    from harness.backends.llamacpp.cell import LlamaCppPrepared

    monkeypatch.setitem(sys.modules, "llama_cpp", None)     # import raises ImportError
    assert unsupported_reason("smollm2-135m", "q4_k_m") == NOT_INSTALLED
    assert NOT_INSTALLED == "llama-cpp-python not installed (pip install .[llama])"
    cache = {}
    with pytest.raises(CellSkip) as e:
        LlamaCppPrepared("smollm2-135m", parse_variant("q4_k_m"), None, cache)
    assert e.value.status == "unsupported" and e.value.reason == NOT_INSTALLED and cache == {}


def test_kernel_label_names_types_and_activation_blocks():
    label = recipes.kernel_label({"Q5_0": 120, "Q4_K": 60, "F32": 61})
    assert label == ("llama.cpp ggml mul_mat (CPU): Q5_0 x120 (x Q8_0 act), Q4_K x60 (x Q8_K act), F32 x61")


@pytest.fixture(scope="module")
def embedded_f32(tmp_path_factory):
    from harness.backends.llamacpp import gguf_io
    from harness.models.spec import embedded_gguf_path

    out = tmp_path_factory.mktemp("f32") / "m.gguf"
    return embedded_gguf_path(), out, gguf_io.write_f32(embedded_gguf_path(), out)


@pytest.mark.slow
def test_f32_copy_holds_the_dequantized_values(embedded_f32):
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from harness.backends.llamacpp import gguf_io

    src, out, census = embedded_f32
    assert census == gguf_io.tensor_census(src) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert gguf_io.tensor_census(out) == {"F32": 272}
    a, b = GGUFReader(str(src)), GGUFReader(str(out))
    assert {f for f in a.fields if not f.startswith("GGUF.")} == {f for f in b.fields if not f.startswith("GGUF.")}
    assert b.fields["general.file_type"].contents() == 0
    ta = next(t for t in a.tensors if t.name == "blk.0.attn_q.weight")
    tb = next(t for t in b.tensors if t.name == "blk.0.attn_q.weight")
    assert np.array_equal(dequantize(ta.data, ta.tensor_type), np.asarray(tb.data))
    assert gguf_io.tensor_bytes(out) == 4 * sum(int(t.n_elements) for t in a.tensors)


class _Loaded:
    def __init__(self, spec):
        self.spec = spec


@pytest.mark.slow
def test_cache_hit_and_a_damaged_entry_is_rebuilt(embedded_f32, tmp_path, monkeypatch):
    """The quantizer is replaced by a byte copy here (the real one is tested where llama_cpp is installed)."""
    from harness.backends.llamacpp import files
    from harness.models.spec import parse_spec

    made = []

    def fake_quantize(src, dst, ftype, threads=None):
        made.append(ftype)
        dst.write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(files, "quantize", fake_quantize)
    monkeypatch.setattr(files.gguf_io, "write_f32", lambda src, dst: made.append("F32") or
                        dst.write_bytes(embedded_f32[1].read_bytes()))
    cache = files.GgufCache(tmp_path)
    loaded = _Loaded(parse_spec("smollm2-135m"))
    first = cache.ensure(loaded, recipes.RECIPES["q4_0"])
    assert first.cache_hit is False and made == ["F32", "LLAMA_FTYPE_MOSTLY_Q4_0"] and first.notes == ()
    again = cache.ensure(loaded, recipes.RECIPES["q4_0"])
    assert again.cache_hit is True and again.path == first.path and len(made) == 2
    with open(first.path, "r+b") as f:                       # same size, other bytes: only sha256 sees it
        f.seek(1 << 20)
        f.write(b"\0" * 64)
    fixed = cache.ensure(loaded, recipes.RECIPES["q4_0"])
    assert fixed.cache_hit is False and made[2:] == ["LLAMA_FTYPE_MOSTLY_Q4_0"]     # F32 entry still valid
    assert "rebuilt" in fixed.notes[0] and "sha256" in fixed.notes[0]
    assert cache.ensure(loaded, recipes.RECIPES["q4_0"]).cache_hit is True
    real = files.versions()
    monkeypatch.setattr(files, "versions", lambda: {**real, "llama-cpp-python": "0.0.1"})   # another llama.cpp
    other = cache.ensure(loaded, recipes.RECIPES["q4_0"])
    assert other.cache_hit is False and other.path != first.path and made[3:] == ["LLAMA_FTYPE_MOSTLY_Q4_0"]
    assert cache.ensure(loaded, recipes.RECIPES["baseline"]).cache_hit is True    # the F32 copy is not llama.cpp's
    native = cache.ensure(loaded, recipes.RECIPES["gguf-native"])
    assert native.cache_hit is None and native.census["Q4_1"] == 210


def test_makefile_builds_the_pinned_llama_cpp_portably():
    """The Makefile compiles the llama extra's own pin (not a second version) without -march=native."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    make = (root / "Makefile").read_text(encoding="utf-8")
    pin = re.search(r"^LLAMA_SPEC \?= (\S+)$", make, re.M).group(1)
    extra = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]["llama"]
    assert extra == [pin]
    assert re.search(r"^LLAMA_CMAKE_ARGS \?= .*-DGGML_NATIVE=OFF", make, re.M)
    assert 'CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)"' in make and "--no-cache-dir" in make
