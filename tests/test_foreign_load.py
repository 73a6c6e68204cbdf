"""Foreign load: another process busy during a window is recorded and flagged."""
import subprocess
import sys
import time

from harness.meters.foreign import ForeignLoadMeter
from harness.meters.nvml import ProcessMemory


class FakeGpu:
    def __init__(self, pids):
        self.pids = pids

    def processes(self):
        return [ProcessMemory(p, 1 << 30) for p in self.pids]


def test_a_busy_neighbour_process_is_flagged():
    import os
    import signal

    # the neighbour must not be our child (the meter counts this process tree as its own): a shell
    # starts it in the background and exits, so it is re-parented away from us
    sh = subprocess.run(["sh", "-c", f"{sys.executable} -c 'import time\nt=time.time()\nwhile time.time()-t<8: pass' "
                                     ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    pid = int(sh.stdout.strip())
    try:
        time.sleep(0.3)                        # let it start spinning
        m = ForeignLoadMeter(max_cpu_share=0.25)
        m.begin()
        time.sleep(1.0)                        # this process idles; the neighbour spins one core
        r = m.end()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert r.other_cpu_cores is not None and r.other_cpu_cores > 0.5
    assert any("other processes used" in f for f in r.flags)
    fields = m.record_fields(r)["foreign_load"]
    assert fields["other_cpu_cores"] == r.other_cpu_cores and fields["flags"] == list(r.flags)


def test_own_work_is_not_foreign():
    import psutil

    me = psutil.Process()
    m = ForeignLoadMeter(max_cpu_share=0.25)
    c0 = sum(me.cpu_times()[:2])
    m.begin()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.8:       # this process spins: its own work
        pass
    r = m.end()
    spent = sum(me.cpu_times()[:2]) - c0
    # this machine may be shared (others may be busy too): what must hold is that the CPU time this
    # process spent is counted as its own, not as foreign
    assert spent > 0.1
    assert abs(r.own_cpu_cores * r.window_s - spent) < 0.05


def test_other_gpu_processes_are_listed_and_ours_is_not():
    import os

    m = ForeignLoadMeter([FakeGpu([os.getpid(), 4242])])
    m.begin()
    r = m.end()
    assert r.gpu_processes_listed and r.other_gpu_processes == ((4242, 1 << 30),)
    assert any("pid 4242" in f for f in r.flags)
    quiet = ForeignLoadMeter([FakeGpu([])])
    quiet.begin()
    q = quiet.end()
    assert not q.gpu_processes_listed and q.other_gpu_processes == ()


def test_the_report_flags_cells_measured_on_a_busy_machine():
    from harness.records import Record
    from harness.report.markdown import render_report

    busy = Record("m", "baseline", "pytorch", "p", 1, 8, 4, decode_tok_s=10.0,
                  extra={"foreign_load": {"other_cpu_cores": 1.5, "flags": ["other processes used 1.50 of 2 CPU cores"]}})
    quiet = Record("m", "int8-wo", "pytorch", "p", 1, 8, 4, decode_tok_s=12.0,
                   extra={"foreign_load": {"other_cpu_cores": 0.01, "flags": []}})
    text = render_report([busy, quiet], {})
    assert "## Measured on a busy machine" in text and "1 of 2 measured cells" in text
    assert "m / baseline / pytorch / batch 1: other processes used 1.50 of 2 CPU cores" in text
    assert "## Measured on a busy machine" not in render_report([quiet], {})
