"""Settings of the ONNX Runtime backend: the single source of its options and their defaults (each
field's help text is in metadata["help"], for a command line generated from it)."""
from __future__ import annotations

from dataclasses import dataclass, field


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class OrtSettings:
    ep: str | None = _opt(None, "ONNX Runtime execution provider (full name, or cpu / cuda / dml / qnn / openvino "
                                "/ coreml); default: the profile's first onnxruntime_eps entry, else the CPU EP.")
    kernel: str | None = _opt(None, "Kernel choice of the variant (int4-wo: block128, block32, block128-int8act, "
                                    "block32-int8act; int8-wo / int8-dq: block128, block32); default: the first.")
    threads: int | None = _opt(None, "Intra-op threads of the ONNX Runtime session; default: ONNX Runtime's "
                                     "(one per physical core).")
    cache_dir: str | None = _opt(None, "Folder of exported models; default $HARNESS_CACHE_DIR/ort, else "
                                       "~/.cache/harness/ort.")

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"ort threads must be >= 1, got {self.threads}")
