"""GGUF files through the `gguf` package (no llama.cpp needed): an F32 copy of a quantized GGUF, and
the census of the tensor types a file holds (what the record's kernel and weights note say).

Why dequantize in the GGUF domain rather than from the torch model: transformers' GGUF loader
dequantizes with this same `gguf.quants.dequantize` and then permutes the Q/K rows into Hugging Face's
rotary layout; writing the GGUF tensors back dequantized keeps llama.cpp's layout and every metadata key
(tokenizer, rope, chat template) as the source had them, so the F32 file holds exactly the fp32 values
the torch baseline runs, with no converter in between (llama.cpp's convert_hf_to_gguf.py is not part of
the llama-cpp-python wheel).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

_HEADER_PREFIX = "GGUF."      # the reader's virtual header fields (version, counts)


def tensor_census(path: Path) -> dict[str, int]:
    """{ggml type name: tensor count} of a GGUF file, e.g. {"Q4_1": 211, "F32": 61}, largest first."""
    from gguf import GGUFReader

    counts = Counter(t.tensor_type.name for t in GGUFReader(str(path), "r").tensors)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def tensor_bytes(path: Path) -> int:
    """Bytes of tensor data in a GGUF file (what llama.cpp maps as weights; metadata excluded)."""
    from gguf import GGUFReader

    return int(sum(t.n_bytes for t in GGUFReader(str(path), "r").tensors))


def census_text(census: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in census.items())


def write_f32(src: Path, dst: Path) -> dict[str, int]:
    """Write `src` with every tensor dequantized to F32 (general.file_type set to ALL_F32).
    Returns the source's census. Raises ValueError for a type the gguf package cannot dequantize."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, Keys
    from gguf.quants import dequantize

    reader = GGUFReader(str(src), "r")
    arch_field = reader.fields.get(Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise ValueError(f"{src}: no {Keys.General.ARCHITECTURE} key: not a model GGUF")
    writer = GGUFWriter(str(dst), arch=arch_field.contents(), endianess=reader.endianess)
    alignment = reader.fields.get(Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    for field in reader.fields.values():
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith(_HEADER_PREFIX):
            continue
        if field.name in (Keys.General.FILE_TYPE, Keys.General.ALIGNMENT):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    writer.add_file_type(0)       # LLAMA_FTYPE_ALL_F32
    census: Counter = Counter()
    for t in reader.tensors:
        census[t.tensor_type.name] += 1
        if t.tensor_type == GGMLQuantizationType.F32:
            data = np.asarray(t.data, dtype=np.float32)
        else:
            try:
                data = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            except NotImplementedError as e:
                raise ValueError(f"{src}: tensor {t.name} is {t.tensor_type.name}, which the gguf package "
                                 f"cannot dequantize ({e})") from None
        # the reader gives numpy shapes (ggml's ne reversed); the writer reverses them back
        writer.add_tensor(t.name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dict(census)
