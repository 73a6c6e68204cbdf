"""Read a folder of profile YAML files (recursively) into {id: Profile}, in a stable order."""
from __future__ import annotations

from pathlib import Path

import yaml

from harness.profiles.schema import Profile, ProfileError
from harness.profiles.validate import profile_from_mapping

PROFILE_SUFFIXES = (".yaml", ".yml")


def default_profiles_dir() -> Path:
    """The repository's `profiles/` folder (harness/profiles/loader.py -> repo root)."""
    return Path(__file__).resolve().parents[2] / "profiles"


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ProfileError(path, "<file>", f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ProfileError(path, "<file>", f"not UTF-8 text (byte {e.start}: {e.reason})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProfileError(path, "<yaml>", f"not valid YAML{where}: {problem}") from e
    return profile_from_mapping(data, path)


def load_profiles(profiles_dir: str | Path | None = None) -> dict[str, Profile]:
    """Every profile under `profiles_dir` (default: the repository's `profiles/`), keyed by id.

    Order: by class, then id, so tables and charts are the same on every run. A duplicate id is an
    error naming both files.
    """
    root = Path(profiles_dir) if profiles_dir is not None else default_profiles_dir()
    if not root.is_dir():
        raise ProfileError(root, "<folder>", "no such profiles folder (pass --profiles-dir)")
    files = sorted(p for p in root.rglob("*") if p.suffix in PROFILE_SUFFIXES and p.is_file())
    if not files:
        raise ProfileError(root, "<folder>", "holds no *.yaml profile files")
    seen: dict[str, Profile] = {}
    for f in files:
        prof = load_profile(f)
        if prof.id in seen:
            raise ProfileError(f, "id", f"duplicate id {prof.id!r}: also defined in {seen[prof.id].source_file}")
        seen[prof.id] = prof
    return {p.id: p for p in sorted(seen.values(), key=lambda p: (p.class_, p.id))}
