"""Model spec strings: what the user types after --model, parsed into a ModelSpec."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.models.presets import PRESETS, SMOLLM2_135M, ArchShape

EMBEDDED_DEFAULT = "smollm2-135m"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class ModelSpecError(ValueError):
    """A model spec that cannot be used, with the reason and the valid forms."""


@dataclass(frozen=True)
class ModelSpec:
    text: str        # as the user wrote it; the Record's `model` key
    kind: str        # embedded | synthetic | hf-dir | gguf
    preset: str | None = None
    path: Path | None = None

    @property
    def real_weights(self) -> bool:
        return self.kind != "synthetic"


def _forms() -> str:
    return (f"'{EMBEDDED_DEFAULT}', 'synthetic:<preset>' with preset one of {sorted(PRESETS)}, "
            "a Hugging Face checkpoint folder (config.json + *.safetensors), or a .gguf file")


def parse_spec(text: str) -> ModelSpec:
    text = text.strip()
    if not text:
        raise ModelSpecError(f"empty model spec; use {_forms()}")
    if text == EMBEDDED_DEFAULT:
        return ModelSpec(text, "embedded")
    if text.startswith("synthetic:"):
        preset = text.split(":", 1)[1]
        if preset not in PRESETS:
            raise ModelSpecError(f"unknown synthetic preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
        return ModelSpec(text, "synthetic", preset=preset)
    p = Path(text).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelSpecError(
            f"{text}: pickle checkpoints ({', '.join(PICKLE_SUFFIXES)}) are refused: unpickling runs arbitrary "
            "code. Convert it to safetensors (or GGUF) and pass that instead.")
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise ModelSpecError(f"{text}: no such GGUF file")
        return ModelSpec(text, "gguf", path=p)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelSpecError(f"{text}: folder has no config.json; not a Hugging Face checkpoint")
        if not list(p.glob("*.safetensors")):
            pickles = [f.name for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES]
            extra = f" (it holds pickle files {pickles}, which are refused: unpickling runs arbitrary code)" if pickles else ""
            raise ModelSpecError(f"{text}: folder has no *.safetensors weights{extra}")
        return ModelSpec(text, "hf-dir", path=p)
    raise ModelSpecError(f"{text!r} is not a model spec; use {_forms()}")


def shape_of(spec: str | ModelSpec) -> ArchShape:
    """Architecture shape of a spec, without loading weights (for the planner)."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    if s.kind == "embedded":
        return SMOLLM2_135M
    if s.kind == "synthetic":
        return PRESETS[s.preset]
    if s.kind == "hf-dir":
        cfg = json.loads((s.path / "config.json").read_text())
        return ArchShape(
            name=s.path.name, model_type=cfg.get("model_type", "llama"), hidden_size=cfg["hidden_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
            intermediate_size=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            attention_bias=cfg.get("attention_bias", cfg.get("model_type") == "qwen2"),
            head_dim=cfg.get("head_dim"))
    raise ModelSpecError(f"{s.text}: the shape of a GGUF file other than the embedded default is not known without loading it")
