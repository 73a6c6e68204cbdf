import pytest
import torch
from torch import nn

from harness.variants import get_variant, policy_for
from harness.variants.calibration import collect_input_stats
from harness.variants.registry import ApplyContext
from harness.variants.sparse import semi_structured_backend
from harness.variants.wanda import (apply_24_mask_dense, magnitude_24_mask, nm_mask, select_linears,
                                    unstructured_mask, wanda_24_mask)

GPU_24 = ("sparse-2:4", "sparse-2:4-wanda", "sparse-2:4+fp8-dq", "sparse-2:4+int8-dq")


def _groups(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], -1, 4)


def _calib(n=2, t=16, vocab=8192):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(1))


# -- masks -----------------------------------------------------------------------------------------
def test_magnitude_24_mask_is_exactly_2_of_4_and_keeps_the_largest():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    mask = magnitude_24_mask(w)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    assert (_groups(mask).sum(-1) == 2).all()
    a = _groups(w.abs())
    kept_min = a.masked_fill(~_groups(mask), float("inf")).amin(-1)
    pruned_max = a.masked_fill(_groups(mask), -1.0).amax(-1)
    assert (kept_min >= pruned_max).all()
    row = torch.tensor([[0.1, -3.0, 0.2, 2.0, 5.0, 0.0, -0.5, 0.4]])
    assert magnitude_24_mask(row).tolist() == [[False, True, False, True, True, False, True, False]]


def test_2of4_needs_inputs_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        nm_mask(torch.randn(4, 6))


def test_wanda_picks_differently_when_one_input_channel_is_loud():
    w = torch.tensor([[1.0, 0.9, 0.1, 0.2],
                      [0.3, 1.0, 0.2, 0.8]])
    norm = torch.tensor([1.0, 1.0, 100.0, 1.0])  # channel 2 carries large activations
    mag, wan = magnitude_24_mask(w), wanda_24_mask(w, norm)
    assert mag.tolist() == [[True, True, False, False], [False, True, False, True]]
    assert wan.tolist() == [[True, False, True, False], [False, True, True, False]]
    assert (_groups(wan).sum(-1) == 2).all()
    # equal norms reduce Wanda to magnitude
    assert torch.equal(wanda_24_mask(w, torch.ones(4)), mag)
    with pytest.raises(ValueError, match="channels"):
        wanda_24_mask(w, torch.ones(8))


def test_unstructured_mask_count_is_exact_even_with_ties():
    w = torch.randint(-3, 4, (64, 48), generator=torch.Generator().manual_seed(0)).float()  # 7 values
    for per in ("row", "layer"):
        mask = unstructured_mask(w, 0.5, per)
        assert int((~mask).sum()) == w.numel() // 2, per
    rows = unstructured_mask(w, 0.5, "row")
    assert ((~rows).sum(1) == 24).all()
    for r in range(w.shape[0]):
        assert w[r].abs()[rows[r]].min() >= w[r].abs()[~rows[r]].max()
    layer = unstructured_mask(w, 0.5, "layer")
    assert w.abs()[layer].min() >= w.abs()[~layer].max()
    skew = torch.cat([torch.full((1, 8), 10.0), torch.full((1, 8), 0.1)])  # one loud row
    assert unstructured_mask(skew, 0.5, "layer")[0].all() and not unstructured_mask(skew, 0.5, "row")[0].all()
    odd = unstructured_mask(torch.randn(3, 5), 0.5, "layer")  # 15 weights: 7.5 rounds to 8 pruned
    assert int((~odd).sum()) == 8
    assert unstructured_mask(w, 0.0).all()


def test_unstructured_per_row_mask_does_not_change_when_layers_are_fused():
    q, k = torch.randn(8, 16), torch.randn(4, 16) * 5
    fused = unstructured_mask(torch.cat([q, k]), 0.5)
    assert torch.equal(fused, torch.cat([unstructured_mask(q, 0.5), unstructured_mask(k, 0.5)]))
    assert torch.equal(magnitude_24_mask(torch.cat([q, k])), torch.cat([magnitude_24_mask(q), magnitude_24_mask(k)]))
    assert get_variant("sparse-2:4-wanda").fusable is False and get_variant("sparse-2:4").fusable is True


# -- calibration statistics --------------------------------------------------------------------------
def test_collect_input_stats_per_channel_norms_on_a_hand_made_layer():
    first, second = nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)
    model = nn.Sequential(first, nn.ReLU(), second)
    x = torch.tensor([[[1.0, -2.0, 0.0, 3.0], [2.0, 0.0, 0.0, -4.0]],
                      [[-1.0, 2.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])   # (sequences, tokens, channels)
    stats = collect_input_stats(model, x, lambda m, _fqn: isinstance(m, nn.Linear), sample_tokens=3, batch_rows=1)
    s = stats["0"]
    assert s.n_tokens == 4
    assert torch.allclose(s.abs_mean, torch.tensor([1.0, 1.0, 1.25, 1.75]))
    assert torch.allclose(s.l2_norm, torch.tensor([6.0, 8.0, 25.0, 25.0]).sqrt())
    assert torch.equal(s.sample, x.reshape(-1, 4)[:3])
    relu_out = torch.relu(first(x)).reshape(-1, 3)
    assert torch.allclose(stats["2"].l2_norm, relu_out.norm(dim=0), atol=1e-6)
    assert stats["2"].sample.shape == (3, 3)
    early = collect_input_stats(model, x, lambda m, _fqn: isinstance(m, nn.Linear), stop_after=first)
    assert set(early) == {"0"} and early["0"].sample is None


# -- variants on the tiny model ----------------------------------------------------------------------
def _cpu(tiny_loaded):
    return tiny_loaded.instantiate(torch.device("cpu"), torch.float32)


def _zero_fraction(t: torch.Tensor) -> float:
    return (t == 0).float().mean().item()


def test_unstructured_50_prunes_every_linear_and_spares_the_embedding(tiny_loaded):
    base, m = _cpu(tiny_loaded), _cpu(tiny_loaded)
    res = get_variant("unstructured-50").apply(m, ApplyContext("cpu", torch.float32))
    assert res.kernel.startswith("dense aten.linear, 50% zeros")
    n_lin = sum(isinstance(x, nn.Linear) for x in m.modules())
    assert f"{n_lin}/{n_lin} linears" in res.kernel
    for fqn, mod in m.named_modules():
        if isinstance(mod, nn.Linear):
            assert int((mod.weight == 0).sum()) == pytest.approx(mod.weight.numel() / 2, abs=1), fqn
    assert torch.equal(m.model.embed_tokens.weight, base.model.embed_tokens.weight)
    ids = _calib(1, 8)
    out, ref = m(ids).logits, base(ids).logits
    assert torch.isfinite(out).all() and not torch.allclose(out, ref, atol=1e-3)


def test_policy_keeps_layers_unpruned(tiny_loaded):
    m = _cpu(tiny_loaded)
    ctx = ApplyContext("cpu", torch.float32, policy=policy_for("unstructured-50@keep-attn", 4))
    res = get_variant("unstructured-50").apply(m, ctx)
    assert "kept by the policy" in res.kernel
    assert _zero_fraction(m.model.layers[0].self_attn.q_proj.weight) == 0.0
    assert _zero_fraction(m.model.layers[0].mlp.up_proj.weight) == pytest.approx(0.5, abs=1e-3)

    m = _cpu(tiny_loaded)
    ctx = ApplyContext("cpu", torch.float32, calibration_ids=_calib(), policy=policy_for("sparse-2:4-wanda@keep-ends", 4))
    apply_24_mask_dense(m, ctx, "wanda")
    assert _zero_fraction(m.model.layers[0].mlp.down_proj.weight) == 0.0
    assert _zero_fraction(m.model.layers[3].self_attn.o_proj.weight) == 0.0
    assert _zero_fraction(m.lm_head.weight) == 0.0
    assert _zero_fraction(m.model.layers[1].mlp.down_proj.weight) == pytest.approx(0.5, abs=1e-3)


def test_tied_lm_head_is_skipped_and_the_embedding_left_alone(tiny_loaded):
    m = _cpu(tiny_loaded)
    m.lm_head.weight = m.model.embed_tokens.weight
    emb = m.model.embed_tokens.weight.detach().clone()
    plan = select_linears(m, ApplyContext("cpu", torch.float32))
    assert plan.dense == {"lm_head": "tied to the embedding, skipped"}
    res = get_variant("unstructured-50").apply(m, ApplyContext("cpu", torch.float32))
    assert "lm_head: tied to the embedding" in res.kernel
    assert torch.equal(m.model.embed_tokens.weight, emb)


def test_dense_24_masks_magnitude_and_wanda_on_tiny(tiny_loaded):
    mag, wan = _cpu(tiny_loaded), _cpu(tiny_loaded)
    ctx = ApplyContext("cpu", torch.float32, calibration_ids=_calib())
    r_mag = apply_24_mask_dense(mag, ctx, "magnitude")
    r_wan = apply_24_mask_dense(wan, ctx, "wanda")
    assert r_mag.calibration_s is None and r_wan.calibration_s > 0
    assert "2:4 zeros (wanda mask)" in r_wan.kernel
    differs = 0
    for (fqn, a), (_, b) in zip(mag.named_modules(), wan.named_modules()):
        if isinstance(a, nn.Linear):
            for w in (a.weight, b.weight):
                assert (_groups(w != 0).sum(-1) == 2).all(), fqn
            differs += not torch.equal(a.weight != 0, b.weight != 0)
    assert differs == sum(isinstance(x, nn.Linear) for x in wan.modules())
    assert torch.isfinite(wan(_calib(1, 8)).logits).all()
    with pytest.raises(ValueError, match="calibration"):
        apply_24_mask_dense(nn.Sequential(nn.Linear(8, 8)), ApplyContext("cpu", torch.float32), "wanda")


def test_wanda_without_decoder_blocks_calibrates_in_one_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    res = apply_24_mask_dense(model, ApplyContext("cpu", torch.float32, calibration_ids=_calib(2, 8, 50)), "wanda")
    assert "2/2 linears" in res.kernel
    assert (_groups(model[3].weight != 0).sum(-1) == 2).all()


# -- availability ------------------------------------------------------------------------------------
def test_24_variants_are_unsupported_on_cpu_with_the_reason():
    for name in GPU_24:
        why = get_variant(name).unsupported_reason("cpu", None)
        assert why and "no kernel on cpu" in why and "CUDA-only" in why, name
    assert get_variant("unstructured-50").unsupported_reason("cpu", None) is None
    assert "compute capability >= 8.0" in get_variant("sparse-2:4").unsupported_reason("cuda", (7, 5))
    assert "compute capability >= 9.0" in get_variant("sparse-2:4+fp8-dq").unsupported_reason("cuda", (8, 9))

    class NoSparse:
        id = "no-sparse"

        def supports(self, feature):
            return feature != "sparse_2to4"
    assert "sparse_2to4" in get_variant("sparse-2:4").unsupported_reason("cuda", (9, 0), NoSparse())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the probes on a torch without CUDA")
def test_probes_report_missing_kernels_instead_of_failing():
    for name in GPU_24:
        why = get_variant(name).unsupported_reason("cuda", (9, 0))
        assert why and why.startswith(f"{name}: "), name
    assert "cuSPARSELt" in get_variant("sparse-2:4").unsupported_reason("cuda", (9, 0))
    assert "rowwise_scaled_linear_sparse_cutlass_f8f8" in get_variant("sparse-2:4+fp8-dq").unsupported_reason("cuda", (9, 0))
    assert semi_structured_backend((8, 0))[1] == "torch CUTLASS" or torch.backends.cusparselt.is_available()


# -- GPU: the real kernels (auto-skipped without CUDA) -------------------------------------------------
def _gpu_pair(tiny_loaded):
    from harness.backends.pytorch.device import compute_dtype

    dev = torch.device("cuda")
    dtype = compute_dtype(dev)
    return tiny_loaded.instantiate(dev, dtype), tiny_loaded.instantiate(dev, dtype), dtype


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _check_gpu_variant(tiny_loaded, name, method, type_name, tol):
    v = get_variant(name)
    why = v.unsupported_reason("cuda", torch.cuda.get_device_capability())
    if why:
        pytest.skip(why)
    sparse, ref, dtype = _gpu_pair(tiny_loaded)
    ctx = ApplyContext("cuda", dtype, calibration_ids=_calib().cuda())
    res = v.apply(sparse, ctx)
    apply_24_mask_dense(ref, ctx, method)
    n_lin = sum(isinstance(x, nn.Linear) for x in sparse.modules())
    assert f"{n_lin}/{n_lin} linears" in res.kernel
    types = {type(m.weight).__name__ for m in sparse.modules() if isinstance(m, nn.Linear)}
    assert all(type_name in t for t in types), types
    for ids in (_calib(2, 16).cuda(), _calib(1, 1).cuda()):  # prefill-shaped and decode-shaped
        with torch.no_grad():
            assert _rel(sparse(ids).logits, ref(ids).logits) < tol
    return res


@pytest.mark.gpu
def test_gpu_sparse_24_runs_semi_structured_kernels(tiny_loaded):
    res = _check_gpu_variant(tiny_loaded, "sparse-2:4", "magnitude", "SparseSemiStructuredTensor", 0.02)
    assert "2:4 via torch.sparse" in res.kernel and "magnitude" in res.kernel
    if torch.backends.cusparselt.is_available():
        assert "cuSPARSELt" in res.kernel and "CUSPARSELT" in res.kernel


@pytest.mark.gpu
def test_gpu_sparse_24_wanda_reports_calibration(tiny_loaded):
    res = _check_gpu_variant(tiny_loaded, "sparse-2:4-wanda", "wanda", "SparseSemiStructuredTensor", 0.02)
    assert res.calibration_s is not None and res.calibration_s > 0 and "wanda" in res.kernel


@pytest.mark.gpu
def test_gpu_sparse_24_fp8(tiny_loaded):
    res = _check_gpu_variant(tiny_loaded, "sparse-2:4+fp8-dq", "magnitude", "Float8Sparse2x4", 0.15)
    assert "rowwise_scaled_linear_sparse_cutlass_f8f8" in res.kernel


@pytest.mark.gpu
def test_gpu_sparse_24_int8(tiny_loaded):
    res = _check_gpu_variant(tiny_loaded, "sparse-2:4+int8-dq", "magnitude", "Int8Sparse2x4CuSparseLt", 0.1)
    assert "_cslt_sparse_mm" in res.kernel


@pytest.mark.gpu
@pytest.mark.parametrize("name,off_shape_out", [("sparse-2:4", 40), ("sparse-2:4+fp8-dq", 80), ("sparse-2:4+int8-dq", 48)])
def test_gpu_layers_off_the_kernel_shapes_stay_dense(name, off_shape_out):
    why = get_variant(name).unsupported_reason("cuda", torch.cuda.get_device_capability())
    if why:
        pytest.skip(why)
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, off_shape_out)).cuda().to(torch.bfloat16)
    model.requires_grad_(False)
    res = get_variant(name).apply(model, ApplyContext("cuda", torch.bfloat16))
    assert "1/2 linears; dense: 1" in res.kernel
    assert type(model[1].weight) is nn.Parameter and _zero_fraction(model[1].weight) == 0.0
    assert type(model[0].weight) is not nn.Parameter
    assert torch.isfinite(model(torch.randn(1, 5, 256, device="cuda", dtype=torch.bfloat16))).all()


@pytest.mark.gpu
def test_gpu_unstructured_50_runs_on_cuda(tiny_loaded):
    m, base, dtype = _gpu_pair(tiny_loaded)
    get_variant("unstructured-50").apply(m, ApplyContext("cuda", dtype))
    assert _zero_fraction(m.model.layers[0].mlp.up_proj.weight) == pytest.approx(0.5, abs=1e-3)
    with torch.no_grad():
        assert torch.isfinite(m(_calib(1, 8).cuda()).logits).all()
