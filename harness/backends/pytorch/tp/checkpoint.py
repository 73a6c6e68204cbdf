"""A real checkpoint loaded shard by shard: each rank builds the model's structure on the meta
device, shards it (shard.shard_model), then reads from the safetensors files only the slices its
shard holds (safetensors safe_open + get_slice: rows of the column-parallel weights, input columns
of the row-parallel ones, the replicated tensors whole). No rank ever holds the whole model, so a
checkpoint larger than one GPU (or one rank's share of host memory) runs tensor-parallel.

The pipeline's process needs only the shape and the tokenizer (`light_model`): it reads
config.json and the tokenizer files, no weight.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")   # output rows sliced
ROW_PARALLEL = ("o_proj", "down_proj")                                     # input columns sliced


def _weight_map(folder: Path) -> dict[str, Path]:
    """Tensor name -> the .safetensors file holding it (the index of a sharded checkpoint, or every file's keys)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: f for k in h.keys()})
    return out


def checkpoint_name(param: str) -> str:
    """The checkpoint's name of a sharded model's tensor (shard.RowParallel nests its linear as `.linear`)."""
    return param.replace(".linear.", ".")


def _slice_of(key: str, local_shape: tuple, rank: int):
    """The index into the checkpoint tensor `key` that this rank's tensor of `local_shape` holds
    (empty: the whole tensor)."""
    parts = key.split(".")
    owner = parts[-2] if len(parts) >= 2 else ""
    if owner in COLUMN_PARALLEL:
        n = local_shape[0]
        return (slice(rank * n, (rank + 1) * n),)
    if owner in ROW_PARALLEL and parts[-1] == "weight":
        n = local_shape[1]
        return (slice(None), slice(rank * n, (rank + 1) * n))
    return ()   # replicated (a row-parallel bias lives on rank 0 only, whole)


@torch.no_grad()
def load_shard(folder: str | Path, rank: int, world: int, device: torch.device, dtype: torch.dtype,
               trust_remote_code: bool = False, group=None) -> tuple[nn.Module, dict]:
    """This rank's shard of the checkpoint in `folder`, and what was read:
    {"bytes_read": bytes copied out of the checkpoint, "checkpoint_bytes": all its tensors' bytes,
     "tensors_read", "read_s"}."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness.backends.pytorch.tp.shard import shard_model

    folder = Path(folder)
    t0 = time.perf_counter()
    cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, trust_remote_code=trust_remote_code)
    full_cfg = model.config
    shard_model(model, rank, world, group)
    model.to_empty(device=device)
    if getattr(full_cfg, "tie_word_embeddings", False):
        model.tie_weights()          # to_empty gave the tied tensors separate storage
    where = _weight_map(folder)
    handles: dict[Path, object] = {}
    stats = {"bytes_read": 0, "tensors_read": 0, "checkpoint_bytes": 0}
    try:
        for name, t in model.state_dict(keep_vars=True).items():
            key = checkpoint_name(name)
            if key not in where:
                if key == "lm_head.weight" and getattr(full_cfg, "tie_word_embeddings", False):
                    continue
                raise KeyError(f"{folder}: no tensor {key} in the checkpoint (for {name})")
            f = where[key]
            h = handles.get(f) or handles.setdefault(f, safe_open(str(f), framework="pt", device="cpu"))
            index = _slice_of(key, tuple(t.shape), rank)
            part = h.get_slice(key)[index] if index else h.get_tensor(key)
            if tuple(part.shape) != tuple(t.shape):
                raise ValueError(f"{key}: the checkpoint's slice for rank {rank} is {tuple(part.shape)}, "
                                 f"the shard wants {tuple(t.shape)}")
            t.data.copy_(part.to(dtype=t.dtype))
            stats["bytes_read"] += part.numel() * part.element_size()
            stats["tensors_read"] += 1
        for f, h in handles.items():
            for key in h.keys():
                sl = h.get_slice(key)
                stats["checkpoint_bytes"] += _numel(sl.get_shape()) * _dtype_bytes(sl.get_dtype())
    finally:
        handles.clear()
    # non-persistent buffers (the rotary frequencies) are not in the checkpoint: rebuilt on the device
    rot = model.model.rotary_emb
    with torch.device(device):
        model.model.rotary_emb = type(rot)(config=full_cfg)
    model.eval().requires_grad_(False)
    stats["read_s"] = time.perf_counter() - t0
    return model, stats


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


def _dtype_bytes(name: str) -> int:
    return _DTYPE_BYTES.get(name, 0)


def light_model(spec, trust_remote_code: bool = False):
    """A LoadedModel of a checkpoint folder with its shape and tokenizer but no weights (the ranks read
    them): what the pipeline's process of a tensor-parallel cell needs."""
    from transformers import AutoTokenizer

    from harness.models.loader import LoadedModel, _quiet_transformers
    from harness.models.spec import ModelSpecError, remote_code, shape_of

    why = remote_code(spec)
    if why and not trust_remote_code:   # as load_model refuses it
        raise ModelSpecError(f"{spec.text}: needs trust_remote_code ({why}); pass --trust-remote-code to allow "
                             "running its code")
    t0 = time.perf_counter()
    _quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(str(spec.path), trust_remote_code=trust_remote_code)

    def no_weights(device, dtype):
        raise RuntimeError("a tensor-parallel cell's weights are read by its ranks, slice by slice")

    return LoadedModel(spec, shape_of(spec), tokenizer,
                       f"safetensors checkpoint {spec.path}, read by each rank slice by slice",
                       time.perf_counter() - t0, no_weights)
