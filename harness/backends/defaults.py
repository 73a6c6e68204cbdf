"""What `--backends auto` (the default) means: pytorch, plus ort for ORT_DEFAULT_VARIANTS on a local CPU
run of the embedded default model when onnxruntime-genai imports. Resolved once by `harness run`
before the sweep is expanded; run.json stores the result, so --resume measures the same cells.

Why only there: the default `make run` is the edge comparison the issue asks for (ORT fp32 / int8 /
int4 beside the torch rows of SmolLM2 on this CPU), and the embedded model's export is cached on disk
after a first build of a few minutes. Another model's first export can take much longer and, in fp32,
disk of four bytes per parameter (an 8B model: ~32 GB), so it is asked for by name (--backends
pytorch,ort). On a GPU the default stays pytorch: the ORT CUDA EP is not carried by the CPU wheel.
Torch-free: the device type comes from the caller.
"""
from __future__ import annotations

from dataclasses import replace

from harness.models.spec import EMBEDDED_DEFAULT
from harness.options import AUTO_BACKENDS, ORT_DEFAULT_VARIANTS, SweepAxes


def ort_import_error() -> str | None:
    """Why onnxruntime-genai does not import here, or None."""
    try:
        import onnxruntime_genai  # noqa: F401
    except (ImportError, OSError) as e:      # OSError: a wheel whose shared library does not load
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


def resolve_backends(axes: SweepAxes, device_type: str, executor: str = "local",
                     ort_error=None) -> tuple[SweepAxes, str | None]:
    """(axes with concrete backends, one line saying why ort was left out, or None). Axes that name
    their backends come back unchanged. `ort_error`: ort_import_error unless given (tests)."""
    if axes.backends != (AUTO_BACKENDS,):
        return axes, None
    torch_only = replace(axes, backends=("pytorch",),
                         backend_variants=tuple(p for p in axes.backend_variants if p.startswith("pytorch=")))
    why = _why_not_ort(axes, device_type, executor, ort_error)
    if why:
        return torch_only, f"--backends auto: no ort rows ({why}); ask for them with --backends pytorch,ort"
    given = axes.variants_by_backend().get("ort")
    ort_variants = given if given is not None else tuple(v for v in ORT_DEFAULT_VARIANTS if v in axes.variants)
    if not ort_variants:
        return torch_only, (f"--backends auto: no ort rows (ort runs {', '.join(ORT_DEFAULT_VARIANTS)} by default, "
                            f"none of them is in --variants {','.join(axes.variants)})")
    pairs = tuple(p for p in axes.backend_variants if not p.startswith("ort=")) + tuple(f"ort={v}" for v in ort_variants)
    return replace(axes, backends=("pytorch", "ort"), backend_variants=pairs), None


def _why_not_ort(axes: SweepAxes, device_type: str, executor: str, ort_error) -> str | None:
    if device_type != "cpu":
        return f"the run is on {device_type}; auto adds ort on CPU runs only"
    if executor != "local":
        return f"--executor {executor}: the nodes' devices are not known here"
    if axes.models != (EMBEDDED_DEFAULT,):
        return f"auto adds ort for the embedded default model {EMBEDDED_DEFAULT} only (a first export of another "\
               "model can take long and, in fp32, 4 bytes of disk per parameter)"
    err = (ort_error or ort_import_error)()
    if err:
        return f"onnxruntime-genai does not import ({err}); install the [ort] extra"
    return None
