"""Hardware profiles: the shipped YAML files, their validation, and the `profiles` CLI."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from harness.cli.profiles import profiles as profiles_cli
from harness.profiles import FEATURES, Profile, ProfileError, default_profiles_dir, load_profile, load_profiles

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path("/work/shared/reference/hardware_specs.yaml")
H100_FILE = REPO / "profiles" / "enterprise" / "h100-sxm-80gb.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict[str, Profile]:
    return load_profiles()


def test_default_dir_is_the_repository_profiles_folder():
    assert default_profiles_dir() == REPO / "profiles"
    assert (REPO / "profiles" / "edge").is_dir() and (REPO / "profiles" / "enterprise").is_dir()


def test_all_shipped_profiles_load(shipped):
    assert len(shipped) >= 19
    for p in shipped.values():
        assert p.class_ in ("edge", "enterprise")
        assert Path(p.source_file).parent.name == p.class_
        assert Path(p.source_file).stem == p.id
        assert p.sources and all(s.startswith("http") for s in p.sources)
        assert set(p.features) == set(FEATURES)
        assert {"fp32", "fp16", "bf16", "fp8", "int8", "int4", "fp4"} <= set(p.peak_flops)
    # order: by class, then id (deterministic tables)
    keys = [(p.class_, p.id) for p in shipped.values()]
    assert keys == sorted(keys)


def test_h100_profile_is_the_lab_gpu(shipped):
    p = shipped["h100-sxm-80gb"]
    assert "NVIDIA H100 80GB HBM3" in p.nvml_names
    assert p.memory_bytes == 80_000_000_000
    assert p.bandwidth_bytes_per_s == 3.35e12
    assert p.peak_flops["bf16"] == pytest.approx(989.5e12)
    assert p.peak_flops["int4"] is None  # no int4 tensor rate on Hopper: null, not guessed
    assert p.peak("bf16", sparse=True) == pytest.approx(1979e12)
    assert p.power_w == 700 and p.compute_capability == "9.0"
    assert p.supports("fp8") is True and p.supports("sparse_2to4") is True
    assert "CUDAExecutionProvider" in p.onnxruntime_eps


def test_nulls_stay_null_and_features_are_tristate(shipped):
    a100, m4 = shipped["a100-sxm-80gb"], shipped["apple-m4"]
    assert a100.peak_flops["fp8"] is None and a100.supports("fp8") is False
    assert all(v is None for v in m4.peak_flops.values())
    assert m4.power_w is None and m4.supports("fp8") is None
    assert m4.peak("bf16", sparse=True) is None
    assert shipped["ryzen-ai-9-hx-370"].memory_bytes is None
    # derived estimates are carried but never become peaks
    orin = shipped["jetson-agx-orin-64gb"]
    assert "basis" in orin.derived_estimates and orin.peak_flops["fp16"] is None


def test_profiles_are_frozen(shipped):
    p = shipped["h100-sxm-80gb"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.memory_bytes = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.peak_flops["bf16"] = 1.0  # type: ignore[index]
    with pytest.raises(KeyError, match="unknown feature"):
        p.supports("fp6")


@pytest.mark.skipif(not REFERENCE.is_file(), reason="reference hardware_specs.yaml not present")
def test_numbers_match_the_reference_file(shipped):
    by_name = {p.name: p for p in shipped.values()}
    devices = yaml.safe_load(REFERENCE.read_text())["devices"]
    assert len(devices) == 19
    for d in devices:
        p = by_name[d["name"]]
        assert p.class_ == d["class"]
        assert p.memory_bytes == (None if d["memory_gb"] is None else round(d["memory_gb"] * 1e9))
        assert p.bandwidth_bytes_per_s == round(d["bandwidth_gbps"] * 1e9)
        for fmt, tf in d["tflops"].items():
            assert p.peak_flops[fmt] == (None if tf is None else pytest.approx(tf * 1e12)), (p.id, fmt)
        for fmt, tf in (d["tflops_sparse"] or {}).items():
            assert p.peak_sparse_flops[fmt] == pytest.approx(tf * 1e12), (p.id, fmt)
        assert p.power_w == d["tdp_w"]
        assert p.compute_capability == d["compute_capability"]
        assert p.supports("fp8") is d["fp8_supported"]
        assert p.supports("sparse_2to4") is d["sparse_2to4_supported"]
        assert list(p.sources) == d["sources"]
        assert p.notes, p.id


# ---- malformed profiles ---------------------------------------------------------------------------

def _base() -> dict:
    return yaml.safe_load(H100_FILE.read_text())


def _set(d, key, value):
    d[key] = value
    return d


def _nested(d, key, sub, value):
    d[key] = dict(d[key])
    d[key][sub] = value
    return d


def _drop(d, key, sub=None):
    if sub is None:
        del d[key]
    else:
        d[key] = {k: v for k, v in d[key].items() if k != sub}
    return d


MALFORMED = [
    # (case id, mutate(dict) -> document, expected key, problem fragment)
    ("missing-key", lambda d: _drop(d, "bandwidth_bytes_per_s"), "bandwidth_bytes_per_s", "missing required key"),
    ("unit-in-string", lambda d: _set(d, "bandwidth_bytes_per_s", "3.35 TB/s"), "bandwidth_bytes_per_s", "wrong unit or type"),
    ("unit-in-key", lambda d: _set(_drop(d, "bandwidth_bytes_per_s"), "bandwidth_gbps", 3350), "bandwidth_gbps",
     "did you mean 'bandwidth_bytes_per_s'"),
    ("gb-not-bytes", lambda d: _set(d, "bandwidth_bytes_per_s", 3350), "bandwidth_bytes_per_s", "looks like GB/s"),
    ("memory-in-gb", lambda d: _set(d, "memory_bytes", 80), "memory_bytes", "looks like GB"),
    ("memory-float", lambda d: _set(d, "memory_bytes", 80.5e9), "memory_bytes", "expected an integer"),
    ("negative-bandwidth", lambda d: _set(d, "bandwidth_bytes_per_s", -3_350_000_000_000), "bandwidth_bytes_per_s", "negative"),
    ("unknown-format", lambda d: _nested(d, "peak_dense_tflops", "fp64", 34), "peak_dense_tflops.fp64", "unknown format name"),
    ("unknown-sparse-format", lambda d: _nested(d, "peak_sparse_tflops", "int2", 1), "peak_sparse_tflops.int2", "unknown format name"),
    ("missing-format", lambda d: _drop(d, "peak_dense_tflops", "int4"), "peak_dense_tflops.int4", "missing key"),
    ("peak-as-text", lambda d: _nested(d, "peak_dense_tflops", "bf16", "989.5 TFLOPS"), "peak_dense_tflops.bf16", "wrong unit or type"),
    ("cc-as-number", lambda d: _set(d, "compute_capability", 9.0), "compute_capability", "quoted string"),
    ("bad-class", lambda d: _set(d, "class", "datacenter"), "class", "unknown class"),
    ("unknown-feature", lambda d: _nested(d, "features", "fp6", True), "features.fp6", "unknown feature"),
    ("feature-not-bool", lambda d: _nested(d, "features", "fp8", "yes"), "features.fp8", "true, false or null"),
    ("no-sources", lambda d: _set(d, "sources", []), "sources", "at least one source"),
    ("bad-ep", lambda d: _set(d, "onnxruntime_eps", ["CudaEP"]), "onnxruntime_eps[0]", "unknown ONNX Runtime execution provider"),
    ("zero-power", lambda d: _set(d, "power_w", 0), "power_w", "write null"),
    ("bool-as-number", lambda d: _set(d, "power_w", True), "power_w", "wrong unit or type"),
    ("bad-id", lambda d: _set(d, "id", "H100 SXM"), "id", "not a valid id"),
    ("npu-without-tops", lambda d: _set(d, "npu", {"precision": "INT8"}), "npu.tops", "missing key"),
    ("not-a-mapping", lambda d: [d], "<document>", "expected a mapping"),
]


@pytest.mark.parametrize("case,mutate,key,problem", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_profile_names_file_key_and_problem(tmp_path, case, mutate, key, problem):
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(mutate(copy.deepcopy(_base())), sort_keys=False))
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    e = exc.value
    assert e.path == str(path) and e.key == key and problem in e.problem
    assert str(path) in str(e) and key in str(e) and problem in str(e)


def test_bad_yaml_syntax_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nname: [unclosed\nclass: edge\n")
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert exc.value.key == "<yaml>" and "not valid YAML at line" in exc.value.problem
    assert str(path) in str(exc.value)


def test_float_exponent_without_sign_is_caught(tmp_path):
    # PyYAML reads `3.35e12` (no exponent sign) as a string: the error says so instead of passing it on.
    path = tmp_path / "exp.yaml"
    path.write_text(H100_FILE.read_text().replace("bandwidth_bytes_per_s: 3_350_000_000_000",
                                                  "bandwidth_bytes_per_s: 3.35e12"))
    with pytest.raises(ProfileError, match=r"bandwidth_bytes_per_s: wrong unit or type.*'3.35e12'"):
        load_profile(path)


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ProfileError, match="<document>: expected a mapping"):
        load_profiles(tmp_path)


def test_duplicate_id_names_both_files(tmp_path):
    (tmp_path / "a.yaml").write_text(H100_FILE.read_text())
    (tmp_path / "b.yaml").write_text(H100_FILE.read_text())
    with pytest.raises(ProfileError) as exc:
        load_profiles(tmp_path)
    assert exc.value.key == "id" and "duplicate id 'h100-sxm-80gb'" in exc.value.problem
    assert exc.value.path.endswith("b.yaml") and "a.yaml" in exc.value.problem


def test_class_must_match_its_folder(tmp_path):
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "h100.yaml").write_text(H100_FILE.read_text())
    with pytest.raises(ProfileError, match="class: class 'enterprise' but the file lives in the 'edge' folder"):
        load_profiles(tmp_path)


def test_missing_profiles_dir(tmp_path):
    with pytest.raises(ProfileError, match="no such profiles folder"):
        load_profiles(tmp_path / "nope")


def test_users_own_profiles_dir(tmp_path):
    d = _base()
    d.update(id="my-box", name="My box")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(d))
    profs = load_profiles(tmp_path)
    assert list(profs) == ["my-box"] and profs["my-box"].bandwidth_bytes_per_s == 3.35e12


# ---- CLI --------------------------------------------------------------------------------------------

def test_cli_profiles_list_table(shipped):
    res = CliRunner().invoke(profiles_cli, ["list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == ("| id | class | memory GB | bandwidth GB/s | bf16 TFLOPS | fp8 TFLOPS | int8 TOPS | power W |")
    assert "| h100-sxm-80gb | enterprise | 80 | 3,350.0 | 989.5 | 1,979.0 | 1,979.0 | 700 |" in lines
    assert "| a100-sxm-80gb | enterprise | 80 | 2,039.0 | 312.0 | - | 624.0 | 400 |" in lines
    assert sum(1 for line in lines if line.startswith("| ") and "|---" not in line) == len(shipped) + 1


def test_cli_profiles_list_json(shipped):
    res = CliRunner().invoke(profiles_cli, ["list", "--format", "json"])
    rows = json.loads(res.stdout)
    assert [r["id"] for r in rows] == list(shipped)
    assert rows[0]["peak_flops"]["fp32"] is None or isinstance(rows[0]["peak_flops"]["fp32"], float)


def test_cli_profiles_show():
    res = CliRunner().invoke(profiles_cli, ["show", "h100-sxm-80gb"])
    assert res.exit_code == 0, res.output
    assert "nvml names: NVIDIA H100 80GB HBM3" in res.output
    assert "bandwidth: 3,350.0 GB/s" in res.output
    assert "  - https://www.nvidia.com/en-us/data-center/h100/" in res.output
    assert "features: fp8 yes, int8 yes, int4_weight_kernels yes, sparse_2to4 yes" in res.output


def test_cli_profiles_show_unknown_id_lists_valid():
    res = CliRunner().invoke(profiles_cli, ["show", "h100"])
    assert res.exit_code == 2 and "unknown profile 'h100'" in res.output and "h100-sxm-80gb" in res.output


def test_cli_profiles_dir_option_reports_bad_file(tmp_path):
    (tmp_path / "bad.yaml").write_text(H100_FILE.read_text().replace("power_w: 700", "power_w: 700 W"))
    res = CliRunner().invoke(profiles_cli, ["list", "--profiles-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert f"{tmp_path / 'bad.yaml'}: power_w: wrong unit or type" in res.output
