"""Variants under tensor parallelism: applied by each rank to its own shard, after sharding, through
the registry's apply (the same entry the one-process engine runs), or refused with the reason.

Applied per shard: int8-wo and int4-wo (with any keep-* policy). What the shard changes:
- column-parallel layers (q/k/v, gate/up) keep whole output rows: int8's per-channel scales and
  int4's groups along K are exactly the one-process ones;
- row-parallel layers (o_proj, down_proj) hold a slice of K. int4's groups of 128 inputs are the
  one-process groups exactly when each rank's slice is a whole number of groups (refused otherwise);
  int8-wo's per-channel scale is taken over the rank's slice of the row (a finer grouping than one
  process: not bit-identical, close).
Refused: every other variant (calibrated ones, AWQ and Wanda, would calibrate through the sharded
forward; sparsity and fp8 kernels are not checked on shards).
"""
from __future__ import annotations

import dataclasses

ROW_PARALLEL_SUFFIX = ".linear"   # shard.RowParallel keeps the sliced nn.Linear under this name
PER_SHARD = ("int8-wo", "int4-wo")


def tp_variant_unsupported(variant_name: str, shape, world: int) -> str | None:
    """None if `variant_name` can be applied per rank on `world` shards of `shape`, else why not."""
    from harness.variants import parse_variant

    spec = parse_variant(variant_name)
    if spec.base == "baseline":
        return None
    if spec.base not in PER_SHARD:
        return (f"{spec.base} under tensor parallelism is not implemented: only {', '.join(PER_SHARD)} are "
                f"applied per rank's shard (a calibrated or sparse variant would need the whole model)")
    if spec.base == "int4-wo" and shape is not None:
        from harness.variants.int4_cpu import GROUP_SIZE

        for name, k in (("o_proj", shape.num_attention_heads * shape.head_dim_), ("down_proj", shape.intermediate_size)):
            if (k // world) % GROUP_SIZE:
                return (f"int4-wo g{GROUP_SIZE} across {world} GPUs: each rank's {name} input slice ({k} / {world} = "
                        f"{k // world}) is not a whole number of {GROUP_SIZE}-input groups")
    return None


class _ShardPolicy:
    """The variant's policy over a shard's module names: RowParallel's `o_proj.linear` is `o_proj`."""

    def __init__(self, policy):
        self.policy = policy

    def keeps(self, fqn: str) -> bool:
        return self.policy.keeps(fqn.removesuffix(ROW_PARALLEL_SUFFIX))

    def __getattr__(self, name):
        return getattr(self.policy, name)


def apply_on_shard(model, variant_name: str, device_type: str, dtype, num_layers: int | None):
    """Apply the variant to this rank's sharded model in place; returns its ApplyResult (baseline: None)."""
    from harness.variants import parse_variant

    spec = parse_variant(variant_name)
    if spec.base == "baseline":
        return None
    ctx = spec.context(device_type, dtype, None, num_layers)
    if ctx.policy is not None:
        ctx = dataclasses.replace(ctx, policy=_ShardPolicy(ctx.policy))
    return spec.apply(model, ctx)
