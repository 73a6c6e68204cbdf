import pytest

from harness.runner import SweepAxes, expand, group_cells


def test_expansion_order_is_deterministic_and_groups_models():
    axes = SweepAxes(("m1", "m2"), ("baseline", "int8-wo"), (1, 8), (128,), (16, 32), ("pytorch",))
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


def test_repetitions_are_innermost_and_share_a_geometry():
    axes = SweepAxes(("m",), ("baseline",), (1, 8), (16,), (4,), ("pytorch",), repetitions=3)
    cells = expand(axes)
    assert [(c.batch_size, c.repetition, c.meters) for c in cells] == [
        (1, 0, True), (1, 1, True), (1, 2, True), (8, 0, True), (8, 1, True), (8, 2, True)]
    assert len({c.geometry for c in cells}) == 2
    assert "rep=2" in cells[2].label() and "rep=" not in cells[0].label()


def test_meter_overhead_alternates_abba():
    cells = expand(SweepAxes(("m",), ("baseline",), (1,), (16,), (4,), ("pytorch",), repetitions=4, meters="alternate"))
    assert [(c.repetition, c.meters) for c in cells] == [
        (0, False), (0, True), (1, True), (1, False), (2, False), (2, True), (3, True), (3, False)]
    assert "meters=off" in cells[0].label()
    off = expand(SweepAxes(("m",), ("baseline",), (1,), (16,), (4,), ("pytorch",), repetitions=2, meters="off"))
    assert [c.meters for c in off] == [False, False]


def test_repetition_and_meter_settings_are_validated():
    with pytest.raises(ValueError, match="repetitions"):
        SweepAxes(("m",), ("baseline",), (1,), (1,), (1,), repetitions=0)
    with pytest.raises(ValueError, match="meters must be one of"):
        SweepAxes(("m",), ("baseline",), (1,), (1,), (1,), meters="sometimes")


def test_backend_variants_restrict_one_backend_and_keep_the_order():
    axes = SweepAxes(("m",), ("baseline", "int8-wo", "int4-wo"), (1,), (8,), (4,), ("pytorch", "ort"),
                     backend_variants=("ort=int4-wo", "ort=baseline"))
    cells = expand(axes)
    assert [(c.variant, c.backend) for c in cells] == [("baseline", "pytorch"), ("baseline", "ort"),
                                                       ("int8-wo", "pytorch"), ("int4-wo", "pytorch"), ("int4-wo", "ort")]
    assert len({c.label() for c in cells}) == len(cells)       # torch and ORT cells of a variant stay apart
    with pytest.raises(ValueError, match="backend=variant pairs"):
        SweepAxes(("m",), ("baseline",), (1,), (8,), (4,), ("ort",), backend_variants=("ort:baseline",))
    with pytest.raises(ValueError, match="not in --backends pytorch"):
        SweepAxes(("m",), ("baseline",), (1,), (8,), (4,), ("pytorch",), backend_variants=("ort=baseline",))


def test_auto_backends_must_be_resolved_before_expanding():
    axes = SweepAxes(("m",), ("baseline",), (1,), (8,), (4,))
    assert axes.backends == ("auto",)
    with pytest.raises(ValueError, match="resolved by harness run"):
        expand(axes)
    with pytest.raises(ValueError, match="stands alone"):
        SweepAxes(("m",), ("baseline",), (1,), (8,), (4,), ("auto", "ort"))
