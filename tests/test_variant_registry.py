"""One variant registry: entries carry their layout and compute format, names are parsed once into a
VariantSpec, one Policy serves apply() and the planner, and none of it imports torch."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.models.presets import PRESETS
from harness.plan import parse_variants as plan_parse_variants, weight_bytes
from harness.variants import (POLICIES, REGISTRY, ApplyResult, NothingApplied, Policy, Requirements,
                              UnknownVariantError, Variant, VariantSpec, compute_format, get_variant, parse_variant,
                              parse_variant_list, parse_variants, policy_for, register)
from harness.variants.policy import block_fqn
from harness.variants.registry import resolve

ROOT = Path(__file__).resolve().parents[1]
L8B = PRESETS["llama-3.1-8b"]


def _definitions(pattern: str) -> list[str]:
    rx = re.compile(pattern, re.M)
    return [f"{p.relative_to(ROOT)}" for p in sorted((ROOT / "harness").rglob("*.py")) for _ in rx.finditer(p.read_text())]


# -- one registry ------------------------------------------------------------------------------------
def test_variant_and_policy_are_each_defined_once():
    assert _definitions(r"^\s*class Variant\b") == ["harness/variants/registry.py"]
    assert _definitions(r"^\s*class Policy\b") == ["harness/variants/policy.py"]
    assert _definitions(r"^\s*class VariantSpec\b") == ["harness/variants/spec.py"]
    assert _definitions(r"\bCOMPUTE_FORMAT\b") == []


def test_a_variant_name_is_split_in_one_module():
    """Every other module asks spec.py: no second parser can drift from it."""
    hits = set(_definitions(r"""(partition|split)\(["']@["']\)"""))
    # report/claims.py (not this package's file) still cuts the base name itself; it should call
    # harness.variants.split_policy, which imports no torch either
    assert hits - {"harness/report/claims.py"} == {"harness/variants/spec.py"}


def test_every_entry_has_a_layout_and_the_planner_lists_the_runtime_names():
    explicit = [n for n, v in REGISTRY.items() if v.kernel_of]
    assert [s.name for s in plan_parse_variants("all")] == [n for n in REGISTRY if n not in explicit] \
        == parse_variant_list("all")
    assert {"int4-wo[tinygemm]", "int4-wo[cutlass]", "int4-wo[gemlite]", "fp8-wo[gemlite]"} <= set(explicit)
    for name, entry in REGISTRY.items():
        assert entry.layout is not None, name
        for base in ("bf16", "fp16", "fp32"):
            assert entry.compute_format(base) in ("fp8", "int8", base), name
    # activations in fp8/int8 use those tensor cores; weight-only and pruned variants compute in the baseline
    low = {n: REGISTRY[n].compute_format("bf16") for n in REGISTRY if REGISTRY[n].compute_format("bf16") != "bf16"}
    # (the llama.cpp GGUF types: ggml quantizes activations to Q8 blocks and multiplies int8 x int8)
    assert low == {"fp8-dq": "fp8", "w4a8": "fp8", "int8-dq": "int8", "sparse-2:4+fp8-dq": "fp8",
                   "sparse-2:4+int8-dq": "int8", "gguf-native": "int8", "q8_0": "int8", "q4_0": "int8",
                   "q4_k_m": "int8"}


def test_the_meters_take_the_mfu_format_from_the_entry():
    from harness.pipeline.assemble import bandwidth_fields, compute_format as mfu_format

    h100 = SimpleNamespace(bandwidth_bytes_per_s=3.35e12, peak=lambda fmt: {"bf16": 989e12, "fp8": 1979e12}[fmt])
    cell = SimpleNamespace(batch_size=1, prompt_tokens=128)

    def fmt(variant: str) -> str:
        _, sections = bandwidth_fields(None, h100, L8B, 16 * 10**9, 131072.0, 160.0, cell, 150.0, 0.02,
                                       mfu_format(variant, "bfloat16"))
        return sections["bandwidth"]["mfu_format"]

    assert fmt("fp8-dq") == "fp8" and fmt("fp8-dq@keep-attn") == "fp8"
    assert fmt("int4-wo") == "bf16" and compute_format("int8-dq@keep-ends", "bf16") == "int8"


def test_register_refuses_an_entry_without_a_layout():
    with pytest.raises(ValueError, match="no storage layout"):
        register(Variant("layoutless", "", Requirements(), lambda m, c: None))
    assert "layoutless" not in REGISTRY


# -- names parsed once -------------------------------------------------------------------------------
def test_a_spec_is_frozen_and_carries_entry_layout_and_policy():
    s = parse_variant(" int4-wo@keep-attn ")
    assert isinstance(s, VariantSpec) and s.name == "int4-wo@keep-attn" and s.base == "int4-wo"
    assert s.entry is REGISTRY["int4-wo"] and s.layout is REGISTRY["int4-wo"].layout
    assert s.policy is POLICIES["keep-attn"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "int8-wo"
    assert parse_variant("int4-wo").policy is None and s.compute_format("bf16") == "bf16"


def test_a_policy_file_is_read_once_at_parse(tmp_path):
    f = tmp_path / "keep.txt"
    f.write_text("model.layers.2.mlp.*  # the MLP of block 2\n")
    spec = parse_variant(f"int8-wo@{f}")
    f.unlink()                       # the cell uses what was validated, not the file read again
    pol = spec.policy_for(30)
    assert pol.patterns == ("model.layers.2.mlp.*",) and pol.keeps("model.layers.2.mlp.down_proj")
    with pytest.raises(UnknownVariantError, match=r"unknown policy '@.*keep.txt'.*not found"):
        parse_variant(f"int8-wo@{f}")


def test_unknown_names_list_the_valid_ones():
    for bad in ("int3-wo", "int3-wo@keep-attn", "all@keep-attn"):
        with pytest.raises(UnknownVariantError) as e:
            parse_variant(bad)
        assert "unknown variant" in str(e.value) and all(n in str(e.value) for n in REGISTRY)
        assert "@keep-attn" in str(e.value) and "@path/to/policy.txt" in str(e.value)
    with pytest.raises(UnknownVariantError, match=r"unknown policy '@keep-mlp'.*@keep-attn, @keep-ends"):
        parse_variants("baseline,int4-wo@keep-mlp")
    with pytest.raises(UnknownVariantError, match="no variants given"):
        parse_variants(" , ")
    with pytest.raises(UnknownVariantError, match="unknown variant 'all'"):
        parse_variants("all,baseline")       # 'all' stands alone


def test_policies_stack_and_keep_ends_needs_the_layer_count():
    s = parse_variant("int4-wo@keep-attn@keep-ends")
    assert s.policy.name == "keep-attn@keep-ends"
    with pytest.raises(ValueError, match="keep-attn@keep-ends needs the model's number of layers"):
        s.policy_for(None)
    p = s.policy_for(30)
    assert p.keeps("model.layers.0.mlp.up_proj") and p.keeps("model.layers.29.mlp.up_proj") and p.keeps("lm_head")
    assert p.keeps("model.layers.7.self_attn.v_proj") and not p.keeps("model.layers.7.mlp.up_proj")
    assert policy_for("int8-wo@keep-ends", 30).layers == (0, 29) and policy_for("int8-wo") is None
    with pytest.raises(ValueError, match="not bound"):
        POLICIES["keep-ends"].keeps("model.layers.3.mlp.up_proj")


def test_old_entry_points_resolve_through_the_spec():
    assert get_variant("int8-wo@keep-ends") is REGISTRY["int8-wo"]
    assert parse_variant_list("int8-wo@keep-attn, baseline,int8-wo@keep-attn") == ["int8-wo@keep-attn", "baseline"]
    assert [s.name for s in parse_variants("int4-wo, baseline,int4-wo")] == ["int4-wo", "baseline"]


# -- one Policy for apply() and the planner -----------------------------------------------------------
def test_fused_projections_are_kept_when_a_part_is():
    attn = POLICIES["keep-attn"]
    assert attn.keeps("model.layers.3.self_attn.qkv_proj") and not attn.keeps("model.layers.3.mlp.gate_up_proj")
    assert not attn.keeps("model.layers.3.mlp.q_proj")          # a q_proj outside self_attn is not attention
    f = Policy("f", patterns=("model.layers.1.mlp.up_proj",))
    assert f.keeps("model.layers.1.mlp.gate_up_proj") and not f.keeps("model.layers.2.mlp.gate_up_proj")


def test_the_planner_asks_the_runtime_policy(tmp_path):
    """A policy file naming the attention projections projects the bytes keep-attn projects: the planner
    evaluates the same Policy.keeps the runtime does, on the runtime's module names."""
    f = tmp_path / "attn.txt"
    f.write_text("model.layers.*.self_attn.*\n")
    from_file, builtin = parse_variant(f"int4-wo@{f}"), parse_variant("int4-wo@keep-attn")
    assert weight_bytes(L8B, from_file, "bf16") == weight_bytes(L8B, builtin, "bf16")
    assert weight_bytes(L8B, from_file, "bf16").total > weight_bytes(L8B, parse_variant("int4-wo"), "bf16").total
    ends = tmp_path / "ends.txt"
    ends.write_text(f"lm_head\nmodel.layers.0.*\nmodel.layers.{L8B.num_hidden_layers - 1}.*\n")
    assert weight_bytes(L8B, parse_variant(f"int4-wo@{ends}"), "bf16") == \
        weight_bytes(L8B, parse_variant("int4-wo@keep-ends"), "bf16")
    assert block_fqn("down_proj", 4) == "model.layers.4.mlp.down_proj"


def test_planned_weight_bytes_follow_the_spec(tmp_path):
    from harness.pipeline.assemble import planned_weight_bytes

    f = tmp_path / "attn.txt"
    f.write_text("model.layers.*.self_attn.*\n")
    assert planned_weight_bytes(L8B, f"int4-wo@{f}", "bfloat16") == weight_bytes(
        L8B, parse_variant("int4-wo@keep-attn"), "bf16").total
    assert planned_weight_bytes(L8B, "int3-wo", "bfloat16") is None
    assert planned_weight_bytes(None, "int4-wo", "bfloat16") is None


# -- lazy implementations and nothing silently ok -------------------------------------------------------
def test_implementations_are_named_and_imported_on_first_use():
    """Each entry names its apply and probe; every name resolves (the torch-free import is tested below)."""
    builtin = {n: e for n, e in REGISTRY.items() if not e.description.startswith("test-only")}  # plug-ins of other tests
    assert len(builtin) >= 13
    for name, entry in builtin.items():
        assert isinstance(entry.implementation, str) and ":" in entry.implementation, name
        assert entry.probe is None or isinstance(entry.probe, str), name
        assert callable(resolve(entry.implementation)) and (entry.probe is None or callable(resolve(entry.probe)))
    bad = Variant("bad", "", Requirements(), "harness.variants.quant")
    with pytest.raises(ValueError, match="module:function"):
        bad.apply(None, None)


def test_a_result_with_no_changed_layer_raises_nothing_applied():
    def nothing(model, ctx):
        return ApplyResult(kernel="k on 0/3 linears", layers_changed=0)

    with pytest.raises(NothingApplied) as e:
        Variant("v", "", Requirements(), nothing).apply(None, None)
    assert e.value.reason == "v transformed no layer (k on 0/3 linears)"
    assert Variant("b", "", Requirements(), nothing, changes_weights=False).apply(None, None).layers_changed == 0
    with pytest.raises(TypeError, match="layers_changed"):
        Variant("v", "", Requirements(), lambda m, c: "done").apply(None, None)
    # of the built-in entries only baseline is exempt (test plug-ins registered by other tests may be too)
    assert [n for n, v in REGISTRY.items() if not v.changes_weights and not v.description.startswith("test-only")] \
        == ["baseline"]


def test_registry_and_planner_import_no_torch(tmp_path):
    code = (
        "import sys\n"
        "import harness.variants.registry, harness.variants.spec\n"
        "from harness.variants import REGISTRY, parse_variants\n"
        "from harness.models import PRESETS\n"
        "from harness.plan import Workload, plan\n"
        "from harness.profiles import load_profiles\n"
        "specs = parse_variants('all') + parse_variants('int4-wo@keep-attn@keep-ends,int8-dq@keep-ends')\n"
        "w = Workload('synthetic:llama-3.1-8b', PRESETS['llama-3.1-8b'], 2048, 4)\n"
        "rows = plan(list(load_profiles().values()), specs, w)\n"
        "assert len(rows) > len(specs) and {r.variant for r in rows} >= {n for n, v in REGISTRY.items() if not v.kernel_of}\n"
        "from click.testing import CliRunner\n"
        "import harness.cli.profiles\n"
        "r = CliRunner().invoke(harness.cli.profiles.plan, ['--model', 'synthetic:tiny', '--variants', 'all', "
        "'--format', 'json', '--profiles', 'h100-sxm-80gb', '--out', sys.argv[1]])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import harness.variants.quant\n"
        "assert 'torch' in sys.modules\n"       # the check above can fail
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], check=True, cwd=ROOT)
