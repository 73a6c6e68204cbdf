"""NVML meters against a scripted fake NVML (tests/fake_nvml.py): no GPU needed."""
import json
import re
from pathlib import Path

import pytest
import torch

from fake_nvml import FakeClock, FakeGpu, FakePynvml
from harness.meters import bandwidth as bw
from harness.meters import nvml as nvml_mod
from harness.meters.gpu_energy import (EnergyCounterError, GpuEnergyMeter, NullEnergyMeter, WindowTooShort,
                                       measure_idle_power, measure_update_period, open_gpu_energy_meter,
                                       passes_for, run_for_at_least)
from harness.meters.power_sampler import PowerSample, PowerSampler, PowerTimeline, cross_check
from harness.meters.two_loop import LoopEnergy, split, split_gross_and_net
from harness.meters.vram import NO_PROCESSES_NOTE, VramMeter, kv_cache_bytes
from harness.models.presets import PRESETS
from harness.records import Record


@pytest.fixture
def fake(monkeypatch):
    """Install a FakePynvml where harness.meters.nvml imports pynvml; returns a factory."""
    monkeypatch.setattr(nvml_mod, "_refs", 0)

    def install(gpus, clock=None, **kw):
        f = FakePynvml(gpus, clock=clock, **kw) if clock else FakePynvml(gpus, **kw)
        monkeypatch.setattr(nvml_mod, "pynvml", f)
        return f
    return install


def _meter(fake, gpus, min_window_s=10.0, sampler=False, sync=None):
    clock = FakeClock()
    f = fake(gpus, clock=clock)
    nv = nvml_mod.open_nvml()
    devs = nv.devices()
    m = GpuEnergyMeter(devs, sync or (lambda: None), min_window_s=min_window_s, clock=clock, sleep=clock.sleep,
                       sampler=PowerSampler(devs, clock=clock) if sampler else None)
    clock.t = f.t0 + 5.05  # mid-period, away from counter ticks
    return m, clock, f


def test_device_readings_are_converted_once_to_si(fake):
    f = fake([FakeGpu(power_w=250.0, processes=[(123, 3 * 2**30)])])
    with nvml_mod.open_nvml() as nv:
        assert nv.available and nv.device_count() == 1 and f.initialized == 1
        d = nv.device(0)
        assert d.name() == "NVIDIA H100 80GB HBM3" and d.compute_capability() == (9, 0)
        assert d.power_instant_w() == pytest.approx(250.0)     # mW -> W
        assert d.sm_clock_hz() == 1980e6 and d.mem_clock_hz() == 2619e6
        assert d.utilization() == (0.97, 0.80)
        assert d.power_limit_w() == pytest.approx(700.0)
        assert d.memory_info().total_bytes == 80 * 2**30
        assert [(p.pid, p.used_bytes) for p in d.processes()] == [(123, 3 * 2**30)]
        f.gpus[0]._cum_j = [0.0, 1.234]
        f.t0 = f.clock() - 0.15                                 # one period done: 1.234 J = 1234 mJ
        assert d.energy_j() == pytest.approx(1.234)
    assert f.initialized == 0 and f.calls["nvmlShutdown"] == 1


def test_window_sums_counter_deltas_over_two_gpus_and_syncs_at_both_edges(fake):
    events = []
    m, clock, f = _meter(fake, [FakeGpu(300.0), FakeGpu(100.0)], sync=lambda: events.append(f.calls["energy"]))
    f = nvml_mod.pynvml
    events.clear()
    m.begin("decode")
    assert len(events) == 1 and f.calls["energy"] == events[0] + 2    # synced, then read both GPUs
    clock.advance(12.0)
    w = m.end()
    assert len(events) == 2 and f.calls["energy"] == events[1] + 2
    assert w.per_device_j == pytest.approx((3600.0, 1200.0))          # 12 s x 300 W, 12 s x 100 W
    assert w.energy_j == pytest.approx(4800.0) and w.duration_s == pytest.approx(12.0)
    assert w.mean_power_w == pytest.approx(400.0)
    assert w.source == "nvml_counter" and w.devices == (0, 1) and w.flags == ()
    assert "mJ -> J" in w.method and "GPU 0,1" in w.method
    Record("m", "v", "b", "p", 1, 1, 1, energy_source=w.source, energy_flags=list(w.flags))


def test_update_period_is_measured_not_assumed(fake):
    clock = FakeClock()
    fake([FakeGpu(period_s=0.1), FakeGpu(period_s=0.05)], clock=clock)
    devs = nvml_mod.open_nvml().devices()
    assert measure_update_period(devs[1:], clock=clock, sleep=clock.sleep) == pytest.approx(0.05, abs=0.002)
    assert measure_update_period(devs, clock=clock, sleep=clock.sleep) == pytest.approx(0.1, abs=0.002)


def test_a_stuck_counter_cannot_give_a_period(fake):
    clock = FakeClock()
    fake([FakeGpu(power_w=0.0)], clock=clock)
    with pytest.raises(EnergyCounterError, match="changed 0 times"):
        measure_update_period(nvml_mod.open_nvml().devices(), clock=clock, sleep=clock.sleep)


def test_a_window_shorter_than_the_counter_period_is_refused(fake):
    m, clock, _ = _meter(fake, [FakeGpu(period_s=0.1)])
    m.begin("prefill")
    clock.advance(0.05)
    with pytest.raises(WindowTooShort, match="update period"):
        m.end()
    m.begin("again")                   # the meter is usable after a refusal
    clock.advance(2.0)
    w = m.end()
    assert w.energy_j == pytest.approx(600.0)
    assert any("< 10 s minimum" in fl and "~10.0% error" in fl for fl in w.flags)  # 2 x 0.1 s / 2 s


def test_run_for_at_least_repeats_until_the_window_is_long_enough(fake):
    m, clock, _ = _meter(fake, [FakeGpu(300.0)], min_window_s=1.0)
    w, n = run_for_at_least(m, lambda: clock.advance(0.3))
    assert n == 4                      # 0.9 s < 1 s after three passes
    assert w.duration_s == pytest.approx(1.2) and w.energy_j == pytest.approx(360.0)
    w, n = run_for_at_least(m, lambda: clock.advance(0.3), min_s=2.0)
    assert n == 7
    assert passes_for(10.0, 0.3) == 34 and passes_for(10.0, 0.0) == 1


def test_two_loop_split_by_hand():
    # prefill loop 40 J / 20 passes = 2 J/pass; full loop 300 J / 10 passes = 30 J/pass
    pre, full = LoopEnergy(40.0, 4.0, 20), LoopEnergy(300.0, 20.0, 10)
    gross, net = split_gross_and_net(pre, full, prompt_tokens=128, new_tokens=33, batch=1, idle_power_w=5.0)
    assert gross.basis == "gross"
    assert gross.j_per_token_prefill == pytest.approx(2 / 128)
    assert gross.j_per_token_decode == pytest.approx(28 / 32)        # (30 - 2) J over 32 decode tokens
    assert gross.j_per_output_token == pytest.approx(30 / 33)
    # net: 40 - 5 W x 4 s = 20 J -> 1 J/pass; 300 - 5 W x 20 s = 200 J -> 20 J/pass
    assert net.basis.startswith("net") and "5.0 W" in net.basis
    assert net.j_per_token_prefill == pytest.approx(1 / 128)
    assert net.j_per_token_decode == pytest.approx(19 / 32)
    b2 = split(LoopEnergy(40.0, 4.0, 20), LoopEnergy(300.0, 20.0, 10), 128, 33, batch=4)
    assert b2.j_per_token_decode == pytest.approx(28 / (4 * 32))


def test_two_loop_degenerate_results_are_none_with_a_reason_never_zero():
    s = split(LoopEnergy(40.0, 4.0, 20), LoopEnergy(19.0, 2.0, 10), 128, 33)   # full pass 1.9 < 2 J
    assert s.j_per_token_decode is None and s.j_per_token_prefill == pytest.approx(2 / 128)
    assert any("not above prefill" in r for r in s.reasons)
    s = split(LoopEnergy(40.0, 4.0, 20), LoopEnergy(300.0, 20.0, 10), 128, new_tokens=1)
    assert s.j_per_token_decode is None and any("no decode tokens" in r for r in s.reasons)
    s = split(LoopEnergy(None, 4.0, 20), LoopEnergy(300.0, 20.0, 10), 128, 33)
    assert s.j_per_token_prefill is None and s.j_per_token_decode is None and s.reasons
    gross, net = split_gross_and_net(LoopEnergy(40.0, 4.0, 20), LoopEnergy(300.0, 20.0, 10), 128, 33,
                                     idle_power_w=100.0)           # 40 - 400 J < 0
    assert gross.j_per_token_prefill is not None
    assert net.j_per_token_prefill is None and any("not positive" in r for r in net.reasons)
    assert split_gross_and_net(LoopEnergy(40.0, 4.0, 20), LoopEnergy(300.0, 20.0, 10), 128, 33)[1] is None


def test_idle_power_from_an_aligned_counter_delta(fake):
    m, clock, _ = _meter(fake, [FakeGpu(133.0), FakeGpu(70.0)])
    t0 = clock()
    idle = measure_idle_power(m, seconds=3.0, cooldown_s=2.0)
    assert clock() - t0 >= 5.0
    assert idle.power_w == pytest.approx(203.0, rel=1e-3)
    assert idle.per_device_w == pytest.approx((133.0, 70.0), rel=1e-3)
    assert "aligned" in idle.method


def test_net_energy_of_a_window_is_labelled_beside_gross(fake):
    m, clock, _ = _meter(fake, [FakeGpu(300.0)])
    m.begin()
    clock.advance(10.0)
    w = m.end()
    assert w.energy_j == pytest.approx(3000.0)
    assert w.net_energy_j(133.0) == pytest.approx(3000.0 - 1330.0)
    assert w.net_energy_j(None) is None


def _timeline(power_w, seconds=10.0, dt=0.05, devices=(0,)):
    n = int(round(seconds / dt)) + 1
    return PowerTimeline(tuple(PowerSample(i * dt, d, power_w, memory_used_bytes=1000 + i)
                               for i in range(n) for d in devices), 20.0)


def test_cross_check_flags_above_5_percent_only():
    tl = _timeline(100.0)                                        # integral 1000 J over 10 s
    assert tl.energy_j() == pytest.approx(1000.0) and tl.rate_hz() == pytest.approx(20.0)
    flags = cross_check(1000.0 / 1.072, tl)
    assert len(flags) == 1 and "counter-vs-instant-power disagree by 7.2%" in flags[0]
    assert cross_check(1000.0 / 1.03, tl) == []
    assert cross_check(1000.0 / 0.95 * 1.001, tl) != []          # below too, just past 5%
    slow = PowerTimeline(tuple(PowerSample(i * 0.2, 0, 100.0) for i in range(51)), 20.0)
    assert any("only 5.0 Hz" in f for f in cross_check(1000.0, slow))


def test_timeline_integral_is_trapezoidal():
    ramp = PowerTimeline(tuple(PowerSample(i * 0.1, 0, 10.0 * i) for i in range(11)), 10.0)
    assert ramp.energy_j() == pytest.approx(50.0)                # 0 -> 100 W over 1 s
    assert ramp.peak_power_w() == 100.0 and ramp.mean_power_w() == pytest.approx(50.0)
    gap = PowerTimeline((PowerSample(0.0, 0, None), PowerSample(0.1, 0, 5.0)), 10.0)
    assert gap.energy_j() is None                                # one reading is not an integral


def test_timeline_peaks_and_json_round_trip():
    tl = _timeline(150.0, seconds=1.0, devices=(0, 1))
    assert tl.peak_power_w() == pytest.approx(300.0)             # two devices summed per tick
    assert tl.mean_power_w() == pytest.approx(300.0)
    assert tl.peak_memory_used_bytes() == 2 * (1000 + 20)
    back = PowerTimeline.from_json(json.loads(json.dumps(tl.to_json())))
    assert back.samples == tl.samples


def test_sampler_thread_runs_at_least_10_hz_and_never_reads_power_usage(fake):
    f = fake([FakeGpu(200.0, period_s=0.005), FakeGpu(100.0, period_s=0.005)])
    nv = nvml_mod.open_nvml()
    devs = nv.devices()
    s = PowerSampler(devs)
    s.begin()
    import time
    time.sleep(0.6)
    tl = s.end()
    assert tl.rate_hz() >= 10.0 and len(tl.of(0)) >= 8
    assert tl.energy_j() == pytest.approx(300.0 * tl.duration_s(), rel=1e-6)
    s0 = tl.samples[0]
    assert s0.sm_clock_hz == 1980e6 and s0.gpu_util == 0.97 and s0.memory_used_bytes == 2 * 2**30
    assert f.calls["nvmlDeviceGetPowerUsage"] == 0
    with pytest.raises(ValueError, match="below the 10 Hz"):
        PowerSampler(devs, rate_hz=5.0)


def test_no_meter_source_calls_the_trailing_average_power():
    src = Path(nvml_mod.__file__).parent
    for p in src.glob("*.py"):
        assert not re.search(r"nvmlDeviceGetPowerUsage\s*\(", p.read_text()), p


@pytest.mark.parametrize("scale,flagged", [(1.15, True), (1.0, False)])
def test_meter_with_sampler_flags_disagreement_in_real_time(fake, scale, flagged):
    f = fake([FakeGpu(300.0, period_s=0.005, instant_scale=scale)])
    devs = nvml_mod.open_nvml().devices()
    m = GpuEnergyMeter(devs, lambda: None, min_window_s=0.1, sampler=PowerSampler(devs))
    assert m.update_period_s == pytest.approx(0.005, abs=0.002)
    import time
    m.begin()
    time.sleep(0.6)
    w = m.end()
    assert w.timeline is not None and w.peak_power_w == pytest.approx(300.0 * scale, rel=1e-3)
    assert any("disagree" in fl for fl in w.flags) == flagged
    assert f.calls["nvmlDeviceGetPowerUsage"] == 0


def test_no_nvml_gives_unavailable_energy_never_zero(fake):
    fake([], fail_init=True)
    nv = nvml_mod.open_nvml()
    assert not nv.available and "NVML unavailable" in nv.reason
    assert nv.device(0).energy_j() is None and nv.device(0).processes() == []
    syncs = []
    m = open_gpu_energy_meter(nv, [0], lambda: syncs.append(1))
    assert isinstance(m, NullEnergyMeter)
    m.begin()
    w = m.end()
    assert w.energy_j is None and w.source == "unavailable" and w.mean_power_w is None
    assert len(syncs) == 2 and w.duration_s >= 0
    assert measure_idle_power(m).power_w is None


def test_a_gpu_without_an_energy_counter_gives_a_null_meter(fake):
    fake([FakeGpu(energy_supported=False)])
    m = open_gpu_energy_meter(nvml_mod.open_nvml(), [0], lambda: None)
    assert isinstance(m, NullEnergyMeter) and "not supported" in m.method


def test_vram_falls_back_to_device_wide_when_nvml_lists_no_processes(fake):
    f = fake([FakeGpu(memory_used=5 * 2**30)])
    devs = nvml_mod.open_nvml().devices()
    v = VramMeter(devs)
    v.begin()
    f.gpus[0].memory_used = 7 * 2**30
    w = v.end(timeline=_timeline(100.0, 1.0))
    assert w.peak_vram_source == "nvml_device" and w.peak_vram_bytes == 7 * 2**30
    assert w.nvml_device_used_at_begin_bytes == 5 * 2**30
    assert any(NO_PROCESSES_NOTE in n for n in w.notes)
    assert w.torch_max_allocated_bytes is None     # no CUDA here
    f.gpus[0].processes = [(4242, 6 * 2**30), (999, 2**30)]
    w = VramMeter(devs, pid=4242).end()
    assert w.peak_vram_source == "nvml_process" and w.peak_vram_bytes == 6 * 2**30


def test_kv_cache_bytes_counts_each_storage_once():
    k = torch.zeros(2, 4, 16, 8, dtype=torch.bfloat16)
    v = torch.zeros(2, 4, 16, 8, dtype=torch.bfloat16)
    assert kv_cache_bytes([k, v]) == 2 * (2 * 4 * 16 * 8 * 2)
    buf = torch.zeros(1024, dtype=torch.float32)
    assert kv_cache_bytes([buf[:10], buf[10:20], buf]) == 4096
    cache = type("C", (), {"k_cache": [k], "v_cache": [v]})()
    assert kv_cache_bytes(cache) == kv_cache_bytes({"a": (k, v)})


def test_bandwidth_and_utilization_arithmetic_by_hand():
    assert bw.decode_bytes_per_step(16_000_000_000, 131072, 1000, 2) == 16e9 + 2 * 1000 * 131072
    assert bw.achieved_bandwidth(1e9, 50.0) == 5e10 and bw.achieved_bandwidth(1e9, None) is None
    # lab H100 (anchors.md): 139.3 tok/s x 16.06 GB over the 3.02 TB/s copy = 74% of the ceiling
    assert bw.mbu(bw.achieved_bandwidth(16.06e9, 139.3), 3.02e12) == pytest.approx(0.74, abs=0.005)
    assert bw.mbu(1e12, None) is None and bw.mbu(None, 1e12) is None
    assert bw.achieved_flops(1e12, 0.5) == 2e12 and bw.achieved_flops(1e12, 0.0) is None
    assert bw.mfu(4.95e14, 9.9e14) == pytest.approx(0.5)
    assert bw.mean_decode_context(128, 64) == 160


def test_flop_counts_by_hand_on_the_tiny_shape():
    s = PRESETS["tiny"]   # h 256, 4 layers, 4 heads (head_dim 64), 2 kv heads, ffn 768, vocab 8192
    block = 256 * 256 + 2 * 256 * 128 + 256 * 256 + 3 * 256 * 768
    assert bw.matmul_params(s) == 4 * block + 8192 * 256 == 5_242_880
    assert bw.decode_flops_per_token(s, 100) == 2 * 5_242_880 + 4 * (4 * 4 * 64) * 100
    pre = 2 * (2 * 4 * block * 10 + 2 * 8192 * 256 + 2 * (4 * 4 * 64) * 10 * 11)
    assert bw.prefill_flops(s, batch=2, prompt_tokens=10) == pre
    assert bw.prefill_flops(s, 2, 10, logits_for_all=True) - pre == 2 * 2 * 8192 * 256 * 9
    # Llama-3.1-8B: matmul params = all params minus the embedding and norms (~7.50 B)
    l8 = PRESETS["llama-3.1-8b"]
    assert bw.matmul_params(l8) == pytest.approx(l8.param_count() - l8.embedding_params(), rel=1e-4)


def test_copy_bandwidth_and_matmul_cpu_fallback_give_positive_figures():
    c = bw.measure_copy_bandwidth("cpu", buffer_bytes=8 * 2**20, iters=3, repeats=3, warmup=1)
    assert c.value_per_s > 0 and len(c.samples_per_s) == 3 and "perf_counter" in c.method
    mm = bw.measure_matmul_flops("cpu", n=64, dtype="float32", iters=3, repeats=2, warmup=1)
    assert mm.value_per_s > 0


def _window(peak, source="nvml_process", proc=None, reserved_now=None, device_peak=None):
    from harness.meters.vram import VramWindow

    return VramWindow(peak, source, device_peak, None, proc, None, None, (), reserved_now)


def test_vram_budget_counts_weights_kv_activations_and_the_measured_runtime():
    from harness.meters.vram import vram_budget

    gb = 10**9
    # NVML 10.0 GB for the process while torch held 9.4 GB: 0.6 GB of context and libraries
    b = vram_budget(_window(10 * gb, proc=10 * gb, reserved_now=9.4 * gb), 8 * gb, gb // 2, gb // 10)
    assert b.runtime_bytes == 0.6 * gb and b.expected_bytes == 8 * gb + gb // 2 + gb // 10 + 0.6 * gb
    assert b.ratio == pytest.approx(10 / 9.2) and b.within
    # 13.5 GB held for the same needs (fragmented blocks kept after the variant): over the 10% tolerance
    over = vram_budget(_window(13.5 * gb, proc=13.5 * gb, reserved_now=12.9 * gb), 8 * gb, gb // 2, gb // 10)
    assert over.ratio == pytest.approx(13.5 / 9.2) and not over.within
    assert over.as_dict()["within_tolerance"] is False
    # torch's own peak excludes the context: no runtime term
    t = vram_budget(_window(9 * gb, source="torch_reserved"), 8 * gb, gb // 2, gb // 10)
    assert t.runtime_bytes is None and t.expected_bytes == 8 * gb + gb // 2 + gb // 10
    # unknown terms give no verdict, never a 0
    assert vram_budget(_window(None, source="unavailable"), 8 * gb, 0, 0) is None
    assert vram_budget(_window(9 * gb, proc=9 * gb, reserved_now=None), 8 * gb, 0, 0) is None
    assert vram_budget(_window(9 * gb, proc=9 * gb, reserved_now=8 * gb), None, 0, 0) is None


def test_workspace_of_an_unchunked_prefill_grows_with_every_prompt_token():
    from harness.plan.roofline import PREFILL_CHUNK_TOKENS, workspace_bytes

    shape = PRESETS["llama-3.1-8b"]
    chunked = workspace_bytes(shape, 4096, 8, "bf16")
    whole = workspace_bytes(shape, 4096, 8, "bf16", chunk_tokens=None)
    logits = 8 * shape.vocab_size * 4
    assert (whole - logits) == pytest.approx((chunked - logits) * 8 * 4096 / PREFILL_CHUNK_TOKENS)


def test_cuda_allocator_setting_respects_the_environment(monkeypatch):
    from harness.backends.pytorch import device

    calls = []
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", calls.append, raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert device.configure_cuda_allocator() == "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128 (from the environment)"
    assert calls == []
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    assert device.configure_cuda_allocator() == "expandable_segments:True (set by harness)"
    assert calls == ["expandable_segments:True"]


def test_an_nvml_error_inside_a_window_closes_it_and_stops_the_sampler(fake):
    """Issue 12: NVML failing mid-window used to leave the window open and the sampler running, so
    every later cell failed at begin(). The failed window now closes; the next one measures."""
    m, clock, f = _meter(fake, [FakeGpu(300.0)], sampler=True)
    m.begin("full-loop")
    clock.advance(2.0)
    f.gpus[0].energy_supported = False                 # the counter read now raises NVMLError
    with pytest.raises(EnergyCounterError, match="mid-run"):
        m.end()
    assert m._start is None and m.sampler._thread is None
    f.gpus[0].energy_supported = True
    m.begin("next cell")
    clock.advance(2.0)
    w = m.end()
    assert w.energy_j == pytest.approx(600.0)


def test_abort_closes_an_open_window_without_a_result(fake):
    m, clock, _ = _meter(fake, [FakeGpu(300.0)], sampler=True)
    m.begin("full-loop")
    m.abort()
    assert m._start is None and m.sampler._thread is None
    m.begin("again")                                   # no "still open" error
    clock.advance(1.0)
    assert m.end().energy_j == pytest.approx(300.0)
