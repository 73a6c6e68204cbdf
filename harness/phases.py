"""The phase of the cell in flight (load, apply, quality, compile, measure), announced by whoever
does the work and heard by whoever shows progress: a leaf module, so that a backend, the cell
pipeline and the worker can all import it without importing each other.

`phase(name)` is a no-op unless a listener is installed with `listening(fn)`. In a worker process the
listener sends a ("phase", cell_index, name) message to the supervisor (harness.executor.worker); in
`--isolation none` it calls the progress display directly (harness.runner). A phase lasts until the
next one or the cell's record; its elapsed time is taken by the listener's clock.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

# In the order a cell goes through them; a backend announces the ones it has (a reused engine still
# announces "compile", which then lasts a few milliseconds).
PHASES = ("load", "apply", "quality", "compile", "measure")

_listener: Callable[[str], None] | None = None


def phase(name: str) -> None:
    """Announce that the cell in flight enters `name` (one of PHASES)."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; known: {', '.join(PHASES)}")
    if _listener is not None:
        _listener(name)


@contextlib.contextmanager
def listening(fn: Callable[[str], None]) -> Iterator[None]:
    """Install `fn` as the listener for the duration of the block (the previous one is restored)."""
    global _listener
    previous, _listener = _listener, fn
    try:
        yield
    finally:
        _listener = previous
