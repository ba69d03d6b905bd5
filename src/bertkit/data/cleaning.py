"""Reading the files users bring: a file's text, decoded as UTF-8, split into numbered lines and
forgiven the dirt real files carry, and JSON lines.

What a person cannot see is forgiven, with one warning per kind and file naming the first line
and the count (`Repairs`): lines of only whitespace and invisible characters read as blank, a BOM
beginning a line (as joined files leave) is dropped, and a TSV cell a CSV writer quoted is
unquoted. Everything else wrong is a one-line `BertkitError` naming the file and the line.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Parsing makes millions of small lists; the cyclic GC would rescan the growing heap again and
    again (reading MSRA took 4x longer). Nothing here makes cycles, so pause it meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_text(path: PathLike) -> str:
    """The whole file as text, without a BOM; unreadable or non-UTF-8 files are BertkitErrors."""
    p = Path(path)
    if p.is_dir():
        raise BertkitError("is a directory, not a file", path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise BertkitError("file not found", path) from None
    except OSError as e:
        raise BertkitError(f"cannot read the file: {e.strerror or e}", path) from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        # Decoding the whole buffer is fast; on failure the error's byte offset gives the line.
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - data.rfind(b"\n", 0, e.start)
        raise BertkitError(
            f"line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at byte {col} of the line); "
            "re-save the file as UTF-8",
            path,
        ) from None
    if not text.strip():
        raise BertkitError("file is empty", path)
    return text


def split_lines(text: str) -> list[str]:
    """The lines of `text`, without their \\n or \\r\\n ends."""
    # Not str.splitlines(): it also breaks at U+2028, \x85, \x0c ... inside texts and so
    # shifts every line number after them. Only \n (with an optional \r before it) ends a line.
    lines = text.split("\n")
    return [s[:-1] if s.endswith("\r") else s for s in lines] if "\r" in text else lines


def numbered_lines(path: PathLike) -> list[tuple[int, str]]:
    """(line number, stripped line) for each non-blank line of a small text file."""
    return [(n, line.strip()) for n, line in enumerate(split_lines(read_text(path)), 1) if line.strip()]


# --------------------------------------------------------------------------- forgiven noise

# Characters nobody sees. A line of these and whitespace reads as blank; a BOM that begins a line
# (left where files were joined) is dropped. Nothing else in a token is ever changed.
_INVISIBLE_NAMES = {
    "\u00a0": "no-break space",
    "\u200b": "zero-width space",
    "\u200c": "zero-width non-joiner",
    "\u200d": "zero-width joiner",
    "\u2060": "word joiner",
    "\ufeff": "BOM",
}
_INVISIBLE = "".join(_INVISIBLE_NAMES)
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")
_DROP_INVISIBLE = str.maketrans("", "", _INVISIBLE)
# kind: (what is counted, what was found and done), for "FILE: line N: 3 lines held ...".
_REPAIRS = {
    "blank": ("line", "held only invisible characters ({chars}); read as blank lines"),
    "bom": ("line", "began with a BOM (U+FEFF), as joined files leave; removed"),
    "space": ("tag", "ended in spaces; removed"),
    "cr": ("tag", "ended in a stray \\r (mixed line ends); removed"),
    "quoted": ("text", 'came CSV-quoted ("..." with "" inside) in a TSV file; unquoted'),
}


@dataclass
class Repairs:
    """What a reader forgave in one file: per kind, the first line and how many, for one warning
    per kind (`warn`, once the file is read) rather than one per line."""

    path: PathLike
    first: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    chars: set[str] = field(default_factory=set)

    def add(self, kind: str, line: int) -> None:
        self.first[kind] = min(line, self.first.get(kind, line))
        self.count[kind] = self.count.get(kind, 0) + 1

    def warn(self) -> None:
        chars = ", ".join(f"U+{ord(c):04X} ({_INVISIBLE_NAMES[c]})" for c in sorted(self.chars))
        for kind in sorted(self.first, key=self.first.__getitem__):
            (noun, done), n = _REPAIRS[kind], self.count[kind]
            what = f"{n} {noun}{'' if n == 1 else 's'} {done.format(chars=chars)}"
            log.warning("%s: line %d: %s", self.path, self.first[kind], what)


def forgive_invisible(text: str, repairs: Repairs) -> str:
    """`text` with every line of only whitespace and invisible characters made empty and the BOMs
    that begin a line dropped. Only the lines holding such a character are looked at."""
    if not any(c in text for c in _INVISIBLE):  # (str.__contains__ is far faster than a regex)
        return text
    out, done, line, at = [], 0, 1, 0
    for m in _INVISIBLE_RE.finditer(text):
        if m.start() < done:  # a later character of a line already seen
            continue
        start, end = text.rfind("\n", 0, m.start()) + 1, text.find("\n", m.start())
        end = len(text) if end < 0 else end
        line, at = line + text.count("\n", at, start), start
        s = new = text[start:end]
        if not s.translate(_DROP_INVISIBLE).strip():
            repairs.add("blank", line)
            repairs.chars |= set(s) & set(_INVISIBLE)
            new = ""
        elif s.startswith("\ufeff"):
            repairs.add("bom", line)
            new = s.lstrip("\ufeff")
        out += [text[done:start], new]
        done = end
    text = "".join(out) + text[done:]
    if not text.strip():
        raise BertkitError("file is empty (it holds only whitespace and invisible characters)", repairs.path)
    return text


def unquote(cell: str, n: int, repairs: Repairs) -> str:
    """A TSV cell a CSV writer quoted (GoEmotions: `"a ""b"" c"`) as its text; others as they are.
    Only cells with a doubled quote inside and no lone one are taken for quoted: GLUE's TSV texts
    hold plain, unbalanced quotes."""
    if len(cell) < 4 or cell[0] != '"' or cell[-1] != '"' or '""' not in cell[1:-1]:
        return cell
    inner = cell[1:-1]
    if '"' in inner.replace('""', ""):
        return cell
    repairs.add("quoted", n)
    return inner.replace('""', '"')


# --------------------------------------------------------------------------- JSON


def jsonl_records(text: str, path: PathLike) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    out = []
    for n, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BertkitError(
                f"line {n}: invalid JSON ({e.msg} at column {e.colno}); expected one JSON object per line",
                path,
            ) from None
        if not isinstance(obj, dict):
            raise BertkitError(f"line {n}: expected a JSON object, found {json_type(obj)}", path)
        out.append((n, obj))
    return out


def json_type(v: Any) -> str:
    """What a JSON value is, in words ("an object", "null", ...), for error messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(v), "a number")


def str_field(obj: dict, name: str, n: int, path: PathLike) -> str:
    """The non-blank string field `name` of the JSON object on line `n`."""
    if name not in obj:
        raise BertkitError(f"line {n}: missing field {name!r}", path)
    value = obj[name]
    if not isinstance(value, str):
        raise BertkitError(f"line {n}: field {name!r} must be a string, found {json_type(value)}", path)
    if not value.strip():
        raise BertkitError(f"line {n}: empty {name!r}", path)
    return value
