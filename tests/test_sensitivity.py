"""The sensitivity scan finds a layer made fragile on purpose, and its policy file reproduces the
mixed model it measured."""
import copy
import json

import pytest
import torch
from click.testing import CliRunner

from harness.cli.quality import sensitivity
from harness.quality import QualityReference, QualitySettings, evaluate
from harness.quality.sensitivity import OnlyPolicy, linear_groups, scan
from harness.quality.sensitivity_output import write_outputs
from harness.variants import ApplyContext, get_variant, policy_for

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")
FRAGILE = "model.layers.2.mlp.down_proj"
SETTINGS = QualitySettings(tokens=32, window=32, stride=16, reference_dtype="float32")


def _fragile_factory(loaded, outlier: float = 1e3):
    """Fresh copies of a tiny model whose layer 2 down_proj has an outlier on an input that is always 0.

    The outlier changes nothing in float32 (0 x 1000), but per-channel int8 takes every row's scale
    from it (1000 / 127), which rounds all the row's ordinary weights (~0.02) to zero.
    """
    pristine = loaded.instantiate(CPU, torch.float32)
    mlp = pristine.model.layers[2].mlp
    mlp.up_proj.weight[7].zero_()          # hidden unit 7 is act(gate) x up = 0 for every token
    mlp.down_proj.weight[:, 7] = outlier
    return lambda: copy.deepcopy(pristine)


@pytest.fixture(scope="module")
def fragile_scan(tiny_loaded):
    ids, _ = tiny_loaded.prompt_ids("none", "", 1, 33, seed=5)
    make = _fragile_factory(tiny_loaded)
    rep = scan(make, get_variant("int8-wo"), ids.reshape(-1), SETTINGS, device_type="cpu", dtype=torch.float32,
               granularity="linear", top_k=2, target_kl=1e-3, model_name="synthetic:tiny")
    return rep, make, ids.reshape(-1)


def test_the_fragile_layer_is_unchanged_in_float32_but_ranked_first(tiny_loaded, fragile_scan):
    rep, make, ids = fragile_scan
    ref = QualityReference.build(_fragile_factory(tiny_loaded, outlier=0.0)(), ids, SETTINGS)
    assert evaluate(make(), ref).kl_mean == 0.0           # the outlier alone changes no output
    assert rep.ranked[0].group.name == FRAGILE
    assert rep.ranked[0].kl_mean > 20 * rep.ranked[1].kl_mean
    assert len(rep.ranked) == 4 * 7 + 1                   # every linear of 4 blocks, and lm_head
    assert rep.steps[1].kept == (FRAGILE,) and rep.proposed.kept[0] == FRAGILE
    assert rep.steps[0].kl_recovered == 0 and rep.steps[1].kl_recovered > 0.9 * rep.steps[0].kl_mean
    assert rep.steps[0].bytes_saved > rep.steps[1].bytes_saved > 0


def test_policy_file_round_trips_and_reproduces_the_mixed_model(fragile_scan, tmp_path):
    rep, make, ids = fragile_scan
    paths = write_outputs(rep, tmp_path)
    policy = policy_for(f"int8-wo@{paths['policy']}")
    assert policy.keeps(FRAGILE) and not policy.keeps("model.layers.2.mlp.up_proj")
    m = make()
    get_variant("int8-wo").apply(m, ApplyContext("cpu", torch.float32, None, policy))
    ref = QualityReference.build(make(), ids, SETTINGS)
    assert evaluate(m, ref).kl_mean == pytest.approx(rep.proposed.kl_mean, rel=1e-6)
    data = json.loads(paths["json"].read_text())
    assert data["ranked"][0]["group"]["name"] == FRAGILE and len(data["steps"]) == 3
    assert paths["chart"].stat().st_size > 10_000


def test_block_groups_and_the_only_policy(tiny_loaded):
    m = tiny_loaded.instantiate(CPU, torch.float32)
    groups = linear_groups(m, "block")
    assert [g.name for g in groups] == [f"model.layers.{i}" for i in range(4)] + ["lm_head"]
    only = OnlyPolicy("x", only=groups[2].patterns)
    assert not only.keeps(FRAGILE) and only.keeps("model.layers.1.mlp.down_proj") and only.keeps("lm_head")
    with pytest.raises(ValueError):
        linear_groups(m, "head")


def test_cli_writes_the_folder_last(tmp_path):
    out = tmp_path / "scan"
    r = CliRunner().invoke(sensitivity, ["--model", "synthetic:tiny", "--variant", "int8-wo", "--tokens", "32",
                                         "--window", "32", "--stride", "16", "--top-k", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == str(out)
    assert {p.name for p in out.iterdir()} == {"policy.txt", "sensitivity.json", "sensitivity.png"}
    assert "random weights" in json.loads((out / "sensitivity.json").read_text())["notes"][0]
    bad = CliRunner().invoke(sensitivity, ["--model", "synthetic:tiny", "--variant", "int8-wo@keep-attn"])
    assert bad.exit_code == 2 and "bare variant name" in bad.output
    unknown = CliRunner().invoke(sensitivity, ["--model", "synthetic:tiny", "--variant", "nope"])
    assert unknown.exit_code == 2 and "baseline" in unknown.output
