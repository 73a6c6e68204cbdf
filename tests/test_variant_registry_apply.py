"""Nothing silently ok: every apply() counts the layers it changed, and a variant that changed none
raises NothingApplied (the cell becomes `unsupported` with its reason). On the synthetic `tiny` model
(4 blocks x 7 linears + an untied lm_head = 29 linears), for every variant that runs on CPU."""
from __future__ import annotations

import pytest
import torch

from harness.variants import REGISTRY, NothingApplied, parse_variant

CPU = torch.device("cpu")
TINY_LINEARS = 4 * 7 + 1
# built-in entries only: test plug-ins (tests/fault_plugin.py) may be registered by other test modules
CPU_VARIANTS = [n for n, v in REGISTRY.items()
                if v.unsupported_reason("cpu", None) is None and not v.description.startswith("test-only")]


def _calib() -> torch.Tensor:
    return torch.randint(0, 8192, (2, 64), generator=torch.Generator().manual_seed(1234))


@pytest.fixture
def keep_all(tmp_path):
    f = tmp_path / "keep-all.txt"
    f.write_text("*\n")
    return f


@pytest.fixture
def coarse_awq_grid(monkeypatch):
    import harness.variants.awq as awq

    monkeypatch.setitem(awq.GRID, "cpu", 2)


def test_the_cpu_variants_are_the_expected_ones():
    assert CPU_VARIANTS == ["baseline", "int8-wo", "int8-dq", "int4-wo", "int4-awq", "unstructured-50"]


@pytest.mark.parametrize("name", CPU_VARIANTS)
def test_a_policy_that_keeps_everything_applies_nothing(tiny_loaded, keep_all, name):
    spec = parse_variant(f"{name}@{keep_all}")
    m = tiny_loaded.instantiate(CPU, torch.float32)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ctx = spec.context("cpu", torch.float32, _calib(), tiny_loaded.shape.num_hidden_layers)
    if name == "baseline":        # changes nothing by definition
        assert spec.apply(m, ctx).layers_changed == 0
        return
    with pytest.raises(NothingApplied) as e:
        spec.apply(m, ctx)
    assert e.value.reason.startswith(f"{name}") and e.value.reason == str(e.value)
    assert "policy" in e.value.reason
    after = m.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("name", [n for n in CPU_VARIANTS if n != "baseline"])
def test_apply_counts_the_layers_it_changed(tiny_loaded, coarse_awq_grid, name):
    m = tiny_loaded.instantiate(CPU, torch.float32)
    n = tiny_loaded.shape.num_hidden_layers
    full = parse_variant(name).apply(m, parse_variant(name).context("cpu", torch.float32, _calib(), n))
    assert full.layers_changed == TINY_LINEARS
    m = tiny_loaded.instantiate(CPU, torch.float32)
    spec = parse_variant(f"{name}@keep-attn")
    assert spec.apply(m, spec.context("cpu", torch.float32, _calib(), n)).layers_changed == TINY_LINEARS - 4 * 4


def test_awq_on_an_architecture_it_does_not_know_is_not_int4_awq(tiny_loaded):
    m = tiny_loaded.instantiate(CPU, torch.float32)
    m.config.model_type = "phi"                      # AWQ knows where to fold scales in llama/mistral/qwen2 only
    spec = parse_variant("int4-awq")
    with pytest.raises(NothingApplied, match=r"int4-awq: no linear was AWQ-scaled: model_type 'phi'"):
        spec.apply(m, spec.context("cpu", torch.float32, _calib()))
    assert type(m.model.layers[0].mlp.up_proj).__name__ == "Linear"     # not quantized as plain RTN either
