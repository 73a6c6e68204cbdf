"""Summary statistics for timing samples (pure Python; no numpy needed by callers)."""
from __future__ import annotations

import math
import statistics
from typing import Sequence


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile, q in [0, 100]; None for no samples."""
    if not xs:
        return None
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def iqr(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    return percentile(xs, 75) - percentile(xs, 25)


def stdev(xs: Sequence[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) >= 2 else None


def cv(xs: Sequence[float]) -> float | None:
    """Coefficient of variation (sample stdev / mean); None under two values or at a zero mean."""
    sd = stdev(xs)
    m = statistics.mean(xs) if xs else 0
    return sd / m if sd is not None and m else None


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None
