"""Peak resident memory of this process, sampled in a background thread during the window (the
peak of a short allocation would be missed by reading RSS only at the end)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

DEFAULT_INTERVAL_S = 0.005


@dataclass(frozen=True)
class RssWindow:
    peak_rss_bytes: int
    start_rss_bytes: int
    end_rss_bytes: int
    samples: int
    interval_s: float


class RssSampler:
    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, process: psutil.Process | None = None):
        self.interval_s = interval_s
        self._proc = process or psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._n = 0
        self._start = 0

    def _read(self) -> int:
        rss = self._proc.memory_info().rss
        self._n += 1
        if rss > self._peak:
            self._peak = rss
        return rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def begin(self) -> None:
        self._stop.clear()
        self._peak, self._n = 0, 0
        self._start = self._read()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def end(self) -> RssWindow:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        end = self._read()
        return RssWindow(self._peak, self._start, end, self._n, self.interval_s)


def process_peak_rss_bytes() -> int | None:
    """Lifetime high-water mark from the kernel (ru_maxrss), a cross-check for the sampler."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    except (ImportError, OSError):
        return None
