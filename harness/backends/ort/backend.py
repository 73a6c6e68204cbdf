"""The ONNX Runtime backend object the cell pipeline plugs in: `unsupported_reason` before any model is
loaded, `prepare` (export or cache hit, outside every timed region) -> OrtPrepared, which hands out the
engine and the logits the pipeline measures and scores."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.backends.ort import cache as ort_cache
from harness.backends.ort.config import OrtSettings
from harness.backends.ort.eps import BUILDER_TARGETS, ep_reason, resolve_ep
from harness.backends.ort.recipes import CALIBRATION_SEQS, CALIBRATION_TOKENS, RECIPES, Kernel, Recipe

REQUIRED_FILES = ("model.onnx", "genai_config.json")
CALIBRATION_SEED = 1234          # the torch backend's seed for calibration rows of synthetic models
_PACKAGES = (("onnxruntime", "onnxruntime"), ("onnxruntime_genai", "onnxruntime-genai"), ("onnx", "onnx"))


class OrtUnsupported(Exception):
    """The cell cannot run on this backend (status `unsupported`); `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnknownKernelError(ValueError):
    pass


@dataclass
class OrtPrepared:
    """One exported variant on one EP. Sessions are opened on first use and kept until close()."""
    model_dir: Path
    ep: str
    variant: str
    kernel_name: str
    kernel: str                 # e.g. "onnxruntime MatMulNBits int4 block 128, fp32 activations (...) (CPU EP)"
    weight_bytes: int           # model.onnx + its external data files, bytes on disk
    cache_hit: bool
    prepare_s: float            # wall seconds of prepare(): export, quantization and verification
    threads: int | None = None
    notes: list[str] = field(default_factory=list)
    _engine: object | None = field(default=None, repr=False)
    _logits: object | None = field(default=None, repr=False)

    def engine(self):
        """The token-loop engine (harness.backends.base.Engine); one og.Model per prepared variant."""
        from harness.backends.ort.engine import OrtGenaiEngine

        if self._engine is None:
            self._engine = OrtGenaiEngine(self.model_dir, self.ep, self.threads)
        return self._engine

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 logits at every position, (batch, seq, vocab) for ids (batch, seq); (seq, vocab) for 1-D."""
        return self._logits_runner()(ids)

    def quality_module(self) -> torch.nn.Module:
        """An nn.Module for harness.quality.evaluate(module, reference)."""
        from harness.backends.ort.engine import LogitsModule

        return LogitsModule(self._logits_runner())

    def _logits_runner(self):
        from harness.backends.ort.engine import OrtLogits

        if self._logits is None:
            self._logits = OrtLogits(self.model_dir, self.ep, self.threads)
        return self._logits

    def close(self) -> None:
        """Drop both sessions (each holds a copy of the weights)."""
        self._engine = self._logits = None


class OrtBackend:
    name = "ort"
    variants = tuple(RECIPES)

    def __init__(self, settings: OrtSettings | None = None):
        self.settings = settings or OrtSettings()
        cache_dir = self.settings.cache_dir
        self.root = Path(cache_dir).expanduser() if cache_dir else ort_cache.cache_root()
        known = {k.name for r in RECIPES.values() for k in r.kernels}
        if self.settings.kernel is not None and self.settings.kernel not in known:
            raise UnknownKernelError(f"unknown ort kernel {self.settings.kernel!r}; "
                                     f"choices: {', '.join(sorted(known))}")

    def resolve(self, variant_name: str, profile=None, ep: str | None = None,
                kernel: str | None = None) -> tuple[Recipe | None, Kernel | None, str, str | None]:
        """(recipe, kernel, ep, reason); reason is None when the cell can run. An EP or kernel name
        that does not exist is bad input and raises (UnknownEpError, UnknownKernelError)."""
        ep_name = resolve_ep(profile, ep or self.settings.ep)
        for module, pkg in _PACKAGES:
            try:
                __import__(module)
            except ImportError as e:
                return None, None, ep_name, f"{pkg} is not installed ({e}); pip install 'harness[ort]'"
        from harness.variants.spec import split_policy

        base, policy = split_policy(variant_name)
        if policy:
            why = f"{variant_name}: mixed-precision policies are not implemented on the ort backend"
            return None, None, ep_name, why
        recipe = RECIPES.get(base)
        if recipe is None:
            return None, None, ep_name, f"{base}: no ONNX Runtime recipe (ort variants: {', '.join(RECIPES)})"
        try:
            k = recipe.kernel(kernel if kernel is not None else self._default_kernel(recipe))
        except KeyError as e:
            raise UnknownKernelError(e.args[0]) from None
        why = ep_reason(ep_name) or recipe.ep_reason(k, ep_name)
        return recipe, k, ep_name, why

    def _default_kernel(self, recipe: Recipe) -> str | None:
        """The settings' kernel where this recipe has one of that name (a run-wide --kernel block32
        applies to every variant that offers it), else the recipe's default."""
        wanted = self.settings.kernel
        return wanted if wanted in {x.name for x in recipe.kernels} else None

    def unsupported_reason(self, variant_name: str, profile=None, ep: str | None = None,
                           kernel: str | None = None) -> str | None:
        return self.resolve(variant_name, profile, ep, kernel)[3]

    def prepare(self, loaded, variant_name: str, profile=None, ep: str | None = None, kernel: str | None = None,
                calibration_ids: torch.Tensor | None = None) -> OrtPrepared:
        """Export (or find in the cache) `variant_name` of `loaded` for the EP. Raises OrtUnsupported
        (with the reason) when the EP, the variant or the builder cannot do it; export.BuildError when
        a build fails for another reason."""
        from harness.backends.ort.export import BuildError

        t0 = time.perf_counter()
        recipe, k, ep_name, why = self.resolve(variant_name, profile, ep, kernel)
        if why:
            raise OrtUnsupported(why)
        notes: list[str] = [recipe.caveat] if recipe.caveat else []
        try:
            entry, hit = self._ensure(loaded, recipe, k, ep_name, calibration_ids, notes)
        except BuildError as e:
            if e.unsupported:
                raise OrtUnsupported(e.reason) from None
            raise
        return OrtPrepared(entry.path, ep_name, recipe.variant, k.name, recipe.kernel_label(k, ep_name),
                           _weight_bytes(entry.path), hit, time.perf_counter() - t0, self.settings.threads, notes)

    # -- builds --------------------------------------------------------------------------------------
    def _ensure(self, loaded, recipe: Recipe, k: Kernel, ep: str, calibration_ids, notes: list[str]):
        from harness.backends.ort import export

        target = BUILDER_TARGETS[ep]
        parts = {"model": ort_cache.model_identity(loaded), "variant": recipe.variant, "kernel": k.name,
                 "method": recipe.method, "precision": recipe.precision, "options": k.builder_options(),
                 "target": target, "versions": ort_cache.tool_versions()}
        if recipe.method == "qdq-static":
            base, _ = self._ensure(loaded, RECIPES["baseline"], RECIPES["baseline"].kernels[0], ep, None, notes)
            ids = calibration_ids if calibration_ids is not None else _calibration_ids(loaded)
            parts.update(base=base.key, calibration=_ids_digest(ids))
        entry = ort_cache.Entry(self.root, parts, REQUIRED_FILES)
        if entry.valid():
            return entry, True
        if entry.invalid_reason != "not built":
            notes.append(f"cache entry {entry.key} ({recipe.variant}) rebuilt: {entry.invalid_reason}")
        with entry.build() as scratch:
            if recipe.method == "qdq-static":
                export.quantize_static_qdq(base.path, scratch, ids.cpu().numpy())
            else:
                hf = self._hf_folder(loaded, parts["model"], notes)
                refused = export.architecture_reason(hf)
                if refused:
                    raise export.BuildError(refused, unsupported=True)
                export.run_builder(hf, scratch, recipe.precision, target, k.builder_options())
        return entry, False

    def _hf_folder(self, loaded, identity: dict, notes: list[str]) -> Path:
        """The model as a Hugging Face folder (the builder's input), cached beside the builds."""
        import transformers

        from harness.backends.ort import export

        entry = ort_cache.Entry(self.root / "hf", {"model": identity, "transformers": transformers.__version__,
                                                   "format": ort_cache.FORMAT}, ("config.json",))
        if not entry.valid():
            if entry.invalid_reason != "not built":
                notes.append(f"cached Hugging Face export rebuilt: {entry.invalid_reason}")
            with entry.build() as scratch:
                export.export_hf_folder(loaded, scratch)
        return entry.path


def _weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.is_file() and (p.suffix == ".onnx" or p.name.endswith(".onnx.data") or p.suffix == ".data"))


def _calibration_ids(loaded) -> torch.Tensor:
    """Calibration rows from the default corpus tail (quality scores the head)."""
    from harness.corpus import load_corpus

    name, text = load_corpus()
    ids, _ = loaded.prompt_ids(name, text, CALIBRATION_SEQS, CALIBRATION_TOKENS, seed=CALIBRATION_SEED, from_end=True)
    return ids


def _ids_digest(ids: torch.Tensor) -> dict:
    import hashlib

    arr = ids.detach().cpu().to(torch.int64).contiguous().numpy()
    return {"shape": list(arr.shape), "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
