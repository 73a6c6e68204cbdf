"""Whether a timed window ran at full clock (harness.meters.clocks), against the scripted fake NVML."""
import time

import pytest

from fake_nvml import FakeGpu, FakePynvml
from harness.meters import nvml as nvml_mod
from harness.meters.clocks import FULL_CLOCK_FRACTION, clock_summary
from harness.meters.power_sampler import PowerSample, PowerSampler, PowerTimeline

POWER_CAP, IDLE, THERMAL = 0x4, 0x1, 0x20


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(nvml_mod, "_refs", 0)

    def install(gpus):
        f = FakePynvml(gpus)
        monkeypatch.setattr(nvml_mod, "pynvml", f)
        return f
    return install


def _timeline(clocks_mhz, reasons=None, device=0):
    reasons = reasons or [0] * len(clocks_mhz)
    return PowerTimeline(tuple(PowerSample(0.05 * i, device, 600.0, c * 1e6, clock_reasons=r)
                               for i, (c, r) in enumerate(zip(clocks_mhz, reasons))), 20.0)


def test_nvml_gives_the_maximum_clock_and_the_reasons_and_the_sampler_keeps_them(fake):
    fake([FakeGpu(sm_clock_mhz=1440, clock_reasons=POWER_CAP)])
    with nvml_mod.open_nvml() as nv:
        d = nv.device(0)
        assert d.max_sm_clock_hz() == 1980e6 and d.sm_clock_hz() == 1440e6
        assert d.clock_event_reasons() == POWER_CAP
        s = PowerSampler([d])
        s.begin()
        time.sleep(0.15)
        tl = s.end()
    assert all(x.clock_reasons == POWER_CAP and x.sm_clock_hz == 1440e6 for x in tl.samples)
    back = PowerTimeline.from_json(tl.to_json())
    assert back.samples == tl.samples
    assert nvml_mod.NullDevice(0).max_sm_clock_hz() is None and nvml_mod.NullDevice(0).clock_event_reasons() is None


def test_a_timeline_written_before_the_reasons_column_still_loads():
    d = _timeline([1980, 1980]).to_json()
    del d["clock_reasons"]
    tl = PowerTimeline.from_json(d)
    assert [s.clock_reasons for s in tl.samples] == [None, None] and tl.samples[0].sm_clock_hz == 1980e6


def test_a_power_capped_window_is_flagged_with_its_reason():
    # the lab H200's qwen2.5-7b int4 batch-32 cell: 1,215-1,620 MHz of 1,980 at the 700 W limit
    tl = _timeline([1485, 1560, 1455, 1410, 1215, 1620, 1980, 1440], [POWER_CAP] * 6 + [0, POWER_CAP])
    c = clock_summary(tl, {0: 1980e6})
    assert c["sm_clock_median_hz"] == 1470e6 and c["sm_clock_min_hz"] == 1215e6
    assert c["median_fraction_of_max"] == pytest.approx(1470 / 1980)
    assert c["reason_shares"] == {"power cap": 7 / 8}
    assert c["flags"] == ["SM clock median 1,470 MHz, 74% of its 1,980 MHz maximum, over the timed window "
                          "(power cap in 88% of samples): compute-bound work ran below full clock"]


def test_full_clock_and_idle_samples_raise_no_flag():
    # idle gaps (GPU-idle reason) drop the clock but are not the cell's work: left out of the median
    tl = _timeline([1980, 1965, 345, 345, 1980], [0, 0, IDLE, IDLE | POWER_CAP, 0])
    c = clock_summary(tl, {0: 1980e6})
    assert c["busy_samples"] == 3 and c["samples"] == 5 and c["flags"] == []
    assert c["median_fraction_of_max"] >= FULL_CLOCK_FRACTION and c["reason_shares"] == {}


def test_rare_reasons_are_not_named_and_an_unknown_maximum_gives_no_fraction():
    tl = _timeline([1500] * 9 + [1400], [0] * 9 + [THERMAL])
    c = clock_summary(tl, {0: 1980e6})
    assert c["reason_shares"] == {"software thermal slowdown": 0.1}
    assert len(c["flags"]) == 1 and "(" not in c["flags"][0] and "76% of its 1,980 MHz" in c["flags"][0]
    u = clock_summary(tl, {0: None})
    assert u["median_fraction_of_max"] is None and u["max_sm_clock_hz"] is None and u["flags"] == []
    assert clock_summary(None, {0: 1980e6}) is None
    assert clock_summary(PowerTimeline((PowerSample(0.0, 0, 500.0),), 20.0), {0: 1980e6}) is None


def test_the_report_and_the_advice_say_which_cells_ran_below_full_clock():
    from harness.records import Record
    from harness.report.markdown import render_report

    flag = "SM clock median 1,470 MHz, 74% of its 1,980 MHz maximum, over the timed window"
    slow = Record("m", "int4-wo", "pytorch", "p", 32, 2048, 16, decode_tok_s=4663.0,
                  extra={"clocks": {"flags": [flag]}})
    full = Record("m", "baseline", "pytorch", "p", 1, 128, 64, decode_tok_s=210.0, extra={"clocks": {"flags": []}})
    text = render_report([slow, full], {})
    assert "## Measured below full clock" in text and "1 of 2 measured cells" in text
    assert f"m / int4-wo / batch 32: {flag}" in text
    assert "## Measured below full clock" not in render_report([full], {})
    from harness.advise.measured import deployment_of

    d = deployment_of(slow, 1, "measured run", {}, 0.1)
    assert d.notes == [f"measured below full clock: {flag}"]
    assert deployment_of(full, 1, "measured run", {}, 0.1).notes == []


def test_the_prefill_only_loop_gets_its_own_summary_and_its_flag_joins_the_cells():
    from types import SimpleNamespace

    from harness.pipeline.assemble import _prefill_loop_clocks
    from harness.pipeline.meters import ClockWindowMeter

    cw = ClockWindowMeter(SimpleNamespace(last=None), {0: 1980e6})
    meters = SimpleNamespace(windows=[cw])
    full = clock_summary(_timeline([1980, 1965, 1980]), {0: 1980e6})
    extra = {"clocks": full}
    # the 70B int4 batch-8 cell on the lab H200: 1,575-1,590 MHz while its prefills ran
    _prefill_loop_clocks(meters, SimpleNamespace(timeline=_timeline([1590, 1575, 1575], [POWER_CAP] * 3)), extra)
    c = extra["clocks"]
    assert c["sm_clock_median_hz"] == 1980e6 and c["prefill_loop"]["sm_clock_median_hz"] == 1575e6
    assert c["flags"] == c["prefill_loop"]["flags"] and "over the prefill-only loop (power cap in 100%" in c["flags"][0]
    assert full["flags"] == []                                  # the timed loop's own summary is not changed
    untouched = {"clocks": full}
    _prefill_loop_clocks(meters, None, untouched)
    _prefill_loop_clocks(SimpleNamespace(windows=[]), SimpleNamespace(timeline=_timeline([1500])), untouched)
    assert untouched == {"clocks": full}


@pytest.mark.gpu
def test_the_real_nvml_gives_a_maximum_clock_and_reasons_on_this_gpu():
    """On the device: the board's maximum SM clock and the reasons bitmask are readable, and a busy
    second of matmuls gives a summary (whatever its clock: the assertion is that it is measured)."""
    import torch

    from harness.meters.nvml import open_nvml

    with open_nvml() as nv:
        d = nv.device_for_cuda(0)
        top = d.max_sm_clock_hz()
        assert top is not None and 5e8 < top < 5e9
        assert isinstance(d.clock_event_reasons(), int)
        s = PowerSampler([d])
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        s.begin()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            a @ a
            torch.cuda.synchronize()
        c = clock_summary(s.end(), {d.index: top})
    assert c is not None and c["busy_samples"] >= 5 and 0 < c["median_fraction_of_max"] <= 1.05
    assert c["reason_shares"] is not None
