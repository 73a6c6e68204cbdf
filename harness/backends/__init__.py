"""Backends: one folder each (pytorch/, generate/, ort/, llamacpp/), registered here by name. Imports no torch: a
backend module is imported only when a sweep uses it.

`register_backend(name, "module:Class")` (or a factory callable) adds one, also from a plugin module
outside the package (RunSettings.plugins), without editing this file.
"""
from __future__ import annotations

import importlib
from typing import Callable

from harness.backends.base import Backend, CellSkip, EngineChoice, PassResult, Prepared

_BACKENDS: dict[str, str | Callable[[], Backend]] = {
    # the harness's own engine: eager on CPU; static cache + compiled step in a CUDA graph on GPU
    "pytorch": "harness.backends.pytorch.backend:PytorchBackend",
    # transformers' eager generate(), what users get by default, for comparison
    "transformers-generate": "harness.backends.generate.backend:GenerateBackend",
    # ONNX Runtime through onnxruntime-genai (the `ort` extra); the EP comes from the profile
    "ort": "harness.backends.ort.cell:OrtCellBackend",
    # GGUF files through llama-cpp-python (the `llama` extra), in their own quantization types
    "llama.cpp": "harness.backends.llamacpp.cell:LlamaCppCellBackend",
}


class UnknownBackendError(ValueError):
    pass


def register_backend(name: str, factory: str | Callable[[], Backend]) -> None:
    if name in _BACKENDS:
        raise ValueError(f"backend {name!r} registered twice")
    _BACKENDS[name] = factory


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def get_backend(name: str) -> Backend:
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(f"unknown backend {name!r}; valid backends: {', '.join(_BACKENDS)}") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory()


__all__ = ["Backend", "CellSkip", "EngineChoice", "PassResult", "Prepared", "UnknownBackendError",
           "backend_names", "get_backend", "register_backend"]
