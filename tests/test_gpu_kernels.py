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

    def measure(fmt, kernel, shapes, ms=gk.TIMED_M):
        measured.append((kernel, dict(shapes)))
        per_m = times[kernel]
        return {f"M={m}": (per_m(m) if callable(per_m) else per_m * m) for m in ms}
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
    assert times["cutlass"] == {"M=1": 40.0}                  # only the cell's M is timed
    measured.clear()
    kernel2, times2, source2 = gk.choose("int4-wo", _model(), ctx)
    assert (kernel2, times2) == (kernel, times) and source2.startswith("cached from an earlier run")
    assert measured == []                                    # the second process measures nothing


def test_choice_is_made_at_the_cells_batch_from_cached_times(monkeypatch, tmp_path):
    # tinygemm fastest at one row, GemLite from eight rows on (the shape of the H200's kernel table)
    measured = _fake_stack(monkeypatch, tmp_path, {"tinygemm": lambda m: 10.0 * m, "cutlass": lambda m: 50.0 + m,
                                                   "gemlite": lambda m: 12.0 + 2.0 * m})
    model = _model()
    assert gk.choose("int4-wo", model, ApplyContext("cuda", torch.bfloat16, decode_rows=1))[0] == "tinygemm"
    measured.clear()
    k8, times, source = gk.choose("int4-wo", model, ApplyContext("cuda", torch.bfloat16, decode_rows=8))
    assert k8 == "gemlite" and source == "measured in this run" and len(measured) == 3   # a new M: timed
    assert times["tinygemm"] == {"M=1": 10.0, "M=8": 80.0}   # the earlier M kept beside the new one
    measured.clear()
    k8b, _, source8b = gk.choose("int4-wo", model, ApplyContext("cuda", torch.bfloat16, decode_rows=8))
    assert (k8b, measured) == ("gemlite", []) and source8b.startswith("cached")
    k1, _, _ = gk.choose("int4-wo", model, ApplyContext("cuda", torch.bfloat16, decode_rows=1))
    assert k1 == "tinygemm" and measured == []               # both batches now come from the cache


def test_pipeline_prepares_again_when_the_batch_changes_the_kernel(monkeypatch):
    """int4-wo on CUDA: one prepared model per batch (its kernel is chosen for that batch); on CPU, and
    for variants with a fixed kernel, one per group."""
    from types import SimpleNamespace

    from harness.backends.base import CellSkip
    from harness.pipeline import cell as pipeline_cell
    from harness.sweep import Cell

    prepared, closed = [], []

    class Prepared:
        def __init__(self, rows, device_type):
            self.device_type, self.device, self.dtype, self.kernel = device_type, device_type, "bfloat16", "k"
            self.rows = rows

        def check_cell(self, cell):
            raise CellSkip("unsupported", f"prepared for {self.rows} rows")

        def close(self):
            closed.append(self.rows)

    def backend_for(device_type):
        class Backend:
            def prepare(self, model_spec, variant, settings, profile, cache):
                prepared.append((variant.name, variant.decode_rows))
                return Prepared(variant.decode_rows, device_type)
        return lambda name: Backend()

    ctx = SimpleNamespace(profile=SimpleNamespace(id="p"), run_id="r", provenance={})
    settings = SimpleNamespace(meters=False)
    for device_type, variant, expect in (("cuda", "int4-wo", [1, 8]), ("cpu", "int4-wo", [1]),
                                         ("cuda", "int8-wo", [1])):
        prepared.clear()
        monkeypatch.setattr(pipeline_cell, "get_backend", backend_for(device_type))
        g = pipeline_cell.GroupPipeline("m", variant, "pytorch", settings, ctx, {})
        reasons = [g.run(Cell(i, "m", variant, "pytorch", b, 16, 4)).reason for i, b in enumerate((1, 1, 8, 8))]
        assert [r for _, r in prepared] == expect, (device_type, variant)
        assert reasons[-1] == f"prepared for {expect[-1]} rows"


def test_gemlite_dequantize_inverts_gemlite_packing():
    """The unpacking of the dequantized prefill path against GemLite's documented packing (its
    pack_weights_over_cols_torch: code j of a row goes to int32 column j // 8, bits 4 * (j % 8), and the
    packed matrix is stored transposed), with fma-mode zeros (W = q * s + z, z = -zero * s) and the
    plain mode ((q - zero) * s)."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    n, k, g = 24, 256, 128
    q = torch.randint(0, 16, (n, k), dtype=torch.int32)
    packed = torch.zeros(n, k // 8, dtype=torch.int32)
    for j in range(k):
        packed[:, j // 8] |= q[:, j] << (4 * (j % 8))
    scale = torch.rand(n, k // g) + 0.5
    zero = torch.randint(0, 16, (n, k // g)).float()
    want = ((q.view(n, k // g, g).float() - zero[..., None]) * scale[..., None]).view(n, k)
    for mode, zeros in ((4, -zero * scale), (3, zero)):
        m = SimpleNamespace(W_q=packed.t().contiguous(), scales=scale.t().contiguous(), zeros=zeros.t().contiguous(),
                            W_group_mode=mode, channel_scale_mode=0, elements_per_sample=8, W_nbits=4,
                            in_features=k, out_features=n)
        got = gk.gemlite_dequantized(m, torch.float32)
        assert torch.allclose(got, want, atol=1e-5), mode
    fp8 = SimpleNamespace(W_q=torch.randn(k, n), scales=torch.rand(1, n), zeros=torch.tensor([[]]), W_group_mode=0,
                          channel_scale_mode=1, elements_per_sample=1, W_nbits=8, in_features=k, out_features=n)
    assert torch.allclose(gk.gemlite_dequantized(fp8, torch.float32), fp8.W_q.t() * fp8.scales.t(), atol=1e-6)
    # A16W8_FP8's default (gemlite/helper.py, A16W8.from_weights, post_scale=False): fp8 codes stored
    # transposed, scales (1, N), no zeros, W_group_mode 2 with channel_scale_mode 0 (the scale inside the GEMM)
    codes = (torch.randn(n, k) * 50).to(torch.float8_e4m3fn)
    pre = SimpleNamespace(W_q=codes.t(), scales=scale[:, :1].t().contiguous(), zeros=None, W_group_mode=2,
                          channel_scale_mode=0, elements_per_sample=1, W_nbits=8, in_features=k, out_features=n)
    assert torch.equal(gk.gemlite_dequantized(pre, torch.float32), codes.float() * scale[:, :1])
    grouped = SimpleNamespace(**{**vars(pre), "scales": scale.t().contiguous()})   # symmetric, per group of K
    want = (codes.float().view(n, k // g, g) * scale[..., None]).view(n, k)
    assert torch.equal(gk.gemlite_dequantized(grouped, torch.float32), want)
    for bad in ({"channel_scale_mode": 3}, {"W_group_mode": 1}):
        with pytest.raises(ValueError, match="GemLite layout not known here"):
            gk.gemlite_dequantized(SimpleNamespace(**{**vars(fp8), **bad}))


def test_whole_model_kernel_counts_every_linear():
    model = _model()
    k = gk.whole_model_kernel("int4-wo[tinygemm]: what -> Tensor[torch.float32] x1", model)
    assert k == "int4-wo[tinygemm]: what -> Tensor[torch.float32] x3"
    assert gk.whole_model_kernel("no summary", model) == "no summary"


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


def _cuda_mlp(name):
    """(spec, a bf16 1024 -> 2048 -> 1024 MLP on the GPU), or the test skips saying why it cannot run."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = parse_variant(name)
    why = spec.unsupported_reason("cuda", torch.cuda.get_device_capability())
    if why:
        pytest.skip(why)
    torch.manual_seed(0)
    return spec, nn.Sequential(nn.Linear(1024, 2048, bias=False), nn.Linear(2048, 1024, bias=False)).cuda().bfloat16()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["int4-wo[tinygemm]", "int4-wo[cutlass]", "int4-wo[gemlite]", "fp8-wo[gemlite]",
                                  "fp8-wo[torchao]"])
def test_each_kernel_runs_close_to_bf16_and_names_itself(name):
    spec, model = _cuda_mlp(name)
    x = torch.randn(4, 1024, device="cuda", dtype=torch.bfloat16)
    ref = model(x).float()
    r = spec.apply(model, spec.context("cuda", torch.bfloat16))
    assert r.layers_changed == 2 and name.split("[")[1].rstrip("]") in r.kernel
    got = model(x).float()
    assert ((got - ref).norm() / ref.norm()).item() < 0.15


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["int4-wo[gemlite]", "fp8-wo[gemlite]"])
def test_gemlite_prefill_is_dequantized_and_agrees_with_decode(name):
    """Rows above PREFILL_MIN_ROWS go through dequantize + cuBLAS, rows below through GemLite's kernels:
    the same weights, so the same outputs; the record's kernel names both phases."""
    spec, model = _cuda_mlp(name)
    r = spec.apply(model, spec.context("cuda", torch.bfloat16))
    assert isinstance(model[0], gk.DequantPrefill), r.kernel
    assert "prefill (calls over 256 rows) x2" in r.kernel and "cuBLAS" in r.kernel
    x = torch.randn(gk.PREFILL_MIN_ROWS * 2, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        big = model(x).float()                                         # dequantized path
        small = torch.cat([model(c) for c in x.split(gk.PREFILL_MIN_ROWS // 2)]).float()   # GemLite kernels
    assert ((big - small).norm() / small.norm()).item() < 0.01


@pytest.mark.gpu
def test_the_kernel_bench_times_gemlites_dequantized_path_from_256_rows():
    """bench/kernels_gpu.py's "dequantized prefill: ..." kernels run the harness's DequantPrefill path (the
    GemLite weights unpacked + cuBLAS, whatever the rows), agree with GemLite's own kernels, and are timed
    only from GEMLITE_PREFILL_MIN_ROWS rows up."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "kernels_gpu.py"
    spec = importlib.util.spec_from_file_location("kernels_gpu", path)
    kg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kg)
    from harness.plan.kernel_names import DEQUANT_PREFIX

    names = [k for k in kg.kernels() if k.startswith(DEQUANT_PREFIX)]
    assert len(names) == 2 and kg.min_rows(names[0]) == gk.PREFILL_MIN_ROWS and kg.min_rows("bf16 cuBLAS") == 1
    torch.manual_seed(0)
    lin = nn.Linear(1024, 2048, bias=False, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(gk.PREFILL_MIN_ROWS, 1024, device="cuda", dtype=torch.bfloat16)
    for name in names:
        mod = kg.kernels()[name](lin)
        assert isinstance(mod, gk.DequantPrefill) and mod.min_rows == 0
        with torch.inference_mode():
            got, own = mod(x).float(), mod.inner(x).float()
        assert ((got - own).norm() / own.norm()).item() < 0.01, name
        assert kg.time_call(mod, x, 5) > 0 and kg.weight_bytes(mod) < 2 * 1024 * 2048


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


def test_cutlass_int4_fake_kernel_has_the_kernels_output_shape():
    """mslk's bf16 x int4 GEMM allocates bf16 [rows of X, rows of W]: the fake the harness registers says so
    (meta tensors: no GPU)."""
    x = torch.empty(2, 3, 4096, device="meta", dtype=torch.bfloat16)
    w = torch.empty(14336, 2048, device="meta", dtype=torch.int8)
    s = torch.empty(32, 14336, device="meta", dtype=torch.bfloat16)
    y = gk.bf16i4bf16_shuffled_shape(x, w, s, s)
    assert y.shape == (6, 14336) and y.dtype == torch.bfloat16 and y.device.type == "meta"
    assert "not registered" in gk.register_mslk_fake() or torch.cuda.is_available()   # no mslk on CPU CI


@pytest.mark.gpu
def test_cutlass_int4_compiles_fullgraph_and_matches_eager():
    """With the fake kernel, torch.compile traces torchao's preshuffled linear (mslk CUTLASS) in one graph,
    so the engine's compiled decode covers int4-wo[cutlass] cells too."""
    spec, model = _cuda_mlp("int4-wo[cutlass]")
    spec.apply(model, spec.context("cuda", torch.bfloat16))
    assert "registered" in gk.register_mslk_fake() or "own Meta" in gk.register_mslk_fake()
    x = torch.randn(4, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        eager = model(x).float()
        compiled = torch.compile(model, fullgraph=True)(x).float()
    assert ((compiled - eager).norm() / eager.norm()).item() < 0.01
