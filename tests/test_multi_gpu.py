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


def _scope(gpus: int):
    from harness.meters.base import MeterScope
    from harness.options import RunSettings

    cell = SimpleNamespace(meters=True)
    ctx = SimpleNamespace(gpu=None)
    return MeterScope("cuda", 0, cell, RunSettings(device="cuda", gpus=gpus, energy_window_s=10.0), ctx)


@pytest.fixture
def pipeline_on_fake_gpus(two_gpus, monkeypatch):
    """The cell pipeline's GPU run meters over the fake two-GPU NVML: torch's cuda:N -> NVML N, copy
    bandwidths of 4.0 and 3.8 TB/s, the energy meter on the fake clock."""
    from harness.meters import gpu_run

    nv, f, clock = two_gpus(nvlinks=18)
    monkeypatch.setattr(nvml_mod.Nvml, "device_for_cuda", lambda self, i: self.device(i))
    bws = {"cuda:0": 4.0e12, "cuda:1": 3.8e12}
    monkeypatch.setattr(gpu_run, "measure_copy_bandwidth", lambda dev: Throughput(bws[dev], (bws[dev],), "copy"))
    opened = []

    def energy(nvml, indices, sync, min_window_s, sample_hz):
        opened.append(list(indices))
        return GpuEnergyMeter(nvml.devices(indices), lambda: None, min_window_s=min_window_s, clock=clock,
                              sleep=clock.sleep)
    monkeypatch.setattr(gpu_run, "open_gpu_energy_meter", energy)
    return f, clock, opened


def test_pipeline_meters_a_two_gpu_cell_over_both_gpus(pipeline_on_fake_gpus):
    from harness.pipeline.meters import open_cell_meters

    f, clock, opened = pipeline_on_fake_gpus
    scope = _scope(2)
    meters = open_cell_meters(scope, None, pids=[111, 222])
    assert opened == [[0, 1]]                                     # one energy window over both GPUs
    assert scope.run_context.gpu.copy_bw.value_per_s == pytest.approx(7.8e12)   # the MBU reference: summed
    names = [w.name for w in meters.windows]
    assert "multi-gpu" in names and "vram" not in names and meters.vram is None
    assert names.index("multi-gpu") < names.index("energy")       # ends after the energy window
    for w in meters.windows:
        w.begin()
    clock.advance(12.0)
    results = {w.name: w.end() for w in reversed(meters.windows)}
    fields = next(w for w in meters.windows if w.name == "multi-gpu").record_fields(results["multi-gpu"])
    assert results["energy"].energy_j == pytest.approx(6000.0)
    assert [g["energy_j"] for g in fields["per_gpu"]] == pytest.approx([3600.0, 2400.0])
    assert [g["peak_vram_bytes"] for g in fields["per_gpu"]] == [30 * GIB, 29 * GIB]
    assert fields["peak_vram_bytes"] == 59 * GIB and fields["gpus"] == 2
    assert fields["interconnect"]["kind"] == "NVLink"


def test_pipeline_meters_a_one_gpu_cell_on_gpu_0_only(pipeline_on_fake_gpus):
    from harness.pipeline.meters import open_cell_meters

    _, _, opened = pipeline_on_fake_gpus
    scope = _scope(1)
    meters = open_cell_meters(scope, None)
    assert opened == [[0]] and scope.run_context.gpu.copy_bw.value_per_s == pytest.approx(4.0e12)
    assert meters.vram is not None and "multi-gpu" not in [w.name for w in meters.windows]


def test_a_cuda_cell_records_whether_its_timed_loop_ran_at_full_clock(pipeline_on_fake_gpus):
    """The clocks window reads the energy window's power timeline after it ends: a GPU held at 1,440 MHz
    of 1,980 by its power cap gets the flag; the record field is `extra.clocks`."""
    from harness.meters.power_sampler import PowerSampler
    from harness.pipeline.meters import open_cell_meters

    f, clock, _ = pipeline_on_fake_gpus
    f.gpus[0].sm_clock = lambda t: 1440
    f.gpus[0].reasons = lambda t: 0x4
    scope = _scope(1)
    meters = open_cell_meters(scope, None)
    names = [w.name for w in meters.windows]
    assert names.index("clocks") < names.index("energy")          # ends after the energy window
    meters.energy.meter.sampler = PowerSampler(scope.run_context.gpu.devices(), clock=clock)
    for w in meters.windows:
        w.begin()
    clock.advance(12.0)
    results = {w.name: w.end() for w in reversed(meters.windows)}
    fields = next(w for w in meters.windows if w.name == "clocks").record_fields(results["clocks"])
    c = fields["clocks"]
    assert c["sm_clock_median_hz"] == 1440e6 and c["max_sm_clock_hz"] == 1980e6
    assert c["reason_shares"] == {"power cap": 1.0}
    assert c["flags"] and "73% of its 1,980 MHz maximum" in c["flags"][0] and "power cap in 100%" in c["flags"][0]
