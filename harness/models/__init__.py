"""Model sources behind one interface: a spec string in, a LoadedModel out.

Spec parsing and shapes import no torch (the planner uses them); the loader is imported on first use.
"""
from harness.models.presets import PRESETS, ArchShape
from harness.models.spec import (EMBEDDED_DEFAULT, ModelSpec, ModelSpecError, context_length, embedded_gguf_path,
                                 parse_spec, remote_code, shape_of)

__all__ = ["LoadedModel", "load_model", "PRESETS", "ArchShape", "EMBEDDED_DEFAULT", "ModelSpec",
           "ModelSpecError", "context_length", "embedded_gguf_path", "parse_spec", "remote_code", "shape_of"]


def __getattr__(name):
    if name in ("LoadedModel", "load_model"):
        from harness.models import loader

        return getattr(loader, name)
    raise AttributeError(name)
