import time

import pytest

from harness.meters import stats
from harness.meters.cpu_energy import (LoadEstimateReader, RaplReader, UnavailableReader, open_cpu_energy_reader,
                                       rapl_zones)
from harness.meters.memory import RssSampler


def test_rss_sampler_sees_a_deliberate_allocation_released_before_the_end():
    import mmap

    s = RssSampler(interval_s=0.002)
    s.begin()
    # 300 MiB of fresh anonymous pages, touched so they are resident: a mapping of its own, so neither the
    # allocator's free lists (a heap grown by earlier tests) can serve it nor can it stay resident after close()
    buf = mmap.mmap(-1, 300 * 2**20)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    time.sleep(0.05)
    buf.close()
    time.sleep(0.02)
    w = s.end()
    assert w.samples >= 5
    assert w.peak_rss_bytes - w.start_rss_bytes > 250 * 2**20
    assert w.peak_rss_bytes - w.end_rss_bytes > 250 * 2**20   # a read at the end alone would miss it


def _fake_rapl(root, value, max_range=1000):
    z = root / "intel-rapl:0"
    z.mkdir(parents=True, exist_ok=True)
    (z / "name").write_text("package-0\n")
    (z / "energy_uj").write_text(f"{value}\n")
    (z / "max_energy_range_uj").write_text(f"{max_range}\n")
    sub = root / "intel-rapl:0:0"          # sub-zone (core): must not be double counted
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5\n")
    (sub / "max_energy_range_uj").write_text("1000\n")
    return z


def test_rapl_reader_is_preferred_and_handles_wraparound(tmp_path):
    z = _fake_rapl(tmp_path, 900)
    r = open_cpu_energy_reader(power_w=65.0, rapl_root=str(tmp_path))
    assert isinstance(r, RaplReader) and r.source == "rapl"
    assert len(rapl_zones(str(tmp_path))) == 1
    a = r.read()
    (z / "energy_uj").write_text("100\n")   # wrapped: 900 -> 1000 (=0) -> 100: 201 uJ
    assert r.joules(a, r.read()) == pytest.approx(201e-6)


def test_estimate_without_rapl_and_unavailable_without_power(tmp_path):
    est = open_cpu_energy_reader(power_w=50.0, rapl_root=str(tmp_path))
    assert isinstance(est, LoadEstimateReader) and est.source == "estimate"
    assert "not a measurement" in est.method
    # scripted readings: 2 s window, busy 1.5 of 4 cpu-seconds -> 50 W x 0.375 x 2 s
    assert est.joules((10.0, 100.0, 400.0), (12.0, 101.5, 404.0)) == pytest.approx(37.5)
    none = open_cpu_energy_reader(power_w=None, rapl_root=str(tmp_path))
    assert isinstance(none, UnavailableReader) and none.source == "unavailable"
    assert none.joules(none.read(), none.read()) is None


def test_stats():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats.percentile(xs, 50) == 3.0
    assert stats.percentile(xs, 90) == pytest.approx(4.6)
    assert stats.iqr(xs) == pytest.approx(2.0)
    assert stats.percentile([], 50) is None and stats.stdev([1.0]) is None
