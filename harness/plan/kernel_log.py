"""Kernel timings of bench/kernels_gpu.py (its text log or its --out JSON) -> microbenchmark Records and
kernel curves of the variants that run those kernels.

bench/kernels_gpu.py times one linear layer per call (best of 5 replays of a CUDA graph of 20 calls,
CUDA events) at the four linear shapes of one block of a preset (`block_shapes`: qkv, o, gate_up, down,
N x K; Llama-3.1-8B's 6144x4096, 4096x4096, 28672x4096, 4096x14336 unless its first line says
`shapes of <preset>: ...`, which logs before that line existed do not) and M activation rows. A line reads

    <kernel name>   <shape>  M=<M>  <us> us  <GB/s> GB/s  <TFLOP/s> TFLOP/s

(GB/s: weight bytes read per call / time, so weight bytes = GB/s x us x 1e3, good to the log's rounding,
about 0.5%); the JSON has the same fields per row and the exact weight bytes. Failed kernels print
`<kernel> <shape> <M> failed: ...` / `<kernel> <shape> build failed: ...` and become failed Records.

Records: backend "microbench", model "<preset>:<shape>", batch_size M, decode_tok_s = M / seconds per
call (the convention of harness/microbench.py), one Record per variant the kernel stands for
(`KERNEL_VARIANTS`). Curves: phase "kernel", other(M) of one whole block's linears (the four shapes'
seconds and bytes summed at each M; all layers of the model are alike, so this is the model's GEMM
other(M)); an M where a shape is missing gets no point. One curve per (variant, kernel, preset): the
curve names the preset whose block it timed, and a projection takes the curves of one kernel at several
block sizes by the projected model's block parameters (DeviceCalibration.sized_kernel_at).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from harness.plan.curves import DEQUANT_PHASE, MICROBENCH, Curve, Point
from harness.plan.kernel_names import DEQUANT_PREFIX
from harness.records import Record

PRESET = "llama-3.1-8b"   # the block bench/kernels_gpu.py times unless its log's first line names another
SHAPE_NAMES = ("qkv", "o", "gate_up", "down")
_HEADER = re.compile(r"^shapes of (?P<preset>\S+):")


def block_shapes(preset: str) -> dict[str, tuple[int, int]]:
    """{name: (N, K)} of one decoder block of `preset` as the lean decoder runs it (lean.fuse_projections):
    ArchShape.fused_linear_shapes, named as bench/kernels_gpu.py names them (qkv, o, gate_up, down)."""
    from harness.models.presets import PRESETS
    if preset not in PRESETS:
        raise ValueError(f"{preset!r}: not a preset ({', '.join(sorted(PRESETS))})")
    return {name.removesuffix("_proj"): (out, inp) for name, inp, out in PRESETS[preset].fused_linear_shapes()}


# kernel name prefix in bench/kernels_gpu.py -> the registry variants that run it (harness/variants/catalog.py,
# kernel_of). `int4-wo` and `fp8-wo` choose their kernel by measurement at the cell's batch, so they get no
# curve of their own here: the planner projects them with the fastest of their explicit kernels' curves at
# each M, or, validating a record, with the curve of the kernel the record names (harness/plan/transfer.py).
# int8 GemLite has no variant.
KERNEL_VARIANTS = (
    # GemLite's dequantized prefill path (harness/variants/gemlite.py): curves of phase DEQUANT_PHASE
    ("dequantized prefill: int4 GemLite", ("int4-wo[gemlite]",)),
    ("dequantized prefill: fp8 GemLite", ("fp8-wo[gemlite]",)),
    ("bf16 cuBLAS", ("baseline",)),
    ("int4 tinygemm", ("int4-wo[tinygemm]",)),
    ("int4 CUTLASS", ("int4-wo[cutlass]",)),
    ("int4 GemLite", ("int4-wo[gemlite]",)),
    ("fp8 GemLite", ("fp8-wo[gemlite]",)),
    ("fp8 torchao", ("fp8-wo[torchao]",)),
    ("w4a8 CUTLASS", ("w4a8",)),
)

_OK = re.compile(r"^(?P<kernel>\S.*?)\s+(?P<shape>qkv|o|gate_up|down)\s+M=\s*(?P<m>\d+)\s+(?P<us>[\d.]+) us\s+"
                 r"(?P<gbps>[\d.]+) GB/s\s+(?P<tflops>[\d.]+) TFLOP/s\s*$")
_FAIL = re.compile(r"^(?P<kernel>\S.*?) (?P<shape>qkv|o|gate_up|down) (?:(?P<m>\d+) )?(?:build )?failed: (?P<error>.*)$")


def variants_of(kernel: str) -> tuple[str, ...]:
    return next((vs for prefix, vs in KERNEL_VARIANTS if kernel.startswith(prefix)), ())


def preset_of_log(text: str) -> str:
    """The preset a kernels_gpu.py log timed (its `shapes of <preset>:` line; Llama-3.1-8B before it had one)."""
    for line in text.splitlines()[:5]:
        if (g := _HEADER.match(line.strip())) is not None:
            return g["preset"]
    return PRESET


def rows_from_log(text: str) -> list[dict]:
    """Rows in the JSON's shape ({kernel, shape, N, K, M, us, weight_bytes, model} or {kernel, shape, M?,
    error, model}); model: the preset whose block was timed."""
    rows, preset = [], preset_of_log(text)
    shapes = block_shapes(preset)
    for line in text.splitlines():
        if (g := _OK.match(line.strip())) is not None:
            n, k = shapes[g["shape"]]
            us = float(g["us"])
            rows.append({"kernel": g["kernel"].strip(), "shape": g["shape"], "N": n, "K": k, "M": int(g["m"]),
                         "us": us, "weight_bytes": round(float(g["gbps"]) * us * 1e3), "bytes_from": "log GB/s x us",
                         "model": preset})
        elif (g := _FAIL.match(line.strip())) is not None:
            rows.append({"kernel": g["kernel"].strip(), "shape": g["shape"], "error": g["error"], "model": preset,
                         **({"M": int(g["m"])} if g["m"] else {})})
    return rows


def read_rows(path: str | Path) -> tuple[list[dict], dict]:
    """(rows, header) of a kernels_gpu.py log or JSON; header: device, torch, gemlite notes where known."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{p}: not readable: {e}") from None
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
            preset = doc.get("model") or PRESET
            block_shapes(preset)
            return ([{**r, "model": r.get("model", preset)} for r in doc["rows"]],
                    {k: doc.get(k) for k in ("device", "torch", "gemlite_configs")} | {"model": preset})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{p}: not bench/kernels_gpu.py --out JSON ({type(e).__name__}: {e})") from None
    rows = rows_from_log(text)
    if not any("us" in r for r in rows):
        raise ValueError(f"{p}: no kernel timing lines (not a bench/kernels_gpu.py log?)")
    gem = next((ln for ln in text.splitlines()[:3] if "gemlite" in ln.lower()), None)
    return rows, {"device": None, "gemlite_configs": gem, "model": preset_of_log(text)}


def records_from_rows(rows: list[dict], profile: str, source: str) -> tuple[list[Record], list[str]]:
    """One Record per (row, variant of its kernel); returns the records and the rows skipped, with why."""
    out, skipped = [], []
    for r in rows:
        variants = variants_of(r["kernel"])
        if not variants:
            skipped.append(f"{r['kernel']} {r['shape']}: no registry variant runs this kernel")
            continue
        m = int(r.get("M") or 0)
        for v in variants:
            common = dict(model=f"{r.get('model', PRESET)}:{r['shape']}", variant=v, backend=MICROBENCH, profile=profile,
                          batch_size=m, prompt_tokens=0, new_tokens=0, device="cuda", dtype="bfloat16",
                          kernel=r["kernel"], decode_path="cuda-graph", prompt_source="random activations (torch.randn)",
                          timing_source="cuda_events", run_id=f"kernels-{Path(source).name}",
                          provenance={"source": source, "method": "bench/kernels_gpu.py: best of 5 replays of a "
                                      "CUDA graph of 20 calls (5 at M >= 1024), CUDA events"})
            if "error" in r:
                out.append(Record(status="failed", reason=r["error"], **common))
                continue
            s = float(r["us"]) * 1e-6
            out.append(Record(decode_tok_s=m / s, weight_bytes=int(r["weight_bytes"]), decode_s_samples=[s],
                              repeats=1, extra={"shape": r["shape"], "in_features": r["K"], "out_features": r["N"],
                                                "s_per_call": s, "weight_bytes_from": r.get("bytes_from", "json")},
                              **common))
    return out, skipped


def block_curves(records: list[Record], copy_bytes_per_s: float) -> tuple[list[Curve], list[str]]:
    """Phase-"kernel" curves of one block's four linears summed, per (variant, kernel, preset); M with a
    shape missing or failed is left out (named in the returned notes)."""
    at: dict[tuple[str, str, str], dict[int, dict[str, tuple[float, int]]]] = {}
    for r in records:
        if r.backend == MICROBENCH and r.status == "ok" and r.weight_bytes and r.decode_tok_s:
            preset, shape = r.model.split(":", 1)
            at.setdefault((r.variant, r.kernel, preset), {}).setdefault(r.batch_size, {})[shape] = (
                r.batch_size / r.decode_tok_s, r.weight_bytes)
    curves, notes = [], []
    for (variant, kernel, preset), by_m in at.items():
        pts = []
        for m, shapes in sorted(by_m.items()):
            if set(shapes) != set(SHAPE_NAMES):
                notes.append(f"{variant} ({kernel}, {preset}) M={m}: shapes "
                             f"{', '.join(sorted(set(SHAPE_NAMES) - set(shapes)))} not measured: no point")
                continue
            s, wb = sum(t for t, _ in shapes.values()), sum(b for _, b in shapes.values())
            other = max(0.0, s - wb / copy_bytes_per_s) / (wb / copy_bytes_per_s)
            pts.append(Point(m, other, other, other, len(shapes)))
        if pts:
            phase = DEQUANT_PHASE if kernel.startswith(DEQUANT_PREFIX) else "kernel"
            curves.append(Curve(variant, kernel, phase, MICROBENCH, pts, shapes=preset))
    return curves, notes


def latest_per_kernel(records: list[Record]) -> tuple[list[Record], list[str]]:
    """Records of several kernel files, keeping for each (block preset, kernel) only the last file that timed
    that kernel at that block: a later run of a kernel (more M, a newer build) replaces its earlier timings
    instead of mixing two runs in one curve, and kernels only an earlier file has stay. Returns the records
    kept and one note per (preset, kernel) replaced."""
    last: dict[tuple[str, str], str] = {}
    for r in records:
        last[(r.model.split(":", 1)[0], r.kernel)] = r.provenance["source"]
    kept, notes = [], {}
    for r in records:
        key = (r.model.split(":", 1)[0], r.kernel)
        if r.provenance["source"] == last[key]:
            kept.append(r)
        else:
            notes[key] = f"{key[1]} at the {key[0]} block: timings of {r.provenance['source']} replaced by {last[key]}"
    return kept, list(notes.values())


def calibration_from_kernels(paths, profile, copy_bytes_per_s: float, copy_source: str,
                             step_profiles: list[str | Path] = (), commit: str = "",
                             prefill_profiles: list[str | Path] = ()):
    """A DeviceCalibration of `profile` (the device the kernels ran on) from one or more kernels_gpu.py logs
    or JSONs (a kernel timed at two presets' blocks gets a curve for each; two files of one block: a kernel
    in both is taken from the later one, `latest_per_kernel`), with the
    non-GEMM step cost fitted from `step_profiles` (harness/plan/step_cost.py), or stated as none when
    there are none, and the non-GEMM prefill cost from `prefill_profiles`, one per prefill path they ran
    (step_cost.fit_prefill_paths; without them the file projects no prefill). Returns (calibration, notes on what was left out)."""
    from datetime import datetime, timezone

    from harness.plan import step_cost
    from harness.plan.curves import DeviceCalibration

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if len({Path(p).resolve() for p in paths}) != len(paths):
        raise ValueError(f"a kernel file is given twice ({', '.join(map(str, paths))})")
    records, notes, headers = [], [], []
    for path in paths:
        rows, header = read_rows(path)
        recs, skipped = records_from_rows(rows, profile.id, str(path))
        records, notes, headers = records + recs, notes + skipped, headers + [{"file": str(path), **header}]
    records, replaced = latest_per_kernel(records)
    notes += replaced
    notes += [f"{r.variant} {r.model} M={r.batch_size}: failed: {r.reason}" for r in records if r.status != "ok"]
    curves, more = block_curves(records, copy_bytes_per_s)
    if not curves:
        raise ValueError(f"{', '.join(map(str, paths))}: no kernel of a registry variant measured at every shape")
    datasheet = profile.bandwidth_bytes_per_s or copy_bytes_per_s
    prov = {"sources": [str(p) for p in paths], "device_measured_on": f"{profile.id} ({profile.name})",
            "kernels_header": headers[0] if len(headers) == 1 else headers, "harness_commit": commit, "backend": MICROBENCH,
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "copy_bandwidth_bytes_per_s": copy_bytes_per_s, "copy_bandwidth_source": copy_source,
            "method": "phase kernel: other(M) = (s - w / copy) / (w / copy), s and w the seconds and weight bytes "
                      "of one block's four linears (qkv, o, gate_up, down) summed at M, per preset block timed; decode = "
                      "that curve on the model's GEMM bytes (curves of several block sizes: linear in log block "
                      "parameters between them) + step_cost (non-GEMM seconds per step)",
            "variants_of_kernels": {p: list(v) for p, v in KERNEL_VARIANTS}, "left_out": notes + more}
    cal = DeviceCalibration(profile.id, profile.compute_capability or profile.id, datasheet,
                            copy_bytes_per_s / datasheet, profile.peak("bf16"), curves, prov)
    cal.step_cost = step_cost.fit(list(step_profiles), cal) if step_profiles else step_cost.none()
    cal.prefill_costs = step_cost.fit_prefill_paths(list(prefill_profiles), cal)
    return cal, notes + more
