"""On-disk cache of exported and quantized ONNX models.

Layout: `<root>/<key>/` holds one build (model.onnx, its external data, genai_config.json, tokenizer
files, build.log), `key.json` (what the key was made of, in clear) and `manifest.json` (every file's
size and sha256), written last. An entry without a manifest, or whose files differ from it, is a
crashed or damaged build: it is deleted and rebuilt, never trusted. Builds are made in a temporary
folder beside the entry and renamed into place, so a reader never sees half an entry.

Root: `$HARNESS_CACHE_DIR/ort` if that variable is set, else `~/.cache/harness/ort`.
The key covers the model's identity (file path + size + mtime for GGUF and checkpoint folders; the
preset shape, seed and torch/transformers versions for synthetic models, whose random weights depend
on them), the variant, its kernel, the builder target, and the onnxruntime / onnxruntime-genai / onnx
versions: a new builder may export a different graph, so a version change is a new entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from harness.atomic import atomic_write_text, fsync_dir

FORMAT = 1            # bump when the entry layout or a recipe's meaning changes
MANIFEST, KEY_FILE = "manifest.json", "key.json"
_HASH_CHUNK = 1 << 22  # bytes read per sha256 update


def cache_root() -> Path:
    env = os.environ.get("HARNESS_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "harness") / "ort"


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"format": str(FORMAT)}
    for pkg in ("onnxruntime", "onnxruntime-genai", "onnx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def model_identity(loaded) -> dict:
    """What makes two loads of a model the same model, without reading its weights."""
    spec = loaded.spec
    ident: dict = {"kind": spec.kind, "spec": spec.text}
    if spec.kind in ("embedded", "gguf"):
        from harness.models.loader import embedded_gguf_path

        path = embedded_gguf_path() if spec.kind == "embedded" else spec.path
        ident["files"] = [_file_stamp(Path(path))]
    elif spec.kind == "hf-dir":
        ident["files"] = [_file_stamp(p) for p in sorted(Path(spec.path).iterdir()) if p.is_file()]
    else:
        import torch
        import transformers

        from harness.models.loader import SYNTHETIC_SEED

        ident.update(shape=asdict(loaded.shape) if loaded.shape else None, seed=SYNTHETIC_SEED,
                     torch=torch.__version__, transformers=transformers.__version__)
    return ident


def _file_stamp(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def entry_key(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> dict:
    """Size and sha256 of every file in `folder` (recursively), written last as manifest.json."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    manifest = {"format": FORMAT, "files": files}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify(folder: Path, required: tuple[str, ...] = ()) -> str | None:
    """Why the entry at `folder` cannot be trusted, or None when every file matches its manifest."""
    mpath = folder / MANIFEST
    if not mpath.is_file():
        return "no manifest (the build did not finish)"
    try:
        files = json.loads(mpath.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    for name in required:
        if name not in files:
            return f"{name} missing from the manifest"
    for name, want in files.items():
        p = folder / name
        if not p.is_file():
            return f"{name} missing"
        if p.stat().st_size != want["size"]:
            return f"{name} is {p.stat().st_size} bytes, the manifest says {want['size']}"
    for name, want in files.items():      # sizes first: a truncated file is caught without hashing
        if sha256_file(folder / name) != want["sha256"]:
            return f"{name} differs from its manifest sha256"
    return None


class Entry:
    """One cache entry: `path` when valid; `build()` yields a scratch folder and publishes it."""

    def __init__(self, root: Path, parts: dict, required: tuple[str, ...]):
        self.root, self.parts, self.required = root, parts, required
        self.key = entry_key(parts)
        self.path = root / self.key
        self.invalid_reason: str | None = None

    def valid(self) -> bool:
        if not self.path.exists():
            self.invalid_reason = "not built"
            return False
        self.invalid_reason = verify(self.path, self.required)
        return self.invalid_reason is None

    @contextlib.contextmanager
    def build(self):
        """Yield an empty scratch folder; on success write key.json and the manifest into it and move
        it into place (replacing a damaged entry). On error the scratch folder is removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = self.root / f".{self.key}.build-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            yield scratch
            atomic_write_text(scratch / KEY_FILE, json.dumps(self.parts, indent=1, sort_keys=True, default=str))
            write_manifest(scratch)
            if self.path.exists():
                shutil.rmtree(self.path)
            os.replace(scratch, self.path)
            fsync_dir(self.root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
