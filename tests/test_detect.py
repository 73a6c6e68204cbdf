"""Detection with a scripted NVML and a fake /proc/cpuinfo and psutil (no GPU needed)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

import harness.profiles.detection as det
from harness.cli.profiles import detect as detect_cli
from harness.profiles import detect, load_profiles


class FakeNVML:
    """The slice of pynvml detection calls, answering from a script."""

    def __init__(self, name="NVIDIA H100 80GB HBM3", total=85_520_809_984, cc=(9, 0), count=1, fail_init=False):
        self.name, self.total, self.cc, self.count, self.fail_init = name, total, cc, count, fail_init
        self.shutdown_calls = 0

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        assert i == 0
        return "handle0"

    def nvmlDeviceGetName(self, h):
        return self.name

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=self.total, free=self.total, used=0)

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return self.cc

    def nvmlSystemGetDriverVersion(self):
        return "580.159.04"


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_bf16 amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz
"""


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    monkeypatch.setattr(det, "CPUINFO_PATH", info)
    monkeypatch.setattr(det, "psutil", SimpleNamespace(
        cpu_count=lambda logical=True: 112 if logical else 56,
        virtual_memory=lambda: SimpleNamespace(total=512_000_000_000)))
    return info


@pytest.fixture(scope="module")
def profiles():
    return load_profiles()


def test_lab_h100_matched_by_nvml_name(monkeypatch, profiles):
    nvml = FakeNVML()
    monkeypatch.setattr(det, "pynvml", nvml)
    d = detect(profiles=profiles)
    assert d.profile.id == "h100-sxm-80gb"
    assert d.gpu.name == "NVIDIA H100 80GB HBM3" and d.gpu.compute_capability == "9.0"
    assert "by NVML name" in d.reason and "memory agrees" in d.reason and "compute capability agrees" in d.reason
    assert "85.5 GB" in d.reason
    assert nvml.shutdown_calls == 1


def test_bytes_name_from_old_pynvml(monkeypatch, profiles):
    monkeypatch.setattr(det, "pynvml", FakeNVML(name=b"NVIDIA A100-SXM4-80GB", total=85_899_345_920, cc=(8, 0)))
    assert detect(profiles=profiles).profile.id == "a100-sxm-80gb"


def test_name_match_with_memory_mismatch_says_so(monkeypatch, profiles):
    # a MIG slice: same name, a fraction of the memory
    monkeypatch.setattr(det, "pynvml", FakeNVML(total=10_000_000_000))
    d = detect(profiles=profiles)
    assert d.profile.id == "h100-sxm-80gb" and "memory DIFFERS" in d.reason


def test_unlisted_name_matched_by_capability_memory_and_name(monkeypatch, profiles):
    monkeypatch.setattr(det, "pynvml", FakeNVML(name="NVIDIA A100 80GB PCIe", total=85_899_345_920, cc=(8, 0)))
    d = detect(profiles=profiles)
    assert d.profile.id == "a100-sxm-80gb"
    assert "no profile lists this NVML name" in d.reason and "compute capability" in d.reason


def test_ambiguous_capability_and_memory_is_not_guessed(monkeypatch, profiles):
    # 80 GB and sm_90, but nothing in the name tells H100 SXM from H100 PCIe
    monkeypatch.setattr(det, "pynvml", FakeNVML(name="NVIDIA Hopper Engineering Sample", total=85_520_809_984))
    d = detect(profiles=profiles)
    assert d.profile.id.startswith("nvml-") and "ambiguous" in d.reason
    assert "h100-pcie-80gb" in d.reason and "h100-sxm-80gb" in d.reason


def test_unknown_gpu_gets_a_generated_profile_with_unknowns(monkeypatch, profiles):
    monkeypatch.setattr(det, "pynvml", FakeNVML(name="NVIDIA GeForce RTX 3060", total=12_884_901_888, cc=(8, 6)))
    d = detect(profiles=profiles)
    p = d.profile
    assert p.id == "nvml-nvidia-geforce-rtx-3060"
    assert p.memory_bytes == 12_884_901_888 and p.compute_capability == "8.6"
    assert p.bandwidth_bytes_per_s is None and all(v is None for v in p.peak_flops.values())
    assert "generated profile" in d.reason


def test_cpu_only_machine_builds_cpu_profile(monkeypatch, fake_cpu, profiles):
    monkeypatch.setattr(det, "pynvml", FakeNVML(fail_init=True))
    d = detect(profiles=profiles)
    p = d.profile
    assert p.id == "cpu-intel-xeon-platinum-8480"
    assert p.class_ == "cpu" and p.baseline_format == "fp32"
    assert p.memory_bytes == 512_000_000_000
    assert p.bandwidth_bytes_per_s is None and p.power_w is None
    assert all(v is None for v in p.peak_flops.values())
    assert p.supports("fp8") is False and p.supports("sparse_2to4") is False
    assert "56 physical / 112 logical cores" in p.notes and "amx_bf16" in p.notes
    assert "NVML unavailable" in d.reason and "unknown: bandwidth, power, peak throughput" in d.reason


def test_cpu_profile_takes_user_supplied_figures(monkeypatch, fake_cpu, profiles):
    monkeypatch.setattr(det, "pynvml", None)  # pynvml not importable
    d = detect(profiles=profiles, cpu_power_w=350.0, cpu_bandwidth_bytes_per_s=3.07e11, cpu_peak_flops={"fp32": 5e12})
    p = d.profile
    assert (p.power_w, p.bandwidth_bytes_per_s, p.peak_flops["fp32"]) == (350.0, 3.07e11, 5e12)
    assert "user-supplied" in p.sources and "pynvml not importable" in d.reason
    assert "unknown: nothing" in d.reason


def test_no_gpu_reported_falls_back_to_cpu(monkeypatch, fake_cpu, profiles):
    monkeypatch.setattr(det, "pynvml", FakeNVML(count=0))
    d = detect(profiles=profiles)
    assert d.profile.class_ == "cpu" and "NVML reports no GPU" in d.reason


def test_users_profile_for_their_cpu_wins(monkeypatch, fake_cpu, tmp_path):
    src = yaml.safe_load(open(load_profiles()["h100-sxm-80gb"].source_file))
    src.update(id="my-xeon", name="My Xeon", **{"class": "cpu"}, baseline_format="fp32",
               cpu_model_names=["Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz"], nvml_names=[])
    (tmp_path / "my-xeon.yaml").write_text(yaml.safe_dump(src))
    monkeypatch.setattr(det, "pynvml", FakeNVML(fail_init=True))
    d = detect(tmp_path)
    assert d.profile.id == "my-xeon" and "listed by profile my-xeon" in d.reason


def test_detect_cli_text_and_json(monkeypatch, fake_cpu):
    monkeypatch.setattr(det, "pynvml", FakeNVML())
    res = CliRunner().invoke(detect_cli, [])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("profile: h100-sxm-80gb (NVIDIA H100 SXM5 80GB)\nwhy: NVML reports")

    monkeypatch.setattr(det, "pynvml", FakeNVML(fail_init=True))
    res = CliRunner().invoke(detect_cli, ["--format", "json", "--cpu-bandwidth-gb-s", "50", "--cpu-power-w", "120"])
    out = json.loads(res.stdout)
    assert out["profile"] == "cpu-intel-xeon-platinum-8480"
    assert out["detail"]["bandwidth_bytes_per_s"] == 50e9 and out["detail"]["power_w"] == 120


def test_real_machine_detection_never_raises():
    d = detect()
    assert d.profile.id and d.reason
