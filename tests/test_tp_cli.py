"""`harness run --gpus 2 --device cpu`: the gloo tensor-parallel path end to end (process isolation,
ranks spawned by the worker), tokens equal to the one-process run's."""
from __future__ import annotations

from click.testing import CliRunner

from harness.cli import main
from harness.records import load_records


def _run(tmp_path, name, *args):
    out = tmp_path / name
    r = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--device", "cpu", "--quick", "--no-quality",
                                  "--cpu-power-w", "40", "--out", str(out), *args])
    assert r.exit_code == 0, r.output
    return load_records(out)


def test_two_gloo_ranks_give_ok_records_with_the_one_process_tokens(tmp_path):
    one = _run(tmp_path, "one", "--variants", "baseline,int8-wo")
    two = _run(tmp_path, "two", "--variants", "baseline,int8-wo,int4-awq", "--gpus", "2")
    assert [r.status for r in one] == ["ok", "ok"], [r.reason for r in one]
    base, int8, awq = two
    assert base.status == "ok", base.reason
    assert base.decode_path == "tensor-parallel x2 (lean-eager)" and base.device == "cpu"
    assert base.extra["first_row_tokens"] == one[0].extra["first_row_tokens"]
    assert base.weight_bytes > one[0].weight_bytes        # embedding and lm_head replicated on each rank
    # int8-wo applied by each rank to its shard: the one-process variant's tokens, fewer bytes than bf16
    assert int8.status == "ok", int8.reason
    assert "on each rank's shard" in int8.kernel and int8.engine.layers_changed == 2 * one[1].engine.layers_changed
    assert int8.extra["first_row_tokens"] == one[1].extra["first_row_tokens"]
    assert int8.weight_bytes < base.weight_bytes
    assert awq.status == "unsupported" and awq.reason.startswith("int4-awq under tensor parallelism is not implemented")
