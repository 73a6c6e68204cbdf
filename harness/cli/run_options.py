"""`harness run`'s click options, generated from harness/options.py, and the way back: the values
click parsed -> RunOptions, with the fields the command line set explicitly (for --resume)."""
from __future__ import annotations

import types
import typing
from pathlib import Path

import click

from harness import options as O


def _base(typ):
    """`X | None` -> X."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return typ


def _click_type(p: O.Param):
    md, typ = p.meta, _base(p.type)
    if md.get("path"):
        return click.Path(file_okay=md["path"] != "dir", dir_okay=md["path"] != "file", path_type=Path)
    if typing.get_origin(typ) is tuple:
        return str                                    # a comma list, parsed by _parse
    if md.get("choices"):
        return click.Choice(list(md["choices"]))
    if typ is int:
        return click.IntRange(md["min"]) if "min" in md else int
    if typ is float:
        return click.FloatRange(min=md["min"], min_open=md.get("min_open", False)) if "min" in md else float
    return typ


def run_options(fn):
    """Decorate a click command with every option of RunOptions, in declaration order."""
    defaults = O.RunOptions()
    for p in reversed(list(O.params())):
        if p.flag_of is not None:
            fn = click.option(p.flag_of.name, p.dest, is_flag=True, help=p.flag_of.help)(fn)
        elif _base(p.type) is bool:
            fn = click.option(f"{p.flag}/--no-{p.flag[2:]}", p.dest, default=O.get_path(defaults, p.path),
                              show_default=True, help=p.meta["help"])(fn)
        else:
            default = O.get_path(defaults, p.path)
            default = O.show(default) if isinstance(default, tuple) else default
            fn = click.option(p.flag, p.dest, type=_click_type(p), default=default, show_default=default is not None,
                              help=p.meta["help"])(fn)
    return fn


def _parse(p: O.Param, raw):
    typ = _base(p.type)
    if typing.get_origin(typ) is tuple:
        item = typing.get_args(typ)[0]
        parts = [x.strip() for x in str(raw).split(",") if x.strip()]
        if item is int:
            try:
                vals = tuple(int(x) for x in parts)
            except ValueError:
                vals = ()
            if not vals or any(v < p.meta.get("min", 1) for v in vals):
                raise ValueError(f"{p.flag} takes a comma list of positive integers, got {raw!r}")
            return vals
        return tuple(parts)
    if typ is str and isinstance(raw, Path):
        return str(raw)
    return raw


def from_cli(values: dict, given: set[str]) -> tuple[O.RunOptions, set[tuple[str, ...]]]:
    """RunOptions from click's values (keyed by parameter name) and the paths of the fields the
    command line set: those in `given` (parameter names whose source was the command line), plus
    what --quick sets."""
    values = dict(values)
    quick = bool(values.get("quick"))
    if quick:
        for k, v in O.QUICK.items():
            if k not in given:
                values[k] = v
                given = given | {k}
    nested: dict = {}
    paths: set[tuple[str, ...]] = set()
    for path, ps in O.by_field().items():
        if ps[0].flag_of is not None:
            on = [p for p in ps if values.get(p.dest)]
            if len(on) > 1:
                raise ValueError(ps[0].meta.get("conflict") or f"{' and '.join(p.flag for p in on)} exclude each other")
            if not on:
                continue
            value = on[0].flag_of.value
        else:
            value = _parse(ps[0], values[ps[0].dest])
        if any(p.dest in given for p in ps):
            paths.add(path)
        node = nested
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    opts = O.from_dict(O.RunOptions, nested)
    if quick:
        opts = O.set_path(opts, ("settings", "quality"), opts.settings.quality.for_run(True))
        paths.add(("settings", "quality", "tokens"))
    return opts, paths
