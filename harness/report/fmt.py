"""Formatting helpers shared by the views: a missing figure prints as an em dash, never as 0."""
from __future__ import annotations

NA = "—"


def num(x, digits: int = 1) -> str:
    return NA if x is None else f"{x:,.{digits}f}"


def ms(x) -> str:
    return NA if x is None else f"{x * 1e3:.2f}"


def mb(x) -> str:
    return NA if x is None else f"{x / 1e6:,.1f}"


def sig(x, n: int = 3) -> str:
    return NA if x is None else f"{x:.{n}g}"
