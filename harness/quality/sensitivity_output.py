"""Views of a SensitivityReport: sensitivity.json, policy.txt (read by Policy.from_file),
sensitivity.png and the printed table. Nothing here measures."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from harness.quality.sensitivity import SensitivityReport

CHART_MAX_GROUPS = 40   # the ranked chart shows the most sensitive ones when there are more


def policy_text(report: SensitivityReport) -> str:
    step = report.proposed
    head = [
        f"# Mixed-precision policy proposed by `harness sensitivity` for {report.variant} on {report.model}.",
        f"# Keeps the {step.k} most sensitive {report.granularity} group(s) in high precision.",
        f"# Measured on {report.tokens} positions: mean KL {step.kl_mean:.5f} nats "
        f"(variant alone {report.steps[0].kl_mean:.5f}); {step.bytes_saved / 1e6:.1f} MB saved vs baseline "
        f"(variant alone {report.steps[0].bytes_saved / 1e6:.1f} MB).",
        f"# Use: --variants '{report.variant}@<path to this file>'. One fnmatch pattern of module names per line.",
    ]
    return "\n".join(head + list(step.patterns)) + "\n"


def to_json(report: SensitivityReport) -> dict:
    d = asdict(report)
    d["kl_units"] = "nats, mean KL(P_baseline || P_variant) over the scored positions"
    d["bytes_units"] = "bytes, resident parameters and buffers measured from the tensors"
    return d


def table(report: SensitivityReport, limit: int = 15) -> str:
    lines = [f"{report.variant} on {report.model}: {len(report.ranked)} {report.granularity} groups, "
             f"{report.tokens} positions, baseline perplexity {report.baseline_perplexity:.3f}",
             "", f"{'rank':>4}  {'group':<44} {'mean KL':>10} {'p99 KL':>10} {'top-1':>7}"]
    for i, s in enumerate(report.ranked[:limit]):
        lines.append(f"{i + 1:>4}  {s.group.name:<44} {s.kl_mean:>10.3e} {s.kl_p99:>10.3e} {s.top1_agreement:>7.3f}")
    if len(report.ranked) > limit:
        lines.append(f"      ... {len(report.ranked) - limit} more in sensitivity.json")
    lines += ["", f"{'k':>3}  {'mean KL':>10} {'KL recovered':>13} {'MB saved':>10} {'top-1':>7} {'ppl':>9}  kept"]
    for s in report.steps:
        mark = "  <- proposed" if s.k == report.proposed_k else ""
        kept = f"+{s.kept[-1]}" if s.kept else "(variant everywhere)"
        lines.append(f"{s.k:>3}  {s.kl_mean:>10.3e} {s.kl_recovered:>13.3e} {s.bytes_saved / 1e6:>10.1f} "
                     f"{s.top1_agreement:>7.3f} {s.perplexity:>9.3f}  {kept}{mark}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def chart(report: SensitivityReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = report.ranked[:CHART_MAX_GROUPS]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.22 * len(shown) + 1.5)),
                                   gridspec_kw={"width_ratios": [3, 2]})
    names = [s.group.name for s in shown][::-1]
    ax1.barh(range(len(shown)), [s.kl_mean for s in shown][::-1], color="#d8843b")
    ax1.set_yticks(range(len(shown)), names, fontsize=7)
    ax1.set_xlabel("mean KL vs baseline (nats), variant on this group alone")
    more = f" (top {len(shown)} of {len(report.ranked)})" if len(report.ranked) > len(shown) else ""
    ax1.set_title(f"{report.variant}: sensitivity per {report.granularity}{more}", fontsize=10)
    xs = [s.bytes_saved / 1e6 for s in report.steps]
    ys = [s.kl_mean for s in report.steps]
    ax2.plot(xs, ys, marker="o", color="#3b7dd8")
    for s, x, y in zip(report.steps, xs, ys):
        ax2.annotate(f"k={s.k}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    p = report.proposed
    ax2.plot([p.bytes_saved / 1e6], [p.kl_mean], marker="*", markersize=14, color="#6aa84f", label="proposed")
    if report.target_kl is not None:
        ax2.axhline(report.target_kl, color="grey", linestyle="--", linewidth=1, label="target mean KL")
    ax2.set_xlabel("MB saved vs baseline (measured)")
    ax2.set_ylabel("mean KL vs baseline (nats)")
    ax2.set_title("keeping the k most sensitive groups in high precision", fontsize=10)
    ax2.legend(fontsize=8)
    fig.suptitle(f"{report.model}, {report.tokens} positions", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(report: SensitivityReport, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"policy": out_dir / "policy.txt", "json": out_dir / "sensitivity.json",
             "chart": out_dir / "sensitivity.png"}
    paths["policy"].write_text(policy_text(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(to_json(report), indent=2) + "\n", encoding="utf-8")
    chart(report, paths["chart"])
    return paths
