"""Flag groups built from the dataclasses that own the settings (`bertkit.options.option`): the
flag's name, type, default and help come from the field, and the values the flags were given go
back into an instance of the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bertkit.options import flag_of, options_of


def add_options(
    group: argparse._ActionsContainer,
    defaults: Any,
    names: Iterable[str],
    notes: Mapping[str, Mapping[str, str]] | None = None,
    narrow: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One flag a field, for the fields `names` of the dataclass instance `defaults`, in that
    order; `notes[name]` fills more `{placeholders}` of a help text than `{default}`, and
    `narrow[name]` narrows a field's choices to what this command offers."""
    fields = options_of(type(defaults))
    hints = typing.get_type_hints(type(defaults))
    for name in names:
        f, value = fields[name], getattr(defaults, name)
        meta = f.metadata["option"]
        shown = meta["none"] if value is None and meta["none"] else value
        text = meta["help"].format(default=shown, **(notes or {}).get(name, {}))
        kw: dict[str, Any] = {"help": text, "dest": _dest(f)}
        if meta["negated"] or hints[name] is bool:
            kw |= {"action": "store_true", "default": False if meta["negated"] else value}
        else:
            choices = (narrow or {}).get(name, meta["choices"])
            kw |= {"type": _scalar(hints[name]), "default": None if meta["unset"] else value}
            kw |= {k: v for k, v in (("choices", choices), ("metavar", meta["metavar"])) if v is not None}
            if meta["nargs"]:
                kw["nargs"] = meta["nargs"]
        action = group.add_argument(flag_of(f), *meta["aliases"], **kw)
        action.option_of = type(defaults)  # type: ignore[attr-defined]  # the owner, for the tests


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of `cls`'s option fields that the flags set: a negated flag as the field's
    value, an unset flag left out when it was not given."""
    found: dict[str, Any] = {}
    for name, f in options_of(cls).items():
        if not hasattr(args, _dest(f)):  # a flag this command does not have
            continue
        meta, value = f.metadata["option"], getattr(args, _dest(f))
        if meta["negated"]:
            found[name] = not value
        elif value is not None or not meta["unset"]:
            found[name] = value
    return found


def build(args: argparse.Namespace, defaults: Any, **overrides: Any) -> Any:
    """`defaults` with what the flags set, then `overrides`."""
    return dataclasses.replace(defaults, **{**given(args, type(defaults)), **overrides})


def _dest(f: dataclasses.Field) -> str:
    """Where argparse keeps a field's flag: the field's name, but a negated flag's own (`quiet`)."""
    return flag_of(f).lstrip("-").replace("-", "_") if f.metadata["option"]["negated"] else f.name


def _scalar(hint: Any) -> Any:
    """The argparse type of a field's annotation: `int | None` is int, `list[str]` is str."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) in (list, tuple):
        hint = typing.get_args(hint)[0]
    return hint
