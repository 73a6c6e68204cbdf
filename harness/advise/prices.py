"""The prices file: what one GPU (one device of a profile) costs per hour, as the user pays it.

Prices are not datasheet figures, so the harness ships none: the user writes them.

    currency: USD            # optional, a label only
    source: "my contract"    # optional: where the figures come from
    per_hour:                # profile id -> price of one device per hour (> 0)
      h100-sxm-80gb: 2.50

A flat mapping of profile id -> price is accepted too. Unknown profile ids are an error (a typo would
otherwise silently price nothing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.advise.constraints import AdviseError


@dataclass(frozen=True)
class Prices:
    per_hour: dict[str, float] = field(default_factory=dict)
    currency: str = ""
    source: str = ""
    path: str = ""

    def of(self, profile: str) -> float | None:
        return self.per_hour.get(profile)


def load_prices(path: str | Path, known_profiles: set[str]) -> Prices:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise AdviseError(f"--prices {path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise AdviseError(f"--prices {path}: expected a mapping of profile id -> price per hour")
    table = data.get("per_hour", data if "per_hour" not in data else None)
    if not isinstance(table, dict):
        raise AdviseError(f"--prices {path}: per_hour must map profile ids to prices")
    meta = {k: data.get(k) for k in ("currency", "source", "note")} if "per_hour" in data else {}
    out = {}
    for pid, price in table.items():
        if pid in ("currency", "source", "note"):
            continue
        if str(pid) not in known_profiles:
            raise AdviseError(f"--prices {path}: unknown profile {pid!r} (known: {', '.join(sorted(known_profiles))})")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price <= 0:
            raise AdviseError(f"--prices {path}: {pid}: price {price!r} must be a number > 0")
        out[str(pid)] = float(price)
    return Prices(out, str(meta.get("currency") or ""), str(meta.get("source") or ""), str(path))
