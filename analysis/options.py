"""Typed config dataclasses that generate their own command-line flags (the way TRL's `TrlParser` does).

Every `seam` command is described by one dataclass. Its fields carry the default (in one place: the
dataclass) and the help text (in the field's metadata, via `opt`); `add_arguments` turns the fields into
argparse flags and `from_args` turns the parsed flags back into the dataclass. So a new setting is one
new field, and `seam CMD --help` can never disagree with the config that is stored with each run.

This module is the bottom layer of `analysis`: it imports nothing from the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable

DEFAULT_DB = Path("cache/seam.duckdb")   # the one default results file of every command


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
        positional: bool = False, choices: typing.Sequence | None = None, parse: Callable[[str], Any] | None = None,
        metavar: str | None = None, csv: bool = False, invert: bool = False, cli: bool = True,
        default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its command-line description.

    flag: the flag name when it is not `--field-name` (e.g. `--policy` for `policies`); positional: an
    argument without a dash; parse: converts the flag's text (e.g. '3/8' -> (3, 8)); csv: a list given as
    one comma-separated value (else a list flag is repeatable); invert: a bool flag that stores the
    opposite (`--quiet` for `progress`); cli: False for fields that only code sets.
    """
    meta = {"help": help, "flag": flag, "positional": positional, "choices": choices, "parse": parse,
            "metavar": metavar, "csv": csv, "invert": invert, "cli": cli}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def csv_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of an annotation like `int | None`."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if value is None or isinstance(value, bool) or value == [] or value == ():
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f" (default: {value})"


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: typing.Iterable[str] = ()) -> None:
    """Add one flag per field of the dataclass `cls` (fields with `cli=False` or in `exclude` are skipped)."""
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True):
            continue
        tp, _ = _base_type(hints[f.name])
        help_text = (meta.get("help") or "") + ("" if meta.get("positional") else _default_text(f))
        kw: dict[str, Any] = {"help": help_text.replace("%", "%%"), "dest": f.name}
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kw["choices"] = list(meta["choices"])
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        origin = typing.get_origin(tp)
        if tp is bool:
            store_true = not f.default if not meta.get("invert") else bool(f.default)
            if not meta.get("flag"):
                flag = flag if not f.default else "--no-" + f.name.replace("_", "-")
            kw.pop("choices", None)
            # default None: a flag not given leaves the dataclass default, or a preset such as --quick, in place
            parser.add_argument(flag, action="store_true" if store_true else "store_false", default=None, **kw)
            continue
        if meta.get("parse"):
            kw["type"] = meta["parse"]
        elif origin is list and meta.get("csv"):
            kw["type"] = csv_list
        elif origin is list:
            (item,) = typing.get_args(tp) or (str,)
            kw.update(action="append", type=item)
        elif tp in (int, float, str, Path):
            kw["type"] = tp
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if meta.get("positional"):
            kw.pop("dest")
            if not required:
                kw["nargs"] = "?"
            parser.add_argument(f.name, **kw)
        else:
            parser.add_argument(flag, default=None, required=required, **kw)


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass from parsed flags: flags that were not given keep the dataclass default."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
            continue
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.metadata.get("invert"):
            value = not value if isinstance(value, bool) else value
        values[f.name] = value
    return cls(**values)
