"""Export steps: a LoadedModel to a Hugging Face folder, that folder to ONNX through the model builder,
and the builder's fp32 model to static QDQ int8 through onnxruntime.quantization.

The builder runs as a subprocess (`python -m onnxruntime_genai.models.builder`), not in process: its
modules import each other as top-level `builders`, `quantization`, `loaders` (it puts its own folder on
sys.path), which would shadow or be shadowed by anything else of those names; it prints a progress line
per tensor; and a subprocess returns its ~2 GB of export memory to the OS when it ends. Its command line
is also the interface its docs describe and keep across releases.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BUILDER_MODULE = "onnxruntime_genai.models.builder"
BUILDER_TIMEOUT_S = 3600
_COPY_SUFFIXES = (".json", ".jinja", ".txt", ".model")   # genai_config, tokenizer and template files


class BuildError(RuntimeError):
    """The builder or the quantizer failed; `unsupported` when it refused the model's architecture."""

    def __init__(self, reason: str, unsupported: bool = False):
        super().__init__(reason)
        self.reason, self.unsupported = reason, unsupported


def export_hf_folder(loaded, dest: Path) -> None:
    """model.save_pretrained + tokenizer.save_pretrained into `dest`, from a fresh fp32 CPU instance.

    A GGUF load carries transformers' GGUF quantizer marks although its weights are already plain fp32
    tensors (dequantized at load); save_pretrained refuses such a model, so the marks are dropped first.
    Synthetic models have no tokenizer; the builder requires one, so a word-level tokenizer with one
    placeholder token per id is written (the harness feeds token ids, never text, to these models).
    """
    import torch

    model = loaded.instantiate(torch.device("cpu"), torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer = loaded.tokenizer if loaded.tokenizer is not None else _placeholder_tokenizer(model.config.vocab_size)
    tokenizer.save_pretrained(dest)
    del model


def _placeholder_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({f"<t{i}>": i for i in range(vocab_size)}, unk_token="<t0>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<t0>", eos_token="<t0>", bos_token="<t0>")


def builder_architectures() -> frozenset[str] | None:
    """The `architectures[0]` values the installed builder dispatches on (its create_model is an
    if/elif chain over them), read from its source without importing it; None if none are found."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("onnxruntime_genai")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(spec.submodule_search_locations[0]) / "models" / "builder.py"
    try:
        found = re.findall(r'architectures\[0\]\s*==\s*"(\w+)"', src.read_text(encoding="utf-8"))
    except OSError:
        return None
    return frozenset(found) or None


def architecture_reason(hf_dir: Path) -> str | None:
    """Why the builder will refuse the model in `hf_dir`, or None (also when its list cannot be read:
    the builder's own error then says it)."""
    known = builder_architectures()
    arch = _architecture(hf_dir)
    if known is None or arch.split(",")[0] in known:
        return None
    from importlib.metadata import version

    names = sorted(known)
    listed = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return (f"the onnxruntime-genai {version('onnxruntime-genai')} model builder cannot export architecture "
            f"{arch} (it exports {len(names)} architectures: {listed})")


def run_builder(hf_dir: Path, out_dir: Path, precision: str, target: str, options: list[str]) -> list[str]:
    """Run the model builder into `out_dir`; its output goes to out_dir/build.log. Returns the command."""
    cmd = [sys.executable, "-m", BUILDER_MODULE, "-i", str(hf_dir), "-o", str(out_dir), "-p", precision,
           "-e", target]
    log_path = out_dir / "build.log"
    with tempfile.TemporaryDirectory(prefix="builder-cache-", dir=out_dir.parent) as scratch:
        cmd_run = cmd + ["-c", scratch] + (["--extra_options", *options] if options else [])
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(" ".join(cmd_run) + "\n")
            log.flush()
            try:
                rc = subprocess.run(cmd_run, stdout=log, stderr=subprocess.STDOUT, timeout=BUILDER_TIMEOUT_S,
                                    env=_builder_env()).returncode
            except subprocess.TimeoutExpired:
                raise BuildError(f"model builder ran past {BUILDER_TIMEOUT_S} s (log: {log_path})") from None
    if rc != 0:
        raise _builder_failure(log_path, rc, hf_dir)
    return cmd + (["--extra_options", *options] if options else [])


def _builder_env() -> dict:
    import os

    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["HF_HUB_OFFLINE"] = "1"          # the input is a local folder; never reach for the hub
    return env


def _builder_failure(log_path: Path, rc: int, hf_dir: Path) -> BuildError:
    lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), lines[-1] if lines else "")
    if "NotImplementedError" in last and "not currently supported" in last:
        arch = _architecture(hf_dir)
        return BuildError(f"the onnxruntime-genai model builder cannot export architecture {arch} ({last})",
                          unsupported=True)
    # the log lives in the scratch folder, which is removed on failure: keep a copy beside the cache
    kept = log_path.parent.parent / "failed" / f"{log_path.parent.name.lstrip('.')}.log"
    kept.parent.mkdir(exist_ok=True)
    shutil.copy2(log_path, kept)
    return BuildError(f"model builder exited with status {rc}: {last} (log: {kept})")


def _architecture(hf_dir: Path) -> str:
    try:
        return ",".join(json.loads((hf_dir / "config.json").read_text())["architectures"])
    except (OSError, ValueError, KeyError, TypeError):
        return "(unknown: config.json has no architectures)"


def copy_side_files(src: Path, dst: Path) -> None:
    """genai_config.json, tokenizer and chat-template files: everything but the graph and its data."""
    for p in src.iterdir():
        if p.is_file() and p.suffix in _COPY_SUFFIXES and p.name not in ("manifest.json", "key.json"):
            shutil.copy2(p, dst / p.name)


def quantize_static_qdq(fp32_dir: Path, out_dir: Path, calibration_ids) -> None:
    """Static QDQ int8 of every MatMul: s8 per-channel weights, u8 activations (asymmetric, the CPU EP's
    fast U8S8 path), ranges from MinMax calibration over `calibration_ids` (n, seq) with an empty KV cache."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    copy_side_files(fp32_dir, out_dir)
    reader = _calibration_reader(calibration_ids, kv_layout(fp32_dir), input_names(fp32_dir / "model.onnx"))
    with _quiet_root_logger():
        quantize_static(str(fp32_dir / "model.onnx"), str(out_dir / "model.onnx"), reader,
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"], per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax, use_external_data_format=True,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                        calibration_providers=["CPUExecutionProvider"])


def kv_layout(model_dir: Path) -> tuple[int, int, int]:
    """(layers, kv heads, head size) from genai_config.json: the past KV inputs' head size is symbolic."""
    dec = json.loads((model_dir / "genai_config.json").read_text())["model"]["decoder"]
    return dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]


def empty_feed(ids: np.ndarray, kv: tuple[int, int, int], names: set[str]) -> dict:
    """Inputs of the builder's decoder for a full-sequence forward: ids, an all-ones mask, empty past KV."""
    layers, heads, head_size = kv
    feed = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones_like(ids, dtype=np.int64)}
    if "position_ids" in names:
        feed["position_ids"] = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
    empty = np.zeros((ids.shape[0], heads, 0, head_size), dtype=np.float32)
    for i in range(layers):
        feed[f"past_key_values.{i}.key"] = empty
        feed[f"past_key_values.{i}.value"] = empty
    return feed


def input_names(model_path: Path) -> set[str]:
    import onnx

    return {i.name for i in onnx.load(str(model_path), load_external_data=False).graph.input}


def _calibration_reader(ids, kv: tuple[int, int, int], names: set[str]):
    """A CalibrationDataReader giving one corpus sequence per get_next(), with an empty KV cache."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = [np.asarray(r, dtype=np.int64)[None, :] for r in np.asarray(ids)]

        def get_next(self):
            return empty_feed(self.rows.pop(0), kv, names) if self.rows else None

    return Reader()


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice ('consider pre-processing') on the root logger."""
    root = logging.getLogger()
    prev = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(prev)
