import pytest

from harness.runner import SweepAxes, expand, group_cells


def test_expansion_order_is_deterministic_and_groups_models():
    axes = SweepAxes(("m1", "m2"), ("baseline", "int8-wo"), (1, 8), (128,), (16, 32))
    cells = expand(axes)
    assert len(cells) == 2 * 2 * 2 * 1 * 2
    assert [c.index for c in cells] == list(range(len(cells)))
    keys = [(c.model, c.variant, c.batch_size, c.prompt_tokens, c.new_tokens) for c in cells]
    assert keys[:4] == [("m1", "baseline", 1, 128, 16), ("m1", "baseline", 1, 128, 32),
                        ("m1", "baseline", 8, 128, 16), ("m1", "baseline", 8, 128, 32)]
    assert keys == [(c.model, c.variant, c.batch_size, c.prompt_tokens, c.new_tokens) for c in expand(axes)]
    # each model's cells are contiguous: a model is loaded once
    models = [c.model for c in cells]
    assert models == sorted(models, key=["m1", "m2"].index)
    groups = group_cells(cells)
    assert [(m, v) for m, v, _, _ in groups] == [("m1", "baseline"), ("m1", "int8-wo"), ("m2", "baseline"), ("m2", "int8-wo")]


def test_backend_axis_groups_and_validates():
    axes = SweepAxes(("m",), ("baseline",), (1,), (8,), (4,), ("pytorch", "transformers-generate"))
    cells = expand(axes)
    assert [c.backend for c in cells] == ["pytorch", "transformers-generate"]
    assert len(group_cells(cells)) == 2
    with pytest.raises(ValueError, match="unknown backend"):
        SweepAxes(("m",), ("baseline",), (1,), (8,), (4,), ("vllm",))


def test_axes_must_be_non_empty_and_positive():
    with pytest.raises(ValueError, match="variants"):
        SweepAxes(("m",), (), (1,), (1,), (1,))
    with pytest.raises(ValueError, match="batch_sizes"):
        SweepAxes(("m",), ("baseline",), (0,), (1,), (1,))
