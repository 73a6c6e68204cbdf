"""Several GPUs of one profile: how many a model needs, and decode with tensor parallelism over N.

- GPUs needed: the smallest N (1, 2, 4, 8: N must divide the KV heads, so that K/V split evenly) with
  weights / N + KV / N + workspace <= usable memory of one GPU. The workspace is not split (each GPU
  holds the activations of the tokens in flight) and the embedding is counted split like the rest.
- TP decode (Megatron-style: column-parallel QKV/up, row-parallel O/down): each GPU reads weights / N
  and KV / N per step, in the single-GPU model (roofline, or the calibration curves where given), plus
  2 all-reduces per layer (after attention and after the MLP) of batch x hidden x 2 bytes (bf16),
  each latency + 2 (N - 1) / N x bytes / link bandwidth (ring all-reduce). The lm_head's gather is
  left out (one per step, not per layer).
- Interconnect figures come from harness/plan/interconnect.yaml (vendor bandwidth; latency an
  assumption stated there). Without an entry: "interconnect not published", no TP figure.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml

from harness.plan.roofline import PlanRow, Workload, project
from harness.plan.transfer import project_decode
from harness.profiles.schema import Profile
from harness.variants.spec import VariantSpec

INTERCONNECT_FILE = Path(__file__).with_name("interconnect.yaml")
GPU_COUNTS = (1, 2, 4, 8)
ACTIVATION_BYTES = 2   # bf16 activations in the all-reduce


@dataclass(frozen=True)
class Interconnect:
    kind: str
    bandwidth_bytes_per_s: float   # one direction, per GPU
    latency_s: float
    source: str


@lru_cache(maxsize=4)
def load_interconnects(path: Path = INTERCONNECT_FILE) -> dict[str, Interconnect]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    try:
        return {pid: Interconnect(str(d["kind"]), float(d["bandwidth_bytes_per_s"]), float(d["latency_s"]),
                                  str(d["source"])) for pid, d in data.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad interconnect entry ({type(e).__name__}: {e})") from None


@dataclass
class TPProjection:
    gpus: int
    fits: bool | None
    per_gpu_need_bytes: int
    decode_tok_s: float | None       # roofline ceiling incl. the all-reduces
    curve_decode_tok_s: float | None  # through calibration curves, where a curve exists
    allreduce_s: float | None        # all-reduce time per decode step
    note: str


def per_gpu_need(row: PlanRow, n: int) -> int:
    return round((row.weight_bytes + row.kv_cache_bytes) / n + row.workspace_bytes)


def gpus_needed(p: Profile, row: PlanRow, kv_heads: int) -> int | None:
    """Smallest N of GPU_COUNTS that fits, None when even 8 do not or the memory is not published."""
    if not row.memory_usable_bytes:
        return None
    for n in GPU_COUNTS:
        if kv_heads % n == 0 and per_gpu_need(row, n) <= row.memory_usable_bytes:
            return n
    return None


def allreduce_step_s(link: Interconnect, layers: int, batch: int, hidden: int, n: int) -> float:
    if n == 1:
        return 0.0
    size = batch * hidden * ACTIVATION_BYTES
    one = link.latency_s + 2 * (n - 1) / n * size / link.bandwidth_bytes_per_s
    return 2 * layers * one


def project_tp(p: Profile, v: VariantSpec, w: Workload, n: int, cals=None,
               links: dict[str, Interconnect] | None = None) -> TPProjection:
    row = project(p, v, w)
    # the one-GPU step of the whole model, even where it does not fit one GPU: projected on a profile with
    # N times the memory (only the figures are used; the fit is checked per GPU below)
    whole = row if row.decode_tok_s or not p.memory_bytes else project(replace(p, memory_bytes=p.memory_bytes * n), v, w)
    shape = w.shape
    need = per_gpu_need(row, n)
    fits = None if not row.memory_usable_bytes else need <= row.memory_usable_bytes
    if shape.num_key_value_heads % n:
        return TPProjection(n, fits, need, None, None, None,
                            f"{shape.num_key_value_heads} KV heads do not split over {n} GPUs")
    links = load_interconnects() if links is None else links
    link = links.get(p.id)
    if n > 1 and link is None:
        return TPProjection(n, fits, need, None, None, None, f"{p.id}: interconnect not published")
    ar = allreduce_step_s(link, shape.num_hidden_layers, w.batch_size, shape.hidden_size, n) if n > 1 else 0.0
    B = w.batch_size
    dec = None
    if whole.decode_tok_s:
        dec = B / (B / whole.decode_tok_s / n + ar)   # the roofline step is memory-bound at decode: bytes split N ways
    curve = None
    note = f"TP over {n}: weights and KV / {n} per GPU"
    if n > 1:
        note += (f"; 2 x {shape.num_hidden_layers} all-reduces of {B * shape.hidden_size * ACTIVATION_BYTES / 1e3:.0f} kB "
                 f"= {ar * 1e3:.2f} ms/step over {link.kind} ({link.bandwidth_bytes_per_s / 1e9:.0f} GB/s per direction, "
                 f"{link.latency_s * 1e6:.0f} us assumed latency; {link.source})")
    if cals:
        pr = project_decode(cals, p, v.name, B, row.weight_bytes / n, row.kv_cache_bytes / n)
        if pr.ok:
            curve = B / (B / pr.tok_s + ar)
        note += f"; curves: {pr.source}"
    if fits is False:
        note += f"; does not fit: {need / 1e9:.1f} GB per GPU > {row.memory_usable_bytes / 1e9:.1f} GB usable"
    return TPProjection(n, fits, need, dec, curve, ar, note)


def apply_multi_gpu(rows: list[PlanRow], profiles: dict[str, Profile], variants: dict[str, VariantSpec],
                    w: Workload, gpus: str | None, cals=None) -> list[PlanRow]:
    """Fill gpus_needed on every row; with `gpus` ('auto' = the count needed, or a number) the TP columns."""
    for row in rows:
        p = profiles[row.profile]
        if row.status == "unsupported":
            continue
        row.gpus_needed = gpus_needed(p, row, w.shape.num_key_value_heads)
        if gpus is None:
            continue
        n = row.gpus_needed if gpus == "auto" else int(gpus)
        if n is None:
            row.tp_note = "does not fit on 8 GPUs" if row.memory_usable_bytes else "memory not published"
            continue
        tp = project_tp(p, variants[row.variant], w, n, cals)
        row.tp_gpus, row.tp_decode_tok_s, row.tp_curve_decode_tok_s = tp.gpus, tp.decode_tok_s, tp.curve_decode_tok_s
        row.tp_allreduce_s, row.tp_note = tp.allreduce_s, tp.note
    return rows
