"""Settings that are also command-line flags. A dataclass field declared with `option(...)` holds
the setting's one default and its flag's help (and, where they differ from the field's, the flag's
name, choices and metavar); `bertkit.cli` builds each flag group from the dataclass, so no default
is written twice. A help text may name the default as `{default}` (with a format spec:
`{default:g}`): it is filled in from the instance the flags are built from (pretraining's training
settings are not fine-tuning's); literal braces are doubled (`{{label: weight}}`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

_NOTHING: Any = dataclasses.MISSING


def option(
    default: Any = _NOTHING,
    *,
    help: str,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    negated: bool = False,
    unset: bool = False,
    nargs: str | None = None,
    none: str | None = None,
    default_factory: Callable[[], Any] = _NOTHING,
    repr: bool = True,
) -> Any:
    """A dataclass field that is also a flag, `--name-with-dashes` unless `flag` names it
    (`aliases`: other names the flag answers to).

    `negated`: a bool field that is True by default, set off by a store-true `flag` (`--quiet`
    for `progress`). `unset`: the flag's own default is None, "not given", and the value then
    comes from elsewhere (the environment, the task, the defaults the flags are built from);
    the field's default still stands for the Python API. `none`: how the help names a default
    of None. `repr=False` keeps a secret (an API key) out of the dataclass's repr."""
    meta: dict[str, Any] = {"help": help, "flag": flag, "aliases": aliases, "choices": choices}
    meta["metavar"] = metavar
    meta |= {"negated": negated, "unset": unset, "nargs": nargs, "none": none}
    return dataclasses.field(
        default=default, default_factory=default_factory, repr=repr, metadata={"option": meta}
    )


def options_of(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of the dataclass `cls` declared with `option`, by name, in field order."""
    return {f.name: f for f in dataclasses.fields(cls) if "option" in f.metadata}


def flag_of(f: dataclasses.Field) -> str:
    """The flag that sets field `f`."""
    return f.metadata["option"]["flag"] or "--" + f.name.replace("_", "-")
