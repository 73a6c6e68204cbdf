"""The planner's GPU count and tensor-parallel decode projection, on crafted profiles (no GPU)."""
from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from harness.cli.profiles import plan as plan_cli
from harness.models.presets import PRESETS, SMOLLM2_135M
from harness.plan import Workload, parse_variant, project
from harness.plan.multigpu import Interconnect, gpus_needed, load_interconnects, per_gpu_need, project_tp
from harness.profiles import load_profiles

L8B, L70B = PRESETS["llama-3.1-8b"], PRESETS["llama-3.1-70b"]
LINK = Interconnect("test link", 100e9, 5e-6, "crafted")
BF16 = parse_variant("baseline")


@pytest.fixture(scope="module")
def base():
    return load_profiles()["h100-sxm-80gb"]


def crafted(base, memory_gb, bw=1e12, pid="crafted-gpu"):
    return dataclasses.replace(base, id=pid, memory_bytes=int(memory_gb * 1e9), bandwidth_bytes_per_s=bw)


@pytest.mark.parametrize("memory_gb, expected", [(40, 1), (12, 2), (6, 4), (3.5, 8), (1, None)])
def test_gpus_needed_is_the_smallest_count_that_fits(base, memory_gb, expected):
    p = crafted(base, memory_gb)
    w = Workload("synthetic:llama-3.1-8b", L8B, 2048, 1)
    row = project(p, BF16, w)
    n = gpus_needed(p, row, L8B.num_key_value_heads)
    assert n == expected
    usable = row.memory_usable_bytes
    if n is not None:
        assert per_gpu_need(row, n) <= usable
        if n > 1:
            assert per_gpu_need(row, n // 2) > usable


def test_gpus_needed_respects_kv_head_split(base):
    # smollm2-135m has 3 KV heads: only 1 GPU splits them evenly among 1, 2, 4, 8
    w = Workload("synthetic:smollm2-135m", SMOLLM2_135M, 2048, 64)
    row = project(base, BF16, w)
    tiny = crafted(base, (row.memory_need_bytes / 1e9) * 0.8)
    assert gpus_needed(tiny, project(tiny, BF16, w), 3) is None
    assert "do not split over 2" in project_tp(tiny, BF16, w, 2, links={tiny.id: LINK}).note


def test_tp_decode_splits_bytes_and_adds_two_allreduces_per_layer(base):
    p = crafted(base, 80, bw=2e12)
    w = Workload("synthetic:llama-3.1-70b", L70B, 4096, 4)
    one = project(dataclasses.replace(p, memory_bytes=p.memory_bytes * 4), BF16, w)   # whole model, one GPU's step
    tp = project_tp(p, BF16, w, 4, links={p.id: LINK})
    ar = 2 * L70B.num_hidden_layers * (5e-6 + 2 * 3 / 4 * 4 * L70B.hidden_size * 2 / 100e9)
    assert tp.allreduce_s == pytest.approx(ar)
    assert tp.decode_tok_s == pytest.approx(4 / (4 / one.decode_tok_s / 4 + ar))
    assert tp.fits is True and "all-reduces" in tp.note and "crafted" in tp.note
    two = project_tp(p, BF16, w, 2, links={p.id: LINK})
    assert two.fits is False and "does not fit" in two.note      # 141 GB of weights over two 80 GB boards


def test_no_interconnect_no_tp_figure(base):
    p = crafted(base, 80)
    tp = project_tp(p, BF16, Workload("synthetic:llama-3.1-70b", L70B, 4096, 1), 2, links={})
    assert tp.decode_tok_s is None and "interconnect not published" in tp.note
    assert project_tp(p, BF16, Workload("synthetic:llama-3.1-8b", L8B, 2048, 1), 1, links={}).decode_tok_s


def test_interconnect_file_loads():
    links = load_interconnects()
    assert links["h200-sxm-141gb"].bandwidth_bytes_per_s == 450e9 and "nvidia.com" in links["h200-sxm-141gb"].source


def test_plan_cli_gpus(tmp_path):
    args = ["--model", "synthetic:llama-3.1-70b", "--context", "8192", "--batch", "8", "--format", "json",
            "--profiles", "h200-sxm-141gb,l40s-48gb", "--out", str(tmp_path)]
    res = CliRunner().invoke(plan_cli, args + ["--gpus", "auto"])
    assert res.exit_code == 0, res.output
    rows = {r["profile"]: r for r in json.loads(res.stdout)}
    assert rows["h200-sxm-141gb"]["gpus_needed"] == 2 and rows["h200-sxm-141gb"]["tp_decode_tok_s"] > 0
    assert rows["l40s-48gb"]["tp_decode_tok_s"] is None and "interconnect not published" in rows["l40s-48gb"]["tp_note"]
    plain = CliRunner().invoke(plan_cli, args)
    assert json.loads(plain.stdout)[0]["gpus_needed"] == 2 and json.loads(plain.stdout)[0]["tp_gpus"] is None
    bad = CliRunner().invoke(plan_cli, args + ["--gpus", "two"])
    assert bad.exit_code == 2 and "--gpus" in bad.output
