"""Moved to harness/cli/microbench.py; this name stays importable for existing callers."""
from harness.cli.microbench import import_microbench  # noqa: F401
