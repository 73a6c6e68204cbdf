"""Formatting helpers shared by the views: a missing figure prints as an em dash, never as 0."""
from __future__ import annotations

NA = "—"


def num(x, digits: int = 1) -> str:
    return NA if x is None else f"{x:,.{digits}f}"


def ms(x) -> str:
    return NA if x is None else f"{x * 1e3:.2f}"


def mb(x) -> str:
    return NA if x is None else f"{x / 1e6:,.1f}"


def gb(x) -> str:
    return NA if x is None else f"{x / 1e9:,.2f}"


def sig(x, n: int = 3) -> str:
    return NA if x is None else f"{x:.{n}g}"


_MD_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;",
                             "\r": " ", "\n": " ", "`": "\\`"})


def md(x) -> str:
    """A user-supplied string (model path, variant with its policy file, failure reason, corpus name)
    as Markdown text: `|` cannot split a table column, `<`, `>`, `&` cannot pass through as raw HTML,
    a newline cannot end a table row, a backtick cannot open a code span. None prints as the em dash."""
    if x is None:
        return NA
    return str(x).translate(_MD_ESCAPES)


def machine(r) -> str:
    """The hardware a record was measured on, from its own provenance (records of merged runs differ):
    its first GPU's name, else its CPU's."""
    p = r.provenance or {}
    gpus = p.get("gpus") or []
    return str(gpus[0]) if gpus else str(p.get("cpu") or "unknown machine")
