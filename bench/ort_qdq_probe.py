"""Why static QDQ int8 (the ort backend's int8-static) destroys SmolLM2's quality: the measurement.

Usage: python bench/ort_qdq_probe.py FP32_DIR OUT_DIR [config ...]
FP32_DIR is the ort cache entry of the fp32 baseline (the folder holding model.onnx and genai_config.json,
e.g. from an `--backends ort --variants baseline` run; its path is in key.json's folder under
~/.cache/harness/ort). Each config quantizes the fp32 graph with onnxruntime.quantization.quantize_static
(the backend's calibration: 8 x 128 corpus-tail tokens, empty KV cache) with one option changed, then
scores it against the fp32 graph's own logits on 2 x 128 corpus-head tokens: mean KL(P_fp32 || P_q) in
nats and top-1 agreement. It first prints the calibrated MinMax range of the largest MatMul inputs:
per-tensor u8 activations spend 256 levels on that range.

Configs (onnxruntime.quantization's documented options): minmax (the backend's recipe), no-lm-head,
no-down-proj, no-down-no-lm, percentile (99.999th percentile instead of MinMax), symmetric
(ActivationSymmetric), a16w8 (QUInt16 activations through the com.microsoft Q/DQ ops).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = ("minmax", "no-lm-head", "no-down-proj", "no-down-no-lm", "percentile", "symmetric", "a16w8")


def _ids(from_end: bool, n: int, seq: int) -> np.ndarray:
    from harness.backends.pytorch.backend import CALIBRATION_SEED
    from harness.corpus import load_corpus
    from harness.models import load_model

    loaded = load_model("smollm2-135m")
    name, text = load_corpus()
    ids, _ = loaded.prompt_ids(name, text, n, seq, seed=CALIBRATION_SEED, from_end=from_end)
    return ids.cpu().numpy()


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _logits(path: Path, ids: np.ndarray, kv) -> np.ndarray:
    from harness.backends.ort.export import empty_feed, input_names

    sess, names = _session(path), input_names(path)
    return np.concatenate([sess.run(["logits"], empty_feed(row[None, :], kv, names))[0] for row in ids])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _score(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    lp, lq = _log_softmax(ref), _log_softmax(got)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return float(kl.mean()), float((ref.argmax(-1) == got.argmax(-1)).mean())


def _matmuls(model_path: Path) -> dict[str, str]:
    import onnx

    g = onnx.load(str(model_path), load_external_data=False).graph
    return {n.name: n.input[0] for n in g.node if n.op_type == "MatMul"}


def ranges(model_path: Path, cache: Path, top: int = 8) -> list[str]:
    """The calibrated MinMax range of each MatMul's activation input (from quantize_static's
    calibration cache), widest first."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache)
    rows = []
    for name in set(_matmuls(model_path).values()):
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in data[name].range_value)
        rows.append((hi - lo, name, lo, hi))
    rows.sort(reverse=True)
    out = [f"{len(rows)} MatMul activation inputs; median MinMax range {np.median([r[0] for r in rows]):.3g}"]
    out += [f"  {name}: [{lo:.4g}, {hi:.4g}] -> u8 step {(hi - lo) / 255:.3g}" for _, name, lo, hi in rows[:top]]
    return out


def quantize(fp32: Path, out: Path, config: str, calib: np.ndarray, kv) -> Path:
    """The quantized model of `config` in `out`; returns the calibration cache used (shared by the
    configs of one calibration method, beside `out`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from harness.backends.ort.export import _calibration_reader, _quiet_root_logger, input_names

    nodes = _matmuls(fp32 / "model.onnx")
    down = [n for n in nodes if "down_proj" in n]
    head = [n for n in nodes if "lm_head" in n]
    exclude = {"no-lm-head": head, "no-down-proj": down, "no-down-no-lm": down + head}.get(config, [])
    extra = {"ActivationSymmetric": config == "symmetric", "WeightSymmetric": True}
    act = QuantType.QUInt8
    method = CalibrationMethod.Percentile if config == "percentile" else CalibrationMethod.MinMax
    if config == "percentile":
        extra["CalibPercentile"] = 99.999
    if config == "a16w8":
        act, extra["UseQDQContribOps"] = QuantType.QUInt16, True
    out.mkdir(parents=True, exist_ok=True)
    cache = out.parent / f"calibration-{method.name.lower()}.json"
    with _quiet_root_logger():
        quantize_static(str(fp32 / "model.onnx"), str(out / "model.onnx"),
                        _calibration_reader(calib, kv, input_names(fp32 / "model.onnx")),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"], per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=act, calibrate_method=method,
                        nodes_to_exclude=exclude, use_external_data_format=True, extra_options=extra,
                        calibration_providers=["CPUExecutionProvider"], calibration_cache_path=cache)
    return cache


def main(argv: list[str]) -> int:
    from harness.backends.ort.export import kv_layout
    from harness.backends.ort.recipes import CALIBRATION_SEQS, CALIBRATION_TOKENS

    if len(argv) < 2 or not (Path(argv[0]) / "model.onnx").is_file():
        print("usage: python bench/ort_qdq_probe.py FP32_DIR OUT_DIR [config ...]", file=sys.stderr)
        return 2
    fp32, root = Path(argv[0]), Path(argv[1])
    configs = argv[2:] or list(CONFIGS)
    bad = sorted(set(configs) - set(CONFIGS))
    if bad:
        print(f"unknown config(s) {bad}; configs: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    kv = kv_layout(fp32)
    calib = _ids(True, CALIBRATION_SEQS, CALIBRATION_TOKENS)
    evalx = _ids(False, 2, 128)
    ref = _logits(fp32 / "model.onnx", evalx, kv)
    results = {}
    for config in configs:
        t0 = time.perf_counter()
        cache = quantize(fp32, root / config, config, calib, kv)
        if config == configs[0]:
            print("\n".join(ranges(fp32 / "model.onnx", cache)), flush=True)
        kl, top1 = _score(ref, _logits(root / config / "model.onnx", evalx, kv))
        results[config] = {"kl_mean": kl, "top1": top1}
        print(f"{config}: mean KL {kl:.4g} nats, top-1 {top1:.1%} ({time.perf_counter() - t0:.0f} s)", flush=True)
    (root / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
