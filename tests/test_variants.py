import pytest
import torch

from harness.variants import REGISTRY, UnknownVariantError, get_variant, parse_variant_list
from harness.variants.inspect import tensor_bytes
from harness.variants.registry import ApplyContext


def test_unknown_variant_lists_valid_names():
    with pytest.raises(UnknownVariantError) as e:
        get_variant("int3-magic")
    assert "baseline" in str(e.value) and "int8-wo" in str(e.value)
    with pytest.raises(UnknownVariantError):
        parse_variant_list("baseline,int3-magic")


def test_all_expands_to_registry_order_and_duplicates_collapse():
    assert parse_variant_list("all") == [n for n, v in REGISTRY.items() if v.kernel_of is None]
    assert parse_variant_list("int8-wo, baseline,int8-wo") == ["int8-wo", "baseline"]


def test_int8_wo_changes_weight_bytes_and_names_its_kernel(tiny_loaded):
    ctx = ApplyContext("cpu", torch.float32)
    base = tiny_loaded.instantiate(torch.device("cpu"), torch.float32)
    q = tiny_loaded.instantiate(torch.device("cpu"), torch.float32)
    b_bytes = tensor_bytes(base)
    res = get_variant("int8-wo").apply(q, ctx)
    q_bytes = tensor_bytes(q)
    assert "Int8" in res.kernel and "torchao" in res.kernel
    lin = sum(i * o for _, i, o in tiny_loaded.shape.linear_shapes()) * tiny_loaded.shape.num_hidden_layers
    lin += tiny_loaded.shape.lm_head_params()
    # fp32 -> int8 saves ~3 bytes per linear weight (plus small scale overhead)
    assert b_bytes - q_bytes == pytest.approx(3 * lin, rel=0.05)
    ids = torch.randint(0, 100, (1, 8))
    rel = ((q(ids).logits - base(ids).logits).norm() / base(ids).logits.norm()).item()
    assert rel < 0.05


def test_tied_weights_counted_once():
    lin = torch.nn.Linear(64, 64, bias=False)
    m = torch.nn.ModuleDict({"a": lin, "b": torch.nn.Linear(64, 64, bias=False)})
    m["b"].weight = lin.weight
    assert tensor_bytes(m) == 64 * 64 * 4


def test_unsupported_reason_names_device():
    v = get_variant("int8-wo")
    assert v.unsupported_reason("cpu", None) is None
    assert "no kernel on mps" in v.unsupported_reason("mps", None)


def test_policies_keep_named_groups():
    from harness.variants import Policy, policy_for, split_policy

    assert split_policy("int4-wo@keep-attn") == ("int4-wo", "keep-attn")
    attn = policy_for("int8-wo@keep-attn", 30)
    assert attn.keeps("model.layers.3.self_attn.k_proj") and not attn.keeps("model.layers.3.mlp.up_proj")
    assert attn.keeps("model.layers.3.self_attn.qkv_proj") and not attn.keeps("model.layers.3.mlp.gate_up_proj")
    ends = policy_for("int8-wo@keep-ends", 30)
    assert ends.keeps("lm_head") and ends.keeps("model.layers.0.mlp.up_proj") and ends.keeps("model.layers.29.self_attn.o_proj")
    assert not ends.keeps("model.layers.1.mlp.up_proj") and not ends.keeps("model.layers.10.mlp.up_proj")
    assert policy_for("int8-wo", 30) is None
    assert get_variant("int8-wo@keep-ends").name == "int8-wo"


def test_policy_file_and_errors(tmp_path):
    from harness.variants import policy_for

    f = tmp_path / "keep.txt"
    f.write_text("# keep the MLP of block 2\nmodel.layers.2.mlp.*\n")
    p = policy_for(f"int8-wo@{f}")
    assert p.keeps("model.layers.2.mlp.down_proj") and not p.keeps("model.layers.20.mlp.down_proj")
    with pytest.raises(UnknownVariantError, match="not found"):
        parse_variant_list(f"int8-wo@{tmp_path / 'missing.txt'}")
    with pytest.raises(UnknownVariantError, match="unknown variant"):
        parse_variant_list("int9@keep-attn")


def test_policy_keeps_layers_unquantized(tiny_loaded):
    from harness.variants import policy_for

    m = tiny_loaded.instantiate(torch.device("cpu"), torch.float32)
    ctx = ApplyContext("cpu", torch.float32, policy=policy_for("int8-wo@keep-attn", 4))
    get_variant("int8-wo").apply(m, ctx)
    assert type(m.model.layers[0].self_attn.q_proj.weight).__name__ in ("Parameter", "Tensor")
    assert "Int8" in type(m.model.layers[0].mlp.up_proj.weight).__name__


def test_record_kernel_names_the_ops_that_ran(tiny_loaded):
    """torchao's CPU int8 weight-only path converts the int8 weight on every call; the ops say so."""
    from harness.variants.inspect import ops_that_ran

    base = tiny_loaded.instantiate(torch.device("cpu"), torch.float32)
    assert "aten::mm" in ops_that_ran(base, torch.float32) or "aten::linear" in ops_that_ran(base, torch.float32)
    q = tiny_loaded.instantiate(torch.device("cpu"), torch.float32)
    get_variant("int8-wo").apply(q, ApplyContext("cpu", torch.float32))
    ops = ops_that_ran(q, torch.float32)
    assert "aten::_to_copy" in ops and "aten::mm" in ops
