"""The kernel axis of the CUDA weight-only formats (harness.variants.gpu_kernels): explicit kernel names,
the measured choice and its cache, tinygemm's row chunking. The choice logic runs here with timings
supplied by the test; the kernels themselves run in the GPU tests at the end (marked gpu)."""
import pytest
import torch
from torch import nn

from harness.variants import gpu_kernels as gk
from harness.variants.registry import REGISTRY, ApplyContext
from harness.variants.spec import parse_variant, parse_variants


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512, bias=False), nn.Linear(512, 256, bias=False),
                         nn.Linear(256, 512, bias=False))


def test_explicit_kernels_parse_but_stay_out_of_all_and_need_cuda():
    names = [v.name for v in parse_variants("all")]
    assert "int4-wo" in names and not any("[" in n for n in names)
    spec = parse_variant("int4-wo[cutlass]@keep-attn")
    assert spec.base == "int4-wo[cutlass]" and spec.entry.kernel_of == "int4-wo"
    assert spec.layout == REGISTRY["int4-wo"].layout
    why = spec.unsupported_reason("cpu", None)
    assert why and "no kernel on cpu" in why


def test_row_chunking_gives_the_unchunked_result(monkeypatch):
    monkeypatch.setattr(gk, "TINYGEMM_MAX_OUTPUT", 512 * 7)   # 7 rows per call for N = 512
    lin = nn.Linear(64, 512)
    wrapped = gk.RowChunked(lin, 512, 64)
    assert wrapped.max_rows == 7
    x = torch.randn(3, 10, 64)                               # 30 rows: 5 calls
    calls = []
    lin.register_forward_hook(lambda m, i, o: calls.append(i[0].numel() // 64))
    assert torch.allclose(wrapped(x), lin(x), atol=1e-5) and calls[:5] == [7, 7, 7, 7, 2]
    calls.clear()
    wrapped(torch.randn(1, 5, 64))                           # under the limit: one call, no copy
    assert calls == [5]


def _fake_stack(monkeypatch, tmp_path, times, unavailable=()):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gk, "gpu_name", lambda: "Fake GPU")
    monkeypatch.setattr(gk, "probe", lambda fmt, k, dev: f"{k} is missing" if k in unavailable else None)
    measured = []

    def measure(fmt, kernel, shapes):
        measured.append((kernel, dict(shapes)))
        return {f"M={m}": times[kernel] * m for m in gk.TIMED_M}
    monkeypatch.setattr(gk, "measure", measure)
    return measured


def test_choice_is_the_fastest_at_batch_1_and_is_cached(monkeypatch, tmp_path):
    measured = _fake_stack(monkeypatch, tmp_path, {"tinygemm": 30.0, "cutlass": 40.0, "gemlite": 20.0})
    ctx = ApplyContext("cuda", torch.bfloat16)
    kernel, times, source = gk.choose("int4-wo", _model(), ctx)
    assert kernel == "gemlite" and source == "measured in this run"
    # one timing per kernel, over the model's distinct shapes with their counts
    assert [k for k, _ in measured] == ["tinygemm", "cutlass", "gemlite"]
    assert measured[0][1] == {(512, 256): 2, (256, 512): 1}
    assert times["cutlass"] == {"M=1": 40.0, "M=8": 320.0, "M=32": 1280.0}
    measured.clear()
    kernel2, times2, source2 = gk.choose("int4-wo", _model(), ctx)
    assert (kernel2, times2) == (kernel, times) and source2.startswith("cached from an earlier run")
    assert measured == []                                    # the second process measures nothing


def test_unavailable_kernels_are_listed_not_chosen(monkeypatch, tmp_path):
    _fake_stack(monkeypatch, tmp_path, {"tinygemm": 30.0, "cutlass": 1.0, "gemlite": 20.0},
                unavailable=("cutlass",))
    kernel, times, _ = gk.choose("int4-wo", _model(), ApplyContext("cuda", torch.bfloat16))
    assert kernel == "gemlite" and times["cutlass"] == "cutlass is missing"


def test_no_kernel_at_all_is_an_error_naming_each_reason(monkeypatch, tmp_path):
    _fake_stack(monkeypatch, tmp_path, {}, unavailable=("torchao", "gemlite"))
    with pytest.raises(RuntimeError, match="no fp8-wo kernel runs here: torchao is missing; gemlite is missing"):
        gk.choose("fp8-wo", _model(), ApplyContext("cuda", torch.bfloat16))


def test_policy_kept_linears_are_not_in_the_measured_shapes(monkeypatch, tmp_path):
    measured = _fake_stack(monkeypatch, tmp_path, {"tinygemm": 3.0, "cutlass": 4.0, "gemlite": 2.0})
    ctx = ApplyContext("cuda", torch.bfloat16)
    model = _model()
    only_first = lambda m, fqn: isinstance(m, nn.Linear) and fqn == "1"  # noqa: E731
    monkeypatch.setattr(ApplyContext, "linear_filter", lambda self, m, fqn: only_first(m, fqn))
    gk.choose("int4-wo", model, ctx)
    assert measured[0][1] == {(256, 512): 1}


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["int4-wo[tinygemm]", "int4-wo[cutlass]", "int4-wo[gemlite]", "fp8-wo[gemlite]",
                                  "fp8-wo[torchao]"])
def test_each_kernel_runs_close_to_bf16_and_names_itself(name):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = parse_variant(name)
    why = spec.unsupported_reason("cuda", torch.cuda.get_device_capability())
    if why:
        pytest.skip(why)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 2048, bias=False), nn.Linear(2048, 1024, bias=False)).cuda().bfloat16()
    x = torch.randn(4, 1024, device="cuda", dtype=torch.bfloat16)
    ref = model(x).float()
    r = spec.apply(model, spec.context("cuda", torch.bfloat16))
    assert r.layers_changed == 2 and name.split("[")[1].rstrip("]") in r.kernel
    got = model(x).float()
    assert ((got - ref).norm() / ref.norm()).item() < 0.15


@pytest.mark.gpu
def test_tinygemm_beyond_its_output_index_limit_runs_in_chunks():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = parse_variant("int4-wo[tinygemm]")
    if spec.unsupported_reason("cuda", torch.cuda.get_device_capability()):
        pytest.skip("no tinygemm")
    model = nn.Sequential(nn.Linear(256, 37888, bias=False)).cuda().bfloat16()
    spec.apply(model, spec.context("cuda", torch.bfloat16))
    assert isinstance(model[0], gk.RowChunked)
    x = torch.randn(65536, 256, device="cuda", dtype=torch.bfloat16)   # 65,536 x 37,888 > 2**31 outputs
    y = model(x)
    torch.cuda.synchronize()
    assert y.shape == (65536, 37888) and torch.isfinite(y[-1]).all()
