"""The GGUF file each llama.cpp variant runs: the source file itself (gguf-native), its F32 copy
(baseline), or llama.cpp's quantizer run on that copy (q8_0, q4_0, q4_k_m), cached on disk.

Cache: the ORT backend's entry format (harness.backends.ort.cache: key.json, a manifest of sizes and
sha256 written last, builds renamed into place; a damaged entry is rebuilt, never trusted), under
`$HARNESS_CACHE_DIR/llamacpp` (else ~/.cache/harness/llamacpp). Keys: the model's identity (GGUF path,
size, mtime), the GGUF type, and the versions that make the file: the `gguf` package for the F32 copy;
llama-cpp-python (which pins the llama.cpp it compiles) for a quantized file, plus the F32 entry's key.

Why quantize from the F32 copy and not from the source: llama.cpp's quantizer takes an already-quantized
GGUF only with allow_requantize, and then re-rounds values that were rounded once; from F32 it quantizes
the same fp32 values the torch baseline runs, as `llama-quantize model-f32.gguf out.gguf Q4_K_M` would.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.backends.llamacpp import gguf_io
from harness.backends.llamacpp.recipes import Recipe
from harness.backends.ort import cache as entry_cache   # the generic entry format (imports no onnxruntime)

FORMAT = 1            # bump when a recipe's meaning or the entry layout changes
GGUF_NAME = "model.gguf"
QUANTIZE_LOG = "quantize.log"   # llama.cpp's quantizer output, kept in the entry
LOGGER = "llama-cpp-python"   # the binding's logger; its level gates llama.cpp's log callback


class SourceUnsupported(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class GgufFile:
    path: Path
    census: dict          # {ggml type: tensor count}
    cache_hit: bool | None   # None: the source file, not a cache entry
    notes: tuple[str, ...] = ()


def cache_root() -> Path:
    env = os.environ.get("HARNESS_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "harness") / "llamacpp"


def source_gguf(spec) -> Path:
    """The GGUF file of a harness.models ModelSpec; SourceUnsupported for checkpoint folders and
    synthetic models."""
    if spec.kind == "embedded":
        from harness.models.spec import embedded_gguf_path

        return embedded_gguf_path()
    if spec.kind == "gguf":
        return Path(spec.path)
    what = "a synthetic model has no weights file" if spec.kind == "synthetic" else "a safetensors checkpoint"
    raise SourceUnsupported(f"the llama.cpp backend runs GGUF files; {spec.text} is {what} (convert it with "
                            "llama.cpp's convert_hf_to_gguf.py and pass the .gguf)")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"format": str(FORMAT)}
    for pkg in ("llama-cpp-python", "gguf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


class GgufCache:
    def __init__(self, root: Path | None = None, threads: int | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.threads = threads

    def _f32_entry(self, identity: dict) -> entry_cache.Entry:
        v = versions()
        parts = {"model": identity, "type": "F32", "gguf": v["gguf"], "format": v["format"]}
        return entry_cache.Entry(self.root, parts, (GGUF_NAME,))

    def _quant_entry(self, identity: dict, recipe: Recipe, base_key: str) -> entry_cache.Entry:
        parts = {"model": identity, "type": recipe.ftype, "base": base_key, "versions": versions()}
        return entry_cache.Entry(self.root, parts, (GGUF_NAME,))

    def ensure(self, loaded, recipe: Recipe) -> GgufFile:
        """The file of `recipe` for `loaded`, built if missing or damaged."""
        src = source_gguf(loaded.spec)
        if recipe.source == "native":
            return GgufFile(src, gguf_io.tensor_census(src), None)
        identity = entry_cache.model_identity(loaded)
        notes: list[str] = []
        f32 = self._f32_entry(identity)

        def write_f32(out: Path) -> None:
            gguf_io.write_f32(src, out)

        if recipe.source == "f32":
            entry, hit = f32, _have(f32, write_f32, notes, "F32 copy")
        else:
            entry = self._quant_entry(identity, recipe, f32.key)
            hit = entry.valid()        # a valid quantized entry needs no F32 copy on disk
            if not hit:
                _have(f32, write_f32, notes, "F32 copy")
                _have(entry, lambda out: quantize(f32.path / GGUF_NAME, out, recipe.ftype, self.threads),
                      notes, recipe.variant, checked=True)
        path = entry.path / GGUF_NAME
        return GgufFile(path, gguf_io.tensor_census(path), hit, tuple(notes))


def _have(entry: entry_cache.Entry, make, notes: list[str], what: str, checked: bool = False) -> bool:
    """True when `entry` is valid (a hit); else build it with make(path of the new model.gguf), noting
    why a damaged entry was rebuilt. `checked`: entry.valid() was just called and returned False."""
    if not checked and entry.valid():
        return True
    if entry.invalid_reason != "not built":
        notes.append(f"cache entry {entry.key} ({what}) rebuilt: {entry.invalid_reason}")
    with entry.build() as scratch:
        make(scratch / GGUF_NAME)
    return False


def quantize(src: Path, dst: Path, ftype_name: str, threads: int | None = None) -> None:
    """llama.cpp's quantizer (llama_model_quantize, what the llama-quantize tool calls) from src to dst."""
    import ctypes
    import logging

    import llama_cpp

    logging.getLogger(LOGGER).setLevel(logging.ERROR)    # its INFO lines: one per tensor
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = threads or 0          # <= 0: std::thread::hardware_concurrency()
    log = dst.parent / QUANTIZE_LOG
    with _stderr_to(log):                  # its per-tensor fallback warnings are written to stderr directly
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
        raise RuntimeError(f"llama_model_quantize {ftype_name} {src.name} -> {dst.name} returned {rc}"
                           + (f": {tail[0]}" if tail else ""))


@contextlib.contextmanager
def _stderr_to(path: Path):
    """File descriptor 2 (where llama.cpp's C++ code writes) redirected to `path` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
