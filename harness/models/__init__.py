"""Model sources behind one interface: a spec string in, a LoadedModel out."""
from harness.models.loader import LoadedModel, load_model
from harness.models.presets import PRESETS, ArchShape
from harness.models.spec import EMBEDDED_DEFAULT, ModelSpec, ModelSpecError, parse_spec, shape_of

__all__ = ["LoadedModel", "load_model", "PRESETS", "ArchShape", "EMBEDDED_DEFAULT", "ModelSpec",
           "ModelSpecError", "parse_spec", "shape_of"]
