"""Multi-GPU meters against a fake two-GPU NVML: energy and VRAM summed with the per-GPU figures
kept, the interconnect named, the summed copy-bandwidth reference."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from fake_nvml import FakeClock, FakeGpu, FakePynvml

from harness.meters import nvml as nvml_mod
from harness.meters.bandwidth import Throughput
from harness.meters.gpu_energy import GpuEnergyMeter
from harness.meters.multi_gpu import MultiGpuMeter, interconnect, summed_copy_bandwidth

GIB = 2**30


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(nvml_mod, "_refs", 0)

    def install(**kw):
        clock = FakeClock()
        gpus = [FakeGpu(300.0, memory_used=40 * GIB, processes=[(111, 30 * GIB), (999, 5 * GIB)], **kw),
                FakeGpu(200.0, memory_used=38 * GIB, processes=[(222, 29 * GIB)], **kw)]
        f = FakePynvml(gpus, clock=clock)
        monkeypatch.setattr(nvml_mod, "pynvml", f)
        clock.t = f.t0 + 5.05
        return nvml_mod.open_nvml(), f, clock
    return install


def test_energy_and_vram_are_summed_with_each_gpu_kept(two_gpus):
    nv, f, clock = two_gpus(nvlinks=18)
    devs = nv.devices()
    energy = GpuEnergyMeter(devs, lambda: None, min_window_s=10.0, clock=clock, sleep=clock.sleep)
    holder = SimpleNamespace(last=None)
    m = MultiGpuMeter(devs, pids=[111, 222], energy=holder)
    m.begin()
    energy.begin("full-loop")
    clock.advance(12.0)
    f.gpus[1].memory_used = 41 * GIB                     # the device-wide figure moved; ours are per process
    holder.last = energy.end()
    w = m.end()
    assert [g.energy_j for g in w.per_gpu] == pytest.approx([3600.0, 2400.0])   # 12 s x 300 W, 12 s x 200 W
    assert w.energy_j == pytest.approx(6000.0)
    # the ranks' own processes (111 on GPU 0, 222 on GPU 1); another process (999) is not ours
    assert [g.peak_vram_bytes for g in w.per_gpu] == [30 * GIB, 29 * GIB]
    assert w.peak_vram_bytes == 59 * GIB and w.peak_vram_source == "nvml_process"
    fields = m.record_fields(w)
    assert fields["gpus"] == 2 and fields["peak_vram_bytes"] == 59 * GIB
    assert [g["nvml_index"] for g in fields["per_gpu"]] == [0, 1]
    assert fields["interconnect"]["kind"] == "NVLink"
    assert fields["interconnect"]["nvlink_active_links"] == (18, 18)


def test_without_process_lists_the_device_peaks_are_summed_and_labelled(two_gpus):
    nv, f, clock = two_gpus()
    for g in f.gpus:
        g.processes = []
    m = MultiGpuMeter(nv.devices(), pids=[111, 222])
    m.begin()
    f.gpus[0].memory_used = 45 * GIB
    w = m.end()
    assert [g.peak_vram_bytes for g in w.per_gpu] == [45 * GIB, 38 * GIB]   # max of begin and end per GPU
    assert w.peak_vram_source == "nvml_device" and w.peak_vram_bytes == 83 * GIB
    assert w.energy_j is None                                   # no energy window given: unknown, not 0


def test_interconnect_is_pcie_without_nvlink_and_unknown_without_nvml(two_gpus):
    nv, f, _ = two_gpus()                                       # nvlinks=None: boards without NVLink
    link = interconnect(nv.devices())
    assert link.kind == "PCIe" and link.nvlink_active_links == (None, None) and link.p2p_nvlink == (False,)
    assert "nvmlDeviceGetNvLinkState" in link.method
    assert interconnect(nv.devices()[:1]).kind == "single GPU"
    null = nvml_mod.NullNvml("no NVML here")
    assert interconnect(null.devices([0, 1])).kind == "unknown"


def test_mbu_reference_is_the_summed_copy_bandwidth():
    bw = summed_copy_bandwidth([Throughput(4.0e12, (4.0e12,), "copy"), Throughput(3.8e12, (3.8e12,), "copy")])
    assert bw.value_per_s == pytest.approx(7.8e12) and bw.samples_per_s == (4.0e12, 3.8e12)
    assert bw.method.startswith("sum over 2 GPUs")
