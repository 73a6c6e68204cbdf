"""Run configuration: the single source of the CLI's options and their defaults."""
from __future__ import annotations

from dataclasses import dataclass

from harness.pipeline.timed import DEFAULT_MIN_REPEATS, DEFAULT_MIN_SECONDS, DEFAULT_WARMUP
from harness.models.spec import EMBEDDED_DEFAULT

# Variants of the default sweep: every variant with a CPU kernel on the stack the Makefile installs
# (fp8, w4a8 and the 2:4 variants have none; `--variants all` shows them as unsupported).
DEFAULT_VARIANTS = "baseline,int8-wo,int8-dq,int4-wo,int4-awq,unstructured-50"


@dataclass(frozen=True)
class RunConfig:
    model: str = EMBEDDED_DEFAULT
    variants: str = DEFAULT_VARIANTS
    batch: str = "1"
    prompt_tokens: str = "128"
    new_tokens: str = "32"
    warmup: int = DEFAULT_WARMUP
    repeats: int = DEFAULT_MIN_REPEATS
    min_seconds: float = DEFAULT_MIN_SECONDS
    backends: str = "pytorch"
    tune: str = "auto"
    energy_window_s: float = 10.0
    device: str = "auto"
    profile: str = "auto"


# --quick: a small workload for smoke tests; applied only to options the user did not set.
QUICK = {"batch": "1", "prompt_tokens": "32", "new_tokens": "16", "warmup": 1, "repeats": 2, "min_seconds": 0.5}


def int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--{name} takes a comma list of positive integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise ValueError(f"--{name} takes a comma list of positive integers, got {text!r}")
    return vals
