"""A GGUF file's scalar metadata, read from its header without touching tensors.

gguf.GGUFReader parses every key, including the tokenizer's arrays of ~50k strings: 4.2 s for the
embedded SmolLM2 file on the lab's CPU. A pre-flight check needs two scalars, which sit before the
tokenizer in every file llama.cpp writes, so this walks the header with the gguf package's type
codes and stops once it has them (milliseconds). Layout (GGUF v2/v3, little-endian): magic, u32
version, u64 tensor count, u64 key count, then per key: string key, u32 type, value; a string is a
u64 length + UTF-8 bytes; an array is u32 item type, u64 count, items.
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path

from gguf import GGUF_MAGIC, GGUFValueType as T

_SCALAR = {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
           T.FLOAT32: "f", T.BOOL: "?", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d"}


class GGUFMetaError(ValueError):
    pass


class _Cursor:
    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str):
        try:
            (v,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        except struct.error:
            raise GGUFMetaError(f"{self.path}: truncated GGUF header") from None
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.take("Q")
        if self.pos + n > len(self.buf):
            raise GGUFMetaError(f"{self.path}: truncated GGUF header")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, typ: int):
        """A scalar or string; arrays are skipped (None)."""
        if typ == T.STRING:
            return self.string()
        if typ == T.ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALAR:
                self.pos += count * struct.calcsize(_SCALAR[item])
            else:
                for _ in range(count):
                    self.value(item)
            return None
        if typ not in _SCALAR:
            raise GGUFMetaError(f"{self.path}: unknown GGUF value type {typ}")
        return self.take(_SCALAR[typ])


def read_scalars(path: str | Path, wanted: set[str] | None = None) -> dict[str, object]:
    """Scalar and string keys of the header; with `wanted`, stops once every wanted key is read.
    A key named `{arch}.x` can be asked for as `*.x` (the architecture comes first in the file)."""
    path = Path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        c = _Cursor(buf, path)
        if c.take("I") != GGUF_MAGIC:
            raise GGUFMetaError(f"{path}: not a GGUF file (bad magic)")
        version = c.take("I")
        if version < 2:
            raise GGUFMetaError(f"{path}: GGUF version {version} is not supported (2 or later)")
        c.take("Q")
        n_kv = c.take("Q")
        out: dict[str, object] = {}
        for _ in range(n_kv):
            key = c.string()
            v = c.value(c.take("I"))
            if v is not None:
                out[key] = v
            if wanted and _has_all(out, wanted):
                break
        return out


def _resolve(out: dict, key: str) -> str:
    if key.startswith("*."):
        return f"{out.get('general.architecture', '')}{key[1:]}"
    return key


def _has_all(out: dict, wanted: set[str]) -> bool:
    return "general.architecture" in out and all(_resolve(out, k) in out for k in wanted)


def context_length(path: str | Path) -> int | None:
    """The `{general.architecture}.context_length` key (None when the file has none)."""
    meta = read_scalars(path, {"*.context_length"})
    v = meta.get(_resolve(meta, "*.context_length"))
    return int(v) if v is not None else None
