"""The planner: storage layouts, roofline projections, calibration and the `plan` CLI (no GPU)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.profiles import plan as plan_cli
from harness.models.presets import PRESETS
from harness.models.spec import shape_of
from harness.plan import (PLAN_STATUSES, POLICIES, VariantError, Workload, parse_variant, parse_variants, plan,
                          project, variant_names, weight_bytes)
from harness.plan.roofline import kv_cache_bytes
from harness.profiles import FEATURES, load_profiles
from harness.records import Record, append_jsonl

L8B, L70B = PRESETS["llama-3.1-8b"], PRESETS["llama-3.1-70b"]
JSON_KEYS = {"profile", "variant", "weight_bytes", "kv_cache_bytes", "fits", "decode_tok_s", "prefill_tok_s",
             "bound", "status", "reason", "basis"}


@pytest.fixture(scope="module")
def P():
    return load_profiles()


def _linears(shape):
    return [(i, o) for _, i, o in shape.linear_shapes()] * shape.num_hidden_layers


def _w(shape, context=1, batch=1, model="synthetic:x"):
    return Workload(model, shape, context, batch)


# ---- storage layouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_baseline_bytes_are_two_per_parameter(preset):
    s = PRESETS[preset]
    assert weight_bytes(s, parse_variant("baseline"), "bf16").total == 2 * s.param_count()
    assert weight_bytes(s, parse_variant("baseline"), "fp32").total == 4 * s.param_count()


def test_llama_8b_bf16_is_16_06_gb():
    assert weight_bytes(L8B, parse_variant("baseline"), "bf16").total == pytest.approx(16.06e9, abs=0.005e9)


def _INT4(i, o):  # 4 bits + a bf16 scale and a bf16 zero per group of 128 inputs
    return i * o / 2 + o * (i // 128) * (2 + 2)


def _INT8(i, o):  # 1 byte + a bf16 scale per output channel
    return i * o + o * 2


def _FP8(i, o):   # 1 byte + an fp32 scale per output channel
    return i * o + o * 4


def _BF16(i, o):
    return i * o * 2


@pytest.mark.parametrize("variant,per_linear,head", [
    # (in, out) -> bytes for the block linears and for the lm_head, written out from the layout definitions
    ("int4-wo", _INT4, _INT4), ("int4-awq", _INT4, _INT4), ("w4a8", _INT4, _INT4),
    ("int8-wo", _INT8, _INT8), ("int8-dq", _INT8, _INT8),
    ("fp8-wo", _FP8, _FP8), ("fp8-dq", _FP8, _FP8),
    # 2:4: half the values + a 2-bit position per kept value; the lm_head is never pruned
    ("sparse-2:4", lambda i, o: i * o / 2 * 2 + i * o / 2 * 2 / 8, _BF16),
    ("sparse-2:4-wanda", lambda i, o: i * o / 2 * 2.25, _BF16),
    ("sparse-2:4+fp8-dq", lambda i, o: i * o / 2 * 1.25 + o * 4, _FP8),
    ("sparse-2:4+int8-dq", lambda i, o: i * o / 2 * 1.25 + o * 2, _INT8),
    ("unstructured-50", _BF16, _BF16),                                    # dense storage
])
def test_layout_bytes_by_hand(variant, per_linear, head):
    b = weight_bytes(L8B, parse_variant(variant), "bf16")
    assert b.linear == pytest.approx(sum(per_linear(i, o) for i, o in _linears(L8B)))
    assert b.lm_head == pytest.approx(head(L8B.hidden_size, L8B.vocab_size))
    assert b.embedding == L8B.embedding_params() * 2            # never quantized
    assert b.total == round(b.linear + b.lm_head + b.embedding + (2 * L8B.num_hidden_layers + 1) * L8B.hidden_size * 2)


def test_int4_g128_is_0_53125_bytes_per_weight():
    lay = parse_variant("int4-wo").layout
    assert lay.linear_bytes(4096, 14336, "bf16") / (4096 * 14336) == pytest.approx(0.53125)


def test_tied_lm_head_costs_nothing_extra():
    s = PRESETS["llama-3.2-1b"]
    assert s.tie_word_embeddings
    b = weight_bytes(s, parse_variant("int4-wo"), "bf16")
    assert b.lm_head == 0 and b.embedding == s.embedding_params() * 2


def test_keep_attn_keeps_attention_at_two_bytes():
    q4, kept = weight_bytes(L8B, parse_variant("int4-wo"), "bf16"), weight_bytes(L8B, parse_variant("int4-wo@keep-attn"), "bf16")
    attn = [(i, o) for name, i, o in L8B.linear_shapes() if name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    delta = L8B.num_hidden_layers * sum(i * o * 2 - (i * o / 2 + o * (i // 128) * 4) for i, o in attn)
    assert kept.linear - q4.linear == pytest.approx(delta)
    assert kept.lm_head == q4.lm_head


def test_keep_ends_keeps_two_blocks_and_lm_head():
    q4, kept = weight_bytes(L8B, parse_variant("int4-wo"), "bf16"), weight_bytes(L8B, parse_variant("int4-wo@keep-ends"), "bf16")
    block = [(i, o) for _, i, o in L8B.linear_shapes()]
    delta = 2 * sum(i * o * 2 - (i * o / 2 + o * (i // 128) * 4) for i, o in block)
    assert kept.linear - q4.linear == pytest.approx(delta)
    assert kept.lm_head == L8B.hidden_size * L8B.vocab_size * 2


def test_unknown_variant_and_policy_list_valid_names():
    with pytest.raises(VariantError) as e:
        parse_variant("int3-wo")
    assert "unknown variant 'int3-wo'" in str(e.value) and all(n in str(e.value) for n in variant_names())
    with pytest.raises(VariantError, match=r"unknown policy '@keep-mlp'.*@keep-attn"):
        parse_variant("int4-wo@keep-mlp")
    assert [v.name for v in parse_variants("int4-wo, baseline,int4-wo")] == ["int4-wo", "baseline"]


def test_layout_table_is_consistent():
    assert set(POLICIES) == {"keep-attn", "keep-ends"}
    for name in variant_names():
        lay = parse_variant(name).layout
        assert all(f in FEATURES for f in lay.requires), name
        assert lay.sparse_kernels == ("sparse_2to4" in lay.requires)


# ---- roofline -------------------------------------------------------------------------------------------

def test_hand_computed_8b_bf16_decode_ceiling_on_h100(P):
    """anchors.md: 16.06 GB of weights / 3.35 TB/s = 209 tok/s at batch 1."""
    r = project(P["h100-sxm-80gb"], parse_variant("baseline"), _w(L8B, context=1))
    assert r.weight_bytes == pytest.approx(16.06e9, abs=0.005e9)
    assert r.kv_cache_bytes == L8B.kv_bytes_per_token(2.0)       # one token of KV
    assert r.decode_tok_s == pytest.approx(3.35e12 / (r.weight_bytes + r.kv_cache_bytes))
    assert r.decode_tok_s == pytest.approx(209, abs=0.5)
    assert r.bound == "memory" and r.status == "ok" and r.basis == "projected"
    assert r.tpot_s == pytest.approx(1 / r.decode_tok_s)
    assert r.energy_j_per_token_upper == pytest.approx(700 / r.decode_tok_s)


def test_kv_cache_is_gqa_aware():
    # 70B: 80 layers x 8 KV heads x 128 dims x K,V x 2 bytes = 327,680 bytes per token
    assert kv_cache_bytes(L70B, 8192, 8, "bf16") == 8 * 8192 * 2 * 80 * 8 * 128 * 2
    assert kv_cache_bytes(L70B, 8192, 8, "bf16") < 8 * 8192 * 2 * 80 * 64 * 128 * 2 / 7   # not MHA-sized


def test_decode_becomes_compute_bound_at_large_batch(P):
    h100 = P["h100-sxm-80gb"]
    small = project(h100, parse_variant("baseline"), _w(L8B, context=128, batch=1))
    big = project(h100, parse_variant("baseline"), _w(L8B, context=128, batch=512))
    assert small.bound == "memory" and big.bound == "compute"
    assert big.decode_tok_s > 50 * small.decode_tok_s


def test_prefill_uses_sparse_rate_only_with_sparse_tensor_cores(P):
    h100 = P["h100-sxm-80gb"]
    w = _w(L8B, context=4096, batch=8)
    dense, sparse = project(h100, parse_variant("baseline"), w), project(h100, parse_variant("sparse-2:4"), w)
    assert dense.prefill_bound == sparse.prefill_bound == "compute"
    assert 1.4 < sparse.prefill_tok_s / dense.prefill_tok_s < 2.0
    no_sparse = dataclasses.replace(h100, id="h100-no-sparse",
                                    features={**h100.features, "sparse_2to4": False})
    r = project(no_sparse, parse_variant("sparse-2:4"), w)
    assert r.status == "unsupported" and "no 2:4 semi-structured sparse tensor cores" in r.reason
    assert r.decode_tok_s is None and r.prefill_tok_s is None


def test_unstructured_50_claims_nothing(P):
    h100 = P["h100-sxm-80gb"]
    w = _w(L8B, context=1024, batch=4)
    a, b = project(h100, parse_variant("baseline"), w), project(h100, parse_variant("unstructured-50"), w)
    assert (a.weight_bytes, a.decode_tok_s, a.prefill_tok_s) == (b.weight_bytes, b.decode_tok_s, b.prefill_tok_s)


def test_a100_has_no_fp8(P):
    for name in ("fp8-dq", "w4a8", "sparse-2:4+fp8-dq"):
        r = project(P["a100-sxm-80gb"], parse_variant(name), _w(L8B, context=1024))
        assert r.status == "unsupported" and "no fp8 tensor math" in r.reason, name
        assert r.decode_tok_s is None
    ok = project(P["h100-sxm-80gb"], parse_variant("fp8-dq"), _w(L8B, context=1024))
    assert ok.status == "ok" and ok.compute_format == "fp8"


def test_unpublished_features_are_unsupported_with_reason(P):
    r = project(P["apple-m4-max"], parse_variant("sparse-2:4"), _w(L8B))
    assert r.status == "unsupported" and "not published for this device" in r.reason


def test_70b_int4_8k_batch8_fits_big_memory_not_24gb(P):
    w = _w(L70B, context=8192, batch=8, model="synthetic:llama-3.1-70b")
    rows = {r.profile: r for r in plan(list(P.values()), [parse_variant("int4-wo")], w)}
    for pid in ("h200-sxm-141gb", "mi300x-192gb", "b200-180gb"):
        assert rows[pid].fits is True and rows[pid].status == "ok" and rows[pid].decode_tok_s > 0, pid
    for pid in ("rtx-4090-24gb", "l4-24gb"):
        assert rows[pid].fits is False and rows[pid].status == "does-not-fit", pid
        assert rows[pid].decode_tok_s is None and "GB usable" in rows[pid].reason
    need = rows["h200-sxm-141gb"].memory_need_bytes
    assert need == rows["h200-sxm-141gb"].weight_bytes + rows["h200-sxm-141gb"].kv_cache_bytes + rows["h200-sxm-141gb"].workspace_bytes
    assert 60e9 < need < 62e9


def test_unknown_peaks_and_memory_are_not_invented(P):
    m4 = project(P["apple-m4-max"], parse_variant("int4-wo"), _w(L8B, context=2048))
    assert m4.decode_tok_s is not None and m4.bound == "memory" and m4.prefill_tok_s is None
    assert "bf16 peak not published" in m4.reason and m4.energy_j_per_token_upper is None
    ryzen = project(P["ryzen-ai-9-hx-370"], parse_variant("int4-wo"), _w(L8B, context=2048))
    assert ryzen.fits is None and ryzen.status == "unknown-fit" and "fit not checked" in ryzen.reason


def test_energy_uses_top_of_power_range(P):
    r = project(P["intel-core-ultra-7-155h"], parse_variant("int4-wo"), _w(L8B, context=512))
    assert r.power_w == 115 and r.energy_j_per_token_upper == pytest.approx(115 / r.decode_tok_s)


def test_cpu_profile_baseline_is_fp32(P):
    from harness.profiles.detection import cpu_profile
    cpu = dataclasses.replace(cpu_profile(power_w=200, bandwidth_bytes_per_s=100e9), memory_bytes=512_000_000_000)
    r = project(cpu, parse_variant("baseline"), _w(L8B, context=1))
    assert r.weight_bytes == 4 * L8B.param_count() and r.compute_format == "fp32"
    assert r.decode_tok_s == pytest.approx(100e9 / (r.weight_bytes + r.kv_cache_bytes))
    assert r.prefill_tok_s is None  # no peak supplied
    assert project(cpu, parse_variant("fp8-dq"), _w(L8B)).status == "unsupported"


# ---- CLI and outputs ---------------------------------------------------------------------------------------

ARGS_70B = ["--model", "synthetic:llama-3.1-70b", "--variants", "int4-wo", "--context", "8192", "--batch", "8"]


def test_plan_json_schema(tmp_path):
    res = CliRunner().invoke(plan_cli, ARGS_70B + ["--format", "json", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)            # stdout is pure JSON: pipeable
    assert len(rows) == 19
    for r in rows:
        assert JSON_KEYS <= set(r)
        assert r["status"] in PLAN_STATUSES and r["basis"] == "projected"
        assert r["bound"] in ("memory", "compute", None)
        assert isinstance(r["weight_bytes"], int) and isinstance(r["kv_cache_bytes"], int)
        assert r["fits"] in (True, False) or (r["fits"] is None and r["profile"] == "ryzen-ai-9-hx-370")
        assert (r["decode_tok_s"] is None) == (r["status"] in ("does-not-fit", "unsupported"))
    h200 = next(r for r in rows if r["profile"] == "h200-sxm-141gb")
    assert h200["fits"] is True and h200["bound"] == "memory" and h200["decode_tok_s"] > 500
    out = tmp_path / "o"
    assert json.loads((out / "plan.json").read_text()) == rows
    for name in ("plan.md", "plan.csv", "plan_decode_tok_s.png", "plan_memory_fit.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "plan_decode_tok_s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_md_prints_table_then_folder(tmp_path):
    out = tmp_path / "md"
    res = CliRunner().invoke(plan_cli, ARGS_70B + ["--profiles", "h100-sxm-80gb,rtx-4090-24gb", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.rstrip("\n").splitlines()
    assert lines[-1] == str(out)
    assert lines[0].startswith("Projected (roofline ceilings")
    body = [line for line in lines if line.startswith("| h100") or line.startswith("| rtx")]
    assert len(body) == 2 and "| ok |" in body[0] and "| does-not-fit |" in body[1]


def test_plan_csv_is_data_only(tmp_path):
    res = CliRunner().invoke(plan_cli, ARGS_70B + ["--profiles", "b200-180gb", "--format", "csv", "--out", str(tmp_path)])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 1 and rows[0]["profile"] == "b200-180gb" and rows[0]["fits"] == "True"


def test_plan_rejects_unknown_names(tmp_path):
    r = CliRunner().invoke(plan_cli, ["--model", "synthetic:llama-3.1-8b", "--variants", "int3", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "int4-wo" in r.output
    r = CliRunner().invoke(plan_cli, ["--model", "synthetic:llama-3.1-8b", "--profiles", "h100", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "h100-sxm-80gb" in r.output
    r = CliRunner().invoke(plan_cli, ["--model", "synthetic:nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown synthetic preset" in r.output


def test_calibration_is_labelled_and_applied_within_class(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    common = dict(model="synthetic:llama-3.1-8b", backend="pytorch", batch_size=1, prompt_tokens=128, new_tokens=128)
    append_jsonl(run / "records.jsonl", Record(variant="baseline", profile="h100-sxm-80gb", decode_tok_s=139.3, **common))
    append_jsonl(run / "records.jsonl", Record(variant="baseline", profile="not-a-profile", decode_tok_s=1.0, **common))
    append_jsonl(run / "records.jsonl", Record(variant="baseline", profile="h100-sxm-80gb", status="failed", **common))
    res = CliRunner().invoke(plan_cli, ["--model", "synthetic:llama-3.1-8b", "--context", "192",
                                        "--profiles", "h100-sxm-80gb,h200-sxm-141gb,apple-m4-max",
                                        "--format", "json", "--calibrate-with", str(run), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    rows = {r["profile"]: r for r in json.loads(res.stdout)}
    h100, h200, m4 = rows["h100-sxm-80gb"], rows["h200-sxm-141gb"], rows["apple-m4-max"]
    assert h100["basis"] == "calibrated" and "measured on h100-sxm-80gb" in h100["calibrated_from"]
    assert h100["efficiency_decode"] == pytest.approx(139.3 / h100["decode_tok_s"])   # same cell as the record
    assert h100["calibrated_decode_tok_s"] == pytest.approx(139.3)
    assert h200["basis"] == "calibrated" and "enterprise-class median of h100-sxm-80gb" in h200["calibrated_from"]
    assert h200["calibrated_decode_tok_s"] == pytest.approx(h200["decode_tok_s"] * h100["efficiency_decode"])
    assert m4["basis"] == "projected" and m4["calibrated_decode_tok_s"] is None    # edge class: not transferred
    assert "not among the loaded profiles" in res.stderr and "status failed" in res.stderr


def test_plan_modules_do_not_import_torch(tmp_path):
    # harness/models/__init__.py re-exports the model loader (torch); stand in an empty package for it so
    # this checks the imports of the profiles and plan modules themselves.
    root = Path(__file__).resolve().parents[1]
    code = ("import sys, types; pkg = types.ModuleType('harness.models'); "
            f"pkg.__path__ = [{str(root / 'harness' / 'models')!r}]; sys.modules['harness.models'] = pkg; "
            "import harness.cli.profiles, harness.plan.output, harness.plan.calibrate, harness.profiles; "
            "from click.testing import CliRunner; "
            "r = CliRunner().invoke(harness.cli.profiles.plan, ['--model', 'synthetic:tiny', '--format', 'json', "
            "'--profiles', 'h100-sxm-80gb', '--out', sys.argv[1]]); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], check=True, cwd=root)


def test_calibration_uses_one_backend():
    from harness.plan.calibrate import calibrate
    from harness.profiles import load_profiles
    from harness.records import Record

    profs = load_profiles()
    common = dict(model="synthetic:llama-3.1-8b", variant="baseline", profile="h100-sxm-80gb", batch_size=1,
                  prompt_tokens=128, new_tokens=64)
    recs = [Record(backend="pytorch", decode_tok_s=170.0, **common),
            Record(backend="transformers-generate", decode_tok_s=40.0, **common)]
    cal = calibrate(recs, profs)
    (eff,) = cal.measured
    assert eff.records == 1 and 0.75 < eff.decode < 0.9     # 170 / ~207 projected at the mean context
    assert any("transformers-generate" in s for s in cal.skipped)
