"""Executors: where a sweep's cells run. `local` supervises worker processes on this machine (one per
(model, variant, backend) group, `--isolation process`); `--isolation none` runs them in this process
(harness.runner's loop, made interruptible by `signals.run_interruptible`)."""
from harness.executor.plugins import PluginError, load_plugins
from harness.executor.signals import Interrupted, exit_code_for

__all__ = ["Interrupted", "PluginError", "exit_code_for", "load_plugins"]
