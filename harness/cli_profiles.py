"""Moved to harness/cli/profiles.py; this name stays importable for existing callers."""
from harness.cli.profiles import detect, plan, profiles  # noqa: F401
