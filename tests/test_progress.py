"""The phase of the cell in flight (issue 16): phase events from the worker process and from the
in-process loop, the plain lines written where stderr is not a terminal, and the rich display."""
import io
import re

import pytest
import toy_plugin  # noqa: F401  (registers the toy backend)
from click.testing import CliRunner

from harness.phases import PHASES, listening, phase
from harness.pipeline.timed import MeterSettings
from harness.profiles import load_profiles
from harness.progress import LiveProgress, PlainProgress, for_terminal
from harness.runner import RunContext, RunSettings, SweepAxes, expand, run_sweep


def _ctx():
    profile = next(iter(load_profiles().values()))
    return RunContext(run_id="toy-run", profile=profile, provenance={"profile": profile.id})


def _toy_phases(isolation: str):
    axes = SweepAxes(("toy-model",), ("baseline", "int4-wo"), (1, 2, 8), (4,), (5,), backends=("toy",))
    settings = RunSettings(meter=MeterSettings(warmup=0, min_repeats=2, min_seconds=0.0), isolation=isolation,
                           plugins=("toy_plugin",))
    events, starts = [], []
    recs = run_sweep(expand(axes), settings, _ctx(), on_start=lambda c, n: starts.append(c.index),
                     on_phase=lambda c, name, n: events.append((c.index, name)))
    return recs, events, starts


@pytest.mark.parametrize("isolation", ["process", "none"])
def test_phase_events_name_the_cell_in_flight(isolation):
    recs, events, starts = _toy_phases(isolation)
    assert [r.status for r in recs] == ["ok", "ok", "does-not-fit", "unsupported", "unsupported", "unsupported"]
    assert starts == [0, 1, 2, 3, 4, 5]
    # cell 0 loads the group; cell 1 reuses it; cell 2 fails its fit check before any engine;
    # the int4-wo group is refused while loading (the toy backend has no kernel), its later cells reuse that
    assert events == [(0, "load"), (0, "compile"), (0, "measure"), (1, "compile"), (1, "measure"), (3, "load")]


def test_phase_messages_do_not_extend_the_cell_timeout():
    """The timeout counts from the cell's start message: a cell that hangs while announcing phases
    every 50 ms is still killed at its timeout."""
    import time

    settings = RunSettings(meter=MeterSettings(warmup=0, min_repeats=2, min_seconds=0.0), isolation="process",
                           plugins=("toy_plugin",), cell_timeout_s=2.0)
    cells = expand(SweepAxes(("toy-model",), ("baseline",), (toy_plugin.CHATTY_BATCH,), (4,), (5,), backends=("toy",)))
    events = []
    t0 = time.monotonic()
    recs = run_sweep(cells, settings, _ctx(), on_phase=lambda c, name, n: events.append(name))
    assert time.monotonic() - t0 < 60
    assert recs[0].status == "failed" and "timed out after 2 s" in recs[0].reason
    assert events.count("measure") >= 5     # the phases did arrive while it hung


def test_unknown_phase_is_refused_and_no_listener_is_a_no_op():
    phase("load")   # nobody listening: nothing happens
    with pytest.raises(ValueError, match="unknown phase 'warp'; known: load, apply"):
        phase("warp")
    heard = []
    with listening(heard.append):
        phase("compile")
        with listening(lambda n: heard.append("inner " + n)):
            phase("measure")
        phase("quality")
    phase("load")
    assert heard == ["compile", "inner measure", "quality"] and set(heard[:1]) <= set(PHASES)


def test_plain_progress_writes_one_line_per_phase_change_with_the_time_of_the_one_left():
    lines, now = [], [100.0]
    p = PlainProgress(lines.append, clock=lambda: now[0])
    p.start("[1/2]", "[1/2] m baseline b1 p4 ... (1 after this)")
    p.phase("load")
    now[0] += 2.5
    p.phase("compile")
    now[0] += 42.25
    p.phase("measure")
    p.done("[1/2]   ok: decode 1.0 tok/s")
    p.start("[2/2]", "[2/2] m baseline b2 p4 ... (0 after this)")
    p.phase("compile")
    assert lines == ["[1/2] m baseline b1 p4 ... (1 after this)", "[1/2]   phase load",
                     "[1/2]   phase compile (after load: 2.5 s)", "[1/2]   phase measure (after compile: 42.2 s)",
                     "[1/2]   ok: decode 1.0 tok/s",   # the status line as before: nothing appended
                     "[2/2] m baseline b2 p4 ... (0 after this)", "[2/2]   phase compile"]


def test_live_progress_shows_the_phase_and_keeps_the_status_lines():
    from rich.console import Console

    buf = io.StringIO()
    live = LiveProgress(2, console=Console(file=buf, force_terminal=True, width=120))
    live.start("[1/2]", "[1/2] m baseline [pytorch] b1 ... (1 after this)")
    live.phase("compile")
    live.progress.refresh()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())   # without the terminal's colour codes
    # the phase (the backend's brackets kept: no markup), its elapsed seconds, the sweep's count
    assert "[1/2] m baseline [pytorch] b1 · compile" in shown and re.search(r"compile\s+\d+ s", shown)
    assert "0/2" in shown
    live.done("[1/2]   ok: decode 1.0 tok/s")
    assert live.progress.tasks[live.task].completed == 1
    live.close()
    out = buf.getvalue()
    assert "[1/2] m baseline [pytorch] b1 ... (1 after this)" in out and "[1/2]   ok: decode 1.0 tok/s" in out


def test_for_terminal_picks_the_display_by_isatty():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(for_terminal(3, print, io.StringIO()), PlainProgress)
    live = for_terminal(3, print, Tty())
    try:
        assert isinstance(live, LiveProgress)
    finally:
        live.close()


def test_cli_run_off_a_terminal_prints_the_phases_as_lines(tmp_path):
    """A real one-cell run on the embedded model: stderr is not a terminal under CliRunner."""
    from harness.cli import main

    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["run", "--model", "synthetic:tiny", "--variants", "baseline", "--batch", "1",
                                    "--quick", "--cpu-power-w", "40", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("[1/1] "))
    status = next(i for i, ln in enumerate(lines) if ln.startswith("[1/1]   ok: decode"))
    phases = [ln.split("phase ")[1].split(" ")[0] for ln in lines[start + 1:status]]
    assert phases == ["load", "apply", "quality", "compile", "measure"], lines[start:status + 1]
    assert "(after load: " in lines[start + 2]


def test_the_ray_driver_relays_phases_of_the_cell_in_flight_only():
    from harness.executor.ray_executor import _Driver, _Group

    cells = expand(SweepAxes(("toy-model",), ("baseline",), (1, 2), (4,), (5,), backends=("toy",)))
    d = _Driver.__new__(_Driver)          # no cluster: only the message handling
    d.n, d.on_start, d.on_record = 2, None, None
    heard = []
    d.on_phase = lambda cell, name, n: heard.append((cell.index, name, n))
    g = _Group("p", list(cells))
    d._handle(g, ("phase", 0, "load"))     # before its start message: no cell in flight, dropped
    d._handle(g, ("start", 0))
    d._handle(g, ("phase", 0, "compile"))
    d._handle(g, ("phase", 1, "measure"))  # not the cell in flight: dropped
    assert heard == [(0, "compile", 2)]


def test_plain_lines_keep_each_concurrent_cell_apart():
    """Two groups on two Ray nodes: each cell's phase lines carry its own head and its own clock."""
    from harness.progress import PlainProgress

    lines, t = [], [0.0]
    p = PlainProgress(lines.append, clock=lambda: t[0])
    p.start("[1/2]", "[1/2] a ... (1 after this)", key=7)
    p.start("[2/2]", "[2/2] b ... (0 after this)", key=3)
    t[0] = 1.0
    p.phase("load", key=7)
    t[0] = 4.0
    p.phase("load", key=3)
    t[0] = 6.0
    p.phase("compile", key=7)
    p.done("[1/2]   ok", key=3)
    assert lines[2:5] == ["[1/2]   phase load", "[2/2]   phase load", "[1/2]   phase compile (after load: 5.0 s)"]
