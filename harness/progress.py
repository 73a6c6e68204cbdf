"""What `harness run` shows while a sweep runs: each cell's start and status lines, and the phase of
the cell in flight (harness.phases) with its elapsed time, since a GPU compile takes 30-300 s.

Two displays with one interface (start / phase / done / close):
- LiveProgress (rich): when stderr is a terminal, a live footer with the sweep's bar and the cell in
  flight, "[3/12] model variant b8 p128 · compile", with the phase's elapsed time; the start and
  status lines scroll above it as before.
- PlainProgress: anywhere else (CI, pipes, log files), the same start and status lines plus one line
  per phase change, naming the phase left and how long it took.
"""
from __future__ import annotations

import sys
import time
from typing import Callable


class PlainProgress:
    """`key` names the cell (its index): cells of groups running at once on several Ray nodes each keep
    their own head and phase clock."""

    def __init__(self, echo: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic):
        self.echo, self.clock = echo, clock
        self.cells: dict = {}          # key -> [head, current phase, since]

    def start(self, head: str, line: str, key=None) -> None:
        """head: "[3/12]" (the cell's place); line: the start line as printed without a display."""
        self.cells[key] = [head, None, self.clock()]
        self.echo(line)

    def phase(self, name: str, key=None) -> None:
        head, current, since = self.cells.setdefault(key, ["", None, self.clock()])
        now = self.clock()
        after = f" (after {current}: {now - since:.1f} s)" if current else ""
        self.cells[key] = [head, name, now]
        self.echo(f"{head}   phase {name}{after}")

    def done(self, line: str, key=None) -> None:
        self.cells.pop(key, None)
        self.echo(line)

    def close(self) -> None:
        pass


class LiveProgress:
    """rich.progress on stderr: one line, "<spinner> [3/12] model variant b8 p128 · compile  41 s
    <bar> 2/12 0:05:10": the cell in flight and its phase, the phase's elapsed seconds, the sweep's
    bar (cells done of those to run) and the sweep's elapsed time."""

    def __init__(self, total: int, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        from rich.text import Text

        class PhaseElapsed(ProgressColumn):
            def render(self, task):
                t0 = task.fields.get("phase_t0")
                return Text("" if t0 is None else f"{time.monotonic() - t0:5.0f} s", style="yellow")

        self.console = console or Console(stderr=True)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                 PhaseElapsed(), BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task = self.progress.add_task("sweep", total=total, phase_t0=None)
        self.heads: dict = {}          # key (cell index) -> "[3/12] model variant ..."
        self.progress.start()

    def _print(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _show(self, key, what: str) -> None:
        self.progress.update(self.task, description=f"{self.heads.get(key, '')} · {what}", phase_t0=time.monotonic())

    def start(self, head: str, line: str, key=None) -> None:
        self.heads[key] = line.split(" ... ")[0]
        self._print(line)
        self._show(key, "starting")

    def phase(self, name: str, key=None) -> None:
        self._show(key, name)

    def done(self, line: str, key=None) -> None:
        self.heads.pop(key, None)
        self._print(line)
        self.progress.update(self.task, advance=1, description="sweep", phase_t0=None)

    def close(self) -> None:
        self.progress.stop()


def for_terminal(total: int, echo: Callable[[str], None], stream=None):
    """LiveProgress where `stream` (stderr by default) is a terminal, else PlainProgress(echo)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return LiveProgress(total)
    return PlainProgress(echo)
