"""The embedded default with real weights (loads in ~20 s on a 2-core machine)."""
import pytest
import torch

from harness.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    lm = load_model("smollm2-135m")
    return lm, lm.instantiate(torch.device("cpu"), torch.float32)


def test_embedded_model_answers(smol):
    lm, m = smol
    assert "Q4_1" in lm.weights_note
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = m.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in lm.tokenizer.decode(out[0, ids.shape[1]:])


def test_engine_greedy_tokens_equal_transformers_generate(smol):
    """Our decode loop must produce exactly transformers' greedy tokens (CPU, fp32)."""
    from harness.backends.pytorch.engine import EagerEngine
    from harness.corpus import load_corpus

    lm, m = smol
    name, text = load_corpus()
    ids, src = lm.prompt_ids(name, text, 2, 48)
    assert "corpus" in src
    ours = EagerEngine(m, torch.device("cpu")).run_pass(ids, 24).tokens
    with torch.inference_mode():
        ref = m.generate(ids, max_new_tokens=24, min_new_tokens=24, do_sample=False)[:, 48:]
    assert torch.equal(ours, ref)
