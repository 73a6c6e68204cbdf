"""The llama.cpp backend on the embedded SmolLM2-135M, through llama-cpp-python (the `llama` extra,
installed by the Makefile): llama.cpp's quantizer and the cache, greedy tokens against torch fp32,
quality through llama.cpp's logits, and one `harness run --backends llama.cpp`."""
import json
import math

import pytest
import torch

pytest.importorskip("llama_cpp")

from harness.backends.llamacpp import recipes  # noqa: E402
from harness.backends.llamacpp.files import GgufCache  # noqa: E402

pytestmark = pytest.mark.slow
GREEDY_TOKENS = 16


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from harness.corpus import load_corpus
    from harness.models import load_model

    lm = load_model("smollm2-135m")
    name, text = load_corpus()
    return lm, GgufCache(tmp_path_factory.mktemp("llama-cache")), lm.prompt_ids(name, text, 1, 48)[0]


@pytest.fixture(scope="module")
def torch_greedy(smol):
    from harness.backends.pytorch.engine import EagerEngine

    lm, _, ids = smol
    model = lm.instantiate(torch.device("cpu"), torch.float32)
    return EagerEngine(model, torch.device("cpu")).run_pass(ids, GREEDY_TOKENS).tokens[0].tolist()


def _greedy(path, ids):
    from harness.backends.llamacpp.engine import LlamaCppEngine

    eng = LlamaCppEngine(path, ids.shape[1] + GREEDY_TOKENS, torch.get_num_threads())
    try:
        res = eng.run_pass(ids, GREEDY_TOKENS)
    finally:
        eng.close()
    assert len(res.step_s) == GREEDY_TOKENS - 1 and res.prefill_s > 0 and all(s > 0 for s in res.step_s)
    return res.tokens[0].tolist()


def _agree(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_quantize_and_cache(smol):
    from harness.backends.llamacpp import gguf_io

    lm, cache, _ = smol
    f32 = cache.ensure(lm, recipes.RECIPES["baseline"])
    assert f32.census == {"F32": 272}
    sizes = {}
    for name, want in (("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("q4_k_m", "Q4_K")):
        f = cache.ensure(lm, recipes.RECIPES[name])
        assert f.cache_hit is False and want in f.census, (name, f.census)
        sizes[name] = gguf_io.tensor_bytes(f.path)
    base = gguf_io.tensor_bytes(f32.path)
    assert sizes["q8_0"] < 0.3 * base and sizes["q4_0"] < sizes["q8_0"] and sizes["q4_k_m"] < sizes["q8_0"]
    hit = cache.ensure(lm, recipes.RECIPES["q4_k_m"])
    assert hit.cache_hit is True
    # SmolLM2's 576-wide rows are not a multiple of Q4_K's 256-block: most tensors fall back (to Q5_0)
    assert hit.census.get("Q5_0", 0) > hit.census["Q4_K"]
    with open(hit.path, "r+b") as fh:                # a truncated file: caught by its size
        fh.truncate(hit.path.stat().st_size // 2)
    fixed = cache.ensure(lm, recipes.RECIPES["q4_k_m"])
    assert fixed.cache_hit is False and "rebuilt" in fixed.notes[0] and "bytes" in fixed.notes[0]
    assert gguf_io.tensor_bytes(fixed.path) == sizes["q4_k_m"]


def test_f32_greedy_tokens_equal_torch_fp32(smol, torch_greedy):
    lm, cache, ids = smol
    ours = _greedy(cache.ensure(lm, recipes.RECIPES["baseline"]).path, ids)
    assert _agree(ours, torch_greedy) == GREEDY_TOKENS, (ours, torch_greedy)


def test_native_q4_1_greedy_tokens_follow_its_dequantized_fp32(smol, torch_greedy):
    """Q4_1 weights x Q8_1-quantized activations vs the same weights dequantized, fp32 activations:
    the two differ only by the activation rounding, so the first tokens agree."""
    lm, cache, ids = smol
    ours = _greedy(cache.ensure(lm, recipes.RECIPES["gguf-native"]).path, ids)
    n = _agree(ours, torch_greedy)
    print(f"gguf-native (Q4_1) vs torch fp32: first {n} of {GREEDY_TOKENS} greedy tokens agree")
    assert n >= 4, (ours, torch_greedy)


def _prepared(variant, smol):
    from harness.backends.llamacpp.cell import LlamaCppPrepared
    from harness.quality.settings import QualitySettings
    from harness.runner import RunSettings
    from harness.variants import parse_variant

    lm, cache, _ = smol
    settings = RunSettings(device="cpu", quality=QualitySettings(tokens=256, window=128, stride=64))
    p = LlamaCppPrepared("smollm2-135m", parse_variant(variant), settings, {"smollm2-135m": lm}, root=cache.root)
    p.close()
    return p


def test_quality_through_llama_cpp_logits(smol):
    base = _prepared("baseline", smol).quality()
    native = _prepared("gguf-native", smol).quality()
    for q in (base, native):
        assert q.status == "measured" and q.tokens == 256
        assert all(math.isfinite(v) for v in (q.perplexity, q.kl_mean, q.kl_p99, q.top1_agreement))
    # the F32 file is the torch baseline's values: logits on the same positions nearly identical
    assert base.kl_mean < 1e-3 and base.top1_agreement > 0.98
    assert base.perplexity == pytest.approx(base.baseline_perplexity, rel=0.01)
    assert native.kl_mean > base.kl_mean and native.top1_agreement > 0.7


def test_harness_run_with_the_llama_cpp_backend(smol, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from harness.cli import main
    from harness.records import load_records

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", "--model", "smollm2-135m", "--backends", "llama.cpp", "--variants",
                                  "gguf-native,int4-wo", "--batch", "1,2", "--quick", "--cpu-power-w", "40",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = {(x.variant, x.batch_size): x for x in load_records(out)}
    native, int4, batch2 = recs["gguf-native", 1], recs["int4-wo", 1], recs["gguf-native", 2]
    assert batch2.status == "unsupported" and "one sequence per pass" in batch2.reason
    assert native.status == "ok" and native.backend == "llama.cpp", native.reason
    assert native.decode_path == "llama-cpp-python" and native.kernel.startswith("llama.cpp ggml mul_mat (CPU): Q4_1")
    assert "Q4_1 x210" in native.weights_note and "not dequantized" in native.weights_note
    assert native.decode_tok_s > 0 and native.ttft_s > 0 and native.peak_rss_bytes > 0
    assert len(native.tpot_s_samples) == native.repeats * (native.new_tokens - 1)
    assert native.weight_bytes == 96576768                 # tensor data of the shipped file
    assert all(math.isfinite(v) for v in (native.kl_mean, native.top1_agreement, native.perplexity))
    assert int4.status == "unsupported" and "nearest is q4_0 or q4_k_m" in int4.reason
    assert json.loads((out / "run.json").read_text())["complete"] is True
