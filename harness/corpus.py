"""Evaluation and calibration text: the prose of `pydoc_data.topics` (ships with CPython), or a file."""
from __future__ import annotations

from pathlib import Path

DEFAULT_CORPUS_NAME = "pydoc_data.topics"


class CorpusError(ValueError):
    pass


def load_corpus(path: str | Path | None = None) -> tuple[str, str]:
    """Return (name, text). The default joins the topics in sorted key order, so it is stable."""
    if path is None:
        from pydoc_data.topics import topics

        return DEFAULT_CORPUS_NAME, "\n\n".join(topics[k] for k in sorted(topics))
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"{p}: corpus file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{p}: corpus must be UTF-8 text ({e})") from e
    if not text.strip():
        raise CorpusError(f"{p}: corpus file is empty")
    return str(p), text
