"""Plug-in modules: imported by the parent and by every worker before any cell runs, so that a
variant or backend they register exists in both processes.

Where names come from, in this order, duplicates dropped:
- `RunSettings.plugins`: module names (a run's own plug-ins);
- `HARNESS_PLUGINS`: comma-separated module names (for the command line and for tests that run
  `python -m harness.cli` in a subprocess).
`HARNESS_PLUGIN_PATH` (folders separated by os.pathsep) is put in front of sys.path first, so a
module outside any installed package (e.g. one under tests/) can be named. Workers are started with
the spawn method, which hands them the parent's sys.path and environment, so a module the parent
could import, a worker can import too.
"""
from __future__ import annotations

import importlib
import os
import sys

PLUGINS_ENV = "HARNESS_PLUGINS"
PLUGIN_PATH_ENV = "HARNESS_PLUGIN_PATH"


class PluginError(ValueError):
    """A plug-in module that cannot be imported (a ValueError: the command line makes it a usage error)."""


def plugin_names(names: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    env = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    out: list[str] = []
    for n in (*names, *env):
        if n not in out:
            out.append(n)
    return tuple(out)


def _extend_path() -> None:
    for folder in reversed([p for p in os.environ.get(PLUGIN_PATH_ENV, "").split(os.pathsep) if p]):
        folder = os.path.abspath(folder)
        if folder not in sys.path:
            sys.path.insert(0, folder)


def load_plugins(names: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """Import the plug-in modules (once: a module already imported is not run again); returns their names."""
    todo = plugin_names(names)
    if todo:
        _extend_path()
    for name in todo:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise PluginError(f"plug-in module {name!r} could not be imported: {e} "
                              f"(folders in ${PLUGIN_PATH_ENV} are searched first)") from e
    return todo
