"""Command line. One module per command group, imported only when its command runs (or its help
is shown), so `harness report`, `compare` and `plan` start without torch:

    run                       harness/cli/run.py (options generated from harness/options.py)
    report, compare           harness/cli/views.py
    profiles, detect, plan    harness/cli/profiles.py
    sensitivity               harness/cli/quality.py
    import-microbench         harness/cli/microbench.py
    history (add, show)       harness/cli/history.py
    calibrate, validate-plan  harness/cli/calibrate.py
    worker                    harness/cli/worker.py (a Ray node advertising this machine's profile)
    advise                    harness/cli/advise.py (which deployment meets the constraints best)
"""
from __future__ import annotations

import importlib
import sys

import click

import harness

# command name -> (module, attribute)
COMMANDS = {
    "run": ("harness.cli.run", "run"),
    "report": ("harness.cli.views", "report"),
    "compare": ("harness.cli.views", "compare"),
    "profiles": ("harness.cli.profiles", "profiles"),
    "detect": ("harness.cli.profiles", "detect"),
    "plan": ("harness.cli.profiles", "plan"),
    "sensitivity": ("harness.cli.quality", "sensitivity"),
    "import-microbench": ("harness.cli.microbench", "import_microbench"),
    "history": ("harness.cli.history", "history"),
    "calibrate": ("harness.cli.calibrate", "calibrate"),
    "validate-plan": ("harness.cli.calibrate", "validate_plan"),
    "worker": ("harness.cli.worker", "worker"),
    "advise": ("harness.cli.advise", "advise"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported by name on first use (click's documented lazy-loading
    pattern): listing them all (`harness --help`) imports every module, running one imports one."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands or name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attr = COMMANDS[name]
        cmd = getattr(importlib.import_module(module), attr)
        self.add_command(cmd, name)
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(harness.__version__, prog_name="harness")
def main() -> None:
    """Measure LLM compression variants on real kernels, and project them onto other hardware."""


if __name__ == "__main__":
    sys.exit(main())
