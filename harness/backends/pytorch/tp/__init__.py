"""Tensor-parallel inference: one process per GPU (gloo ranks on CPU), Megatron-style sharding of
the lean decoder (harness.backends.pytorch.lean), driven from the cell pipeline's process.

- env.py     NVLink multicast off in every process the harness starts (torch-free)
- launch.py  the rank launcher: N spawned processes in one torch.distributed group on a loopback port
- shard.py   column/row-parallel sharding of a Llama-family model, in place, and its all-reduce
- rank.py    what a rank runs: load, shard, apply the variant, build the engine, serve commands
- variants.py  which variants apply per shard (int8-wo, int4-wo) and the reason for the others
- checkpoint.py  a safetensors checkpoint read slice by slice by each rank (safe_open + get_slice)
- engine.py  the Engine the pipeline times: sends each pass to every rank, returns rank 0's result
"""
