"""ONNX Runtime backend on the embedded SmolLM2-135M (real weights, GGUF Q4_1 dequantized to fp32):
the fp32 export decodes the torch engine's greedy tokens, and int4 stays close to it. Two builder runs
(~40 s each on 2 cores) plus the Hugging Face export."""
import pytest
import torch

pytest.importorskip("onnxruntime_genai")

from harness.backends.ort import OrtBackend, OrtSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from harness.corpus import load_corpus
    from harness.models import load_model

    lm = load_model("smollm2-135m")
    name, text = load_corpus()
    backend = OrtBackend(OrtSettings(cache_dir=str(tmp_path_factory.mktemp("ort-smol"))))
    return lm, backend, lm.prompt_ids(name, text, 2, 48)[0]


@pytest.fixture(scope="module")
def fp32(smol):
    lm, backend, _ = smol
    return backend.prepare(lm, "baseline")


def test_fp32_greedy_tokens_equal_the_torch_engine(smol, fp32):
    from harness.backends.pytorch.engine import EagerEngine

    lm, _, ids = smol
    model = lm.instantiate(torch.device("cpu"), torch.float32)
    ref = EagerEngine(model, torch.device("cpu")).run_pass(ids, 16).tokens
    ours = fp32.engine().run_pass(ids, 16)
    assert torch.equal(ours.tokens, ref)
    assert len(ours.step_s) == 15
    # weights: 134.5M parameters (lm_head tied to the embedding, stored once) at 4 bytes
    assert 0.5e9 < fp32.weight_bytes < 0.56e9


def test_fp32_logits_match_torch(smol, fp32):
    lm, _, ids = smol
    model = lm.instantiate(torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        ref = torch.log_softmax(model(input_ids=ids).logits, -1)
    ours = torch.log_softmax(fp32.logits(ids), -1)
    kl = (ref.exp() * (ref - ours)).sum(-1)
    assert kl.max().item() < 1e-4
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean().item() > 0.99


def test_int4_block128_cuts_the_weights_and_keeps_most_top_tokens(smol, fp32):
    lm, backend, ids = smol
    int4 = backend.prepare(lm, "int4-wo")
    assert int4.kernel == "onnxruntime MatMulNBits int4 block 128, fp32 activations (accuracy_level 1) (CPU EP)"
    assert int4.weight_bytes < 0.2 * fp32.weight_bytes       # tied embedding quantized too (GatherBlockQuantized)
    # SmolLM2 does not survive int4 well (torch int4-wo keeps 64% of top tokens, README); a broken
    # export would agree on almost none
    agree = (int4.logits(ids).argmax(-1) == fp32.logits(ids).argmax(-1)).float().mean().item()
    assert agree > 0.4
