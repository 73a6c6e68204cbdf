"""Moved to harness/cli/quality.py; this name stays importable for existing callers."""
from harness.cli.quality import sensitivity  # noqa: F401
