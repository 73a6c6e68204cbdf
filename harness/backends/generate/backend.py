"""transformers-generate backend: the PyTorch preparation (same load, variant and kernels) with
transformers' eager `generate()` as the engine, what users get by default, for comparison. Quality
is not evaluated here: the pytorch backend's row of the same variant carries it."""
from __future__ import annotations

from harness.backends.base import EngineChoice
from harness.backends.generate.engine import GenerateEngine
from harness.backends.pytorch.backend import PytorchBackend


class GenerateBackend(PytorchBackend):
    name = "transformers-generate"
    lean_engine = False
    evaluates_quality = False

    def make_engine(self, prepared, cell) -> EngineChoice:
        return EngineChoice(GenerateEngine(prepared.model, prepared.torch_device))
