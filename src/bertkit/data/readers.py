"""Readers for the files users bring: TSV/CSV/JSONL classification data, CoNLL token columns,
CLUENER-style span JSONL and SQuAD v1.1 JSON.

Every problem with an input file is a one-line `BertkitError` that names the file and, where it
applies, the line, so the CLI can print it without a traceback. Tags always come back as IOB2.
What a person cannot see is forgiven, with one warning per kind and file naming the first line
and the count: lines of only whitespace and invisible characters read as blank, a BOM beginning
a line (as joined files leave) is dropped, and so are spaces or a stray \r after a CoNLL tag.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gc
import io
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate, chain
from operator import add, sub
from pathlib import Path
from typing import Any, cast

import bertkit.data.schemes as schemes
from bertkit.data.schemes import detect as detect_scheme  # noqa: F401 - re-exported, as before
from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

PathLike = str | os.PathLike
Column = str | int | None


@dataclass
class TextExample:
    """One row of a classification/regression file; `line` is its 1-based line in the file."""

    text: str
    pair: str | None
    label: str | float | tuple[str, ...] | None  # a tuple of names for multi-label
    line: int


@dataclass
class TokenExample:
    """One sentence: tokens, IOB2 tags (None when the file has none), the sentence as text and
    each token's (start, end) character span in it; `line` is the line of the first token;
    `scheme` the tag scheme its CoNLL file was read in (None: no tags, or not a CoNLL file)."""

    tokens: list[str]
    tags: list[str] | None
    text: str
    offsets: list[tuple[int, int]]
    line: int
    scheme: str | None = None


@dataclass
class QAExample:
    """One SQuAD question; `answers` holds {"text", "answer_start"} dicts."""

    id: str
    question: str
    context: str
    answers: list[dict]
    title: str | None


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing makes millions of small lists; the cyclic GC would rescan the growing heap again and
    again (reading MSRA took 4x longer). Nothing here makes cycles, so pause it meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_text(path: PathLike) -> str:
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


def _lines(text: str) -> list[str]:
    # Not str.splitlines(): it also breaks at U+2028, \x85, \x0c ... inside texts and so
    # shifts every line number after them. Only \n (with an optional \r before it) ends a line.
    lines = text.split("\n")
    return [s[:-1] if s.endswith("\r") else s for s in lines] if "\r" in text else lines


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
class _Repairs:
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


def _forgive_invisible(text: str, repairs: _Repairs) -> str:
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


def _jsonl(text: str, path: PathLike) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    out = []
    for n, line in enumerate(_lines(text), 1):
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
            raise BertkitError(f"line {n}: expected a JSON object, found {_json_type(obj)}", path)
        out.append((n, obj))
    return out


def _json_type(v: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(v), "a number")


# --------------------------------------------------------------------------- classification

_FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
_TEXT_NAMES = ("sentence", "text", "text_a")
_PAIR_NAMES = (("sentence1", "sentence2"), ("#1 String", "#2 String"), ("text_a", "text_b"))
_LABEL_NAMES = ("label", "score", "Quality")  # Quality: MRPC's label column
# With columns given by index, a first row holding any of these names is taken for a header.
_HEADER_HINTS = {*_TEXT_NAMES, *_LABEL_NAMES, "index", "id", "sentence1", "sentence2", "#1 String", "text_b"}


@_gc_paused()
def read_text_classification(
    path: PathLike,
    format: str | None = None,
    text_column: Column = None,
    pair_column: Column = None,
    label_column: Column = None,
    header: bool | None = None,
    regression: bool = False,
    label_sets: LabelSets | None = None,
) -> list[TextExample]:
    """Read a TSV, CSV or JSON-lines classification (or, with `regression`, regression) file.

    Columns are header names or 0-based indices (an int or a digit string). `header=None`
    guesses: a header is present when columns are given by name, when none are given and the
    first row names a text column, or when columns are given by index and the first row holds
    a usual column name (label, sentence, index, ...). With no columns given the header must
    name them: `sentence1`/`sentence2`, `#1 String`/`#2 String` or `text_a`/`text_b` pairs, else
    `sentence`, `text` or `text_a`; label `label`, `score` or `Quality`. A default label column
    the file lacks (an unlabelled test file) gives label None; a requested one is an error. Once
    any column is given, the others are absent unless given too (`text_column` alone: no labels).
    TSV is read without quoting (GLUE texts hold unbalanced quotes), CSV with normal quoting.
    With `label_sets` (multi-label) each label cell holds a set of labels (see `LabelSets`).
    Lines of only whitespace and invisible characters are skipped like blank lines, and a BOM
    beginning a line is dropped, with one warning per kind.
    """
    repairs = _Repairs(path)
    text = _forgive_invisible(_read_text(path), repairs)
    fmt = format or _FORMATS.get(Path(path).suffix.lower())
    if fmt not in ("tsv", "csv", "jsonl"):
        what = f"format {format!r}" if format else f"extension {Path(path).suffix!r}"
        raise BertkitError(f"unknown {what}; pass format='tsv', 'csv' or 'jsonl'", path)
    if fmt == "jsonl":
        records = _jsonl(text, path)
        examples = _jsonl_examples(
            records, path, text_column, pair_column, label_column, regression, label_sets
        )
        repairs.warn()
        return examples
    if fmt == "tsv":
        rows = [(n, line.split("\t")) for n, line in enumerate(_lines(text), 1) if line]
    else:
        rows = _csv_rows(text, path)
    # A digit string names a column by position, like an int.
    cols = [
        int(c) if isinstance(c, str) and c.lstrip("-").isdigit() else c
        for c in (text_column, pair_column, label_column)
    ]
    first_line, first = rows[0]
    names = [c.strip() for c in first]
    if header is None:
        if any(isinstance(c, str) for c in cols):
            header = True
        elif cols == [None, None, None]:
            header = any(n in names for n in _TEXT_NAMES + ("sentence1", "#1 String"))
        else:
            header = any(n in _HEADER_HINTS for n in names)
    if cols == [None, None, None]:
        if not header:
            raise BertkitError(
                "no header row naming the text column (sentence, text, text_a, sentence1, #1 String); "
                "pass text_column= and label_column= (0-based indices for a file without a header)",
                path,
            )
        pair = next((p for p in _PAIR_NAMES if p[0] in names and p[1] in names), None)
        text_name = pair[0] if pair else next((t for t in _TEXT_NAMES if t in names), None)
        if text_name is None:
            raise BertkitError(f"line {first_line}: no text column in the header ({', '.join(names)})", path)
        cols = [text_name, pair[1] if pair else None, next((x for x in _LABEL_NAMES if x in names), None)]
    data = rows[1:] if header else rows
    if not data:
        raise BertkitError("no examples: the file holds only a header row", path)
    ncols = len(first)
    ti, pi, li = (
        _column(c, role, names if header else None, ncols, first_line, path)
        for c, role in zip(cols, ("text", "pair", "label"), strict=True)
    )
    if ti is None:  # columns were given, but not the text one
        raise BertkitError("no text column: pass text_column= along with the other columns", path)
    shape = f" ({', '.join(names)})" if header else ""
    out = []
    for n, cells in data:
        if len(cells) != ncols:
            raise BertkitError(f"line {n}: expected {ncols} columns{shape}, found {len(cells)}", path)
        text_value = _unquote(cells[ti], n, repairs)
        if not text_value.strip():
            raise BertkitError(f"line {n}: empty text", path)
        pair_value = None if pi is None else _unquote(cells[pi], n, repairs)
        if pair_value is not None and not pair_value.strip():
            raise BertkitError(f"line {n}: empty pair text", path)
        label = None if li is None else _label(cells[li], regression, n, path, label_sets)
        out.append(TextExample(text_value, pair_value, label, n))
    repairs.warn()
    return out


def _unquote(cell: str, n: int, repairs: _Repairs) -> str:
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


def _csv_rows(text: str, path: PathLike) -> list[tuple[int, list[str]]]:
    """(first line, cells) for each non-blank CSV record; a quoted field may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, start = [], 1
    try:
        for cells in reader:
            if cells:
                rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as e:
        raise BertkitError(f"line {reader.line_num}: {e}", path) from None
    return rows


def _column(
    col: Column, role: str, names: list[str] | None, ncols: int, line: int, path: PathLike
) -> int | None:
    if col is None:
        return None
    if isinstance(col, int):
        if not -ncols <= col < ncols:
            raise BertkitError(f"line {line}: {role} column {col} out of range: {ncols} columns", path)
        return col % ncols
    if names is None:
        raise BertkitError(f"{role} column {col!r} is a name, but the file has no header row", path)
    if col not in names:
        raise BertkitError(f"line {line}: {role} column {col!r} not in the header ({', '.join(names)})", path)
    return names.index(col)


@dataclass(frozen=True)
class LabelSets:
    """How a multi-label cell reads: a JSON list (`["joy", "love"]`, a JSON-lines array or a cell
    starting with `[`), or names joined by `separator` (`joy,love`); empty means no label. With
    `names` (a label file's lines, or a trained model's labels) every label must be one of them,
    and a number that is not itself a name is an id: the 0-based line of `names` (GoEmotions'
    `4,27` with `emotions.txt`)."""

    separator: str = ","
    names: tuple[str, ...] | None = None
    source: str = "the label file"  # where `names` came from, for error messages

    def parse(self, raw: Any, n: int, path: PathLike) -> tuple[str, ...]:
        values = self._values(raw, n, path)
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (str, int))]
        if bad:
            raise BertkitError(f"line {n}: a label must be a name or an id, found {_json_type(bad[0])}", path)
        names = [str(v).strip() for v in values]
        return tuple(dict.fromkeys(self._name(v, n, path) for v in names if v))

    def _values(self, raw: Any, n: int, path: PathLike) -> list:
        if raw is None:
            return []
        if isinstance(raw, str) and raw.strip().startswith("["):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as e:
                raise BertkitError(
                    f"line {n}: malformed JSON list of labels ({e.msg} at column {e.colno})", path
                ) from None
        if isinstance(raw, str):
            return raw.split(self.separator)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return [raw]
        if not isinstance(raw, list):
            raise BertkitError(
                f"line {n}: labels must be a list of names or ids, found {_json_type(raw)}", path
            )
        return raw

    def _name(self, value: str, n: int, path: PathLike) -> str:
        if self.names is None or value in self._known:
            return value
        if value.isdigit():
            if int(value) < len(self.names):
                return self.names[int(value)]
            raise BertkitError(
                f"line {n}: label id {value} out of range: {self.source} has {len(self.names)} labels "
                f"(ids 0-{len(self.names) - 1})",
                path,
            )
        shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
        raise BertkitError(f"line {n}: label {value!r} is not in {self.source} ({shown})", path)

    @functools.cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.names or ())


def numbered_lines(path: PathLike) -> list[tuple[int, str]]:
    """(line number, stripped line) for each non-blank line of a small text file."""
    return [(n, line.strip()) for n, line in enumerate(_lines(_read_text(path)), 1) if line.strip()]


def read_label_file(path: PathLike) -> list[str]:
    """The label names of a label file: one a line (blank lines skipped), none repeated."""
    seen: dict[str, int] = {}
    for n, name in numbered_lines(path):
        if name in seen:
            raise BertkitError(f"line {n}: label {name!r} repeats line {seen[name]}", path)
        seen[name] = n
    return list(seen)


def _label(
    raw: Any, regression: bool, n: int, path: PathLike, sets: LabelSets | None = None
) -> str | float | tuple[str, ...]:
    if sets is not None:
        return sets.parse(raw, n, path)
    if isinstance(raw, (dict, list)) or raw is None:
        raise BertkitError(f"line {n}: label must be a string or a number, found {_json_type(raw)}", path)
    value = str(raw).strip()
    if not value:
        raise BertkitError(f"line {n}: empty label", path)
    if not regression:
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BertkitError(f"line {n}: regression label {value!r} is not a finite number", path)
    return number


def _jsonl_examples(
    records: list[tuple[int, dict]],
    path: PathLike,
    text_field: Column,
    pair_field: Column,
    label_field: Column,
    regression: bool,
    label_sets: LabelSets | None = None,
) -> list[TextExample]:
    if isinstance(text_field, int) or isinstance(pair_field, int) or isinstance(label_field, int):
        raise BertkitError("JSON-lines fields are named, not numbered", path)
    # Optional fields are decided by the first record: all records then must have them.
    first = records[0][1]
    pair_field = pair_field or next((f for f in ("text_pair", "pair") if f in first), None)
    defaults = ("labels", "label") if label_sets is not None else ("label",)
    label_field = label_field or next((f for f in defaults if f in first), None)
    out = []
    for n, obj in records:
        text = _str_field(obj, text_field or "text", n, path)
        pair = None if pair_field is None else _str_field(obj, pair_field, n, path)
        if label_field is not None and label_field not in obj:
            raise BertkitError(f"line {n}: missing field {label_field!r}", path)
        label = None if label_field is None else _label(obj[label_field], regression, n, path, label_sets)
        out.append(TextExample(text, pair, label, n))
    return out


def _str_field(obj: dict, name: str, n: int, path: PathLike) -> str:
    if name not in obj:
        raise BertkitError(f"line {n}: missing field {name!r}", path)
    value = obj[name]
    if not isinstance(value, str):
        raise BertkitError(f"line {n}: field {name!r} must be a string, found {_json_type(value)}", path)
    if not value.strip():
        raise BertkitError(f"line {n}: empty {name!r}", path)
    return value


# --------------------------------------------------------------------------- token tagging

_CJK = re.compile(
    "[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]"
)


@_gc_paused()
def read_conll(
    path: PathLike,
    token_column: int = 0,
    tag_column: int | None = -1,
    scheme: str = "auto",
    docstart: bool = True,
    strip_digit_suffix: bool = False,
    join: str = "auto",
) -> list[TokenExample]:
    """Read a CoNLL-style column file: one token a line, blank lines between sentences.

    Columns are split at tabs when the line has one, else at spaces; every line must have as many
    columns as the first. `-DOCSTART-` lines are skipped (`docstart=True`). `tag_column=None`
    reads tokens only (for prediction). `strip_digit_suffix` drops the word-position digit that
    Weibo NER appends to each character (`科0` -> `科`). Tags come back as IOB2. `scheme` names
    the file's scheme (IOB1, IOB2, IOE, BIOES, BMES, BILOU or an alias: see `schemes`), checked
    strictly, or "auto" (see `detect_scheme`), which repairs stray I- tags with a warning and
    refuses mixed schemes; the scheme read is logged and set in each `TokenExample.scheme`.
    `join` lays out `TokenExample.text`: "space", "none" or "auto" (see `_join_for`). A line of
    only whitespace and invisible characters (BOM, zero-width spaces, word joiner, no-break
    space) is a blank line; a BOM beginning a line is dropped, and tags lose trailing spaces and
    a stray \r; each kind is one warning (see `_Repairs`).
    """
    if scheme not in schemes.CHOICES or join not in ("auto", "space", "none"):
        raise BertkitError(f"scheme must be one of {schemes.CHOICES} and join one of auto, space, none")
    repairs = _Repairs(path)
    text = _forgive_invisible(_read_text(path), repairs)
    lines = _lines(text)
    # Split every line in one comprehension (fast on MSRA's 2.2M lines); blank lines become None.
    rows = [
        (s.rstrip().split("\t") if "\t" in s else s.split()) if s and not s.isspace() else None for s in lines
    ]
    # Sentences end at blank and -DOCSTART- lines; slicing between them keeps per-line work in C.
    breaks = [i for i, r in enumerate(rows) if r is None or (docstart and r[0] == "-DOCSTART-")]
    sentences: list[tuple[int, list[str], list[str]]] = []  # (line of the first token, tokens, tags)
    ncols = begin = 0
    tc = token_column if tag_column is None else tag_column
    for end in [*breaks, len(rows)]:
        # Blank lines (None) are all breaks, so a block between two holds split lines only.
        block, n = cast("list[list[str]]", rows[begin:end]), begin + 1
        begin = end + 1
        if not block:
            continue
        if not ncols:
            ncols, first = len(block[0]), n
            if not -ncols <= token_column < ncols:
                raise BertkitError(f"line {n}: no token column {token_column} ({ncols} columns)", path)
            if not -ncols <= tc < ncols or (tag_column is not None and tc % ncols == token_column % ncols):
                raise BertkitError(
                    f"line {n}: no tag column ({ncols} columns); tag_column=None: no tags", path
                )
        if set(map(len, block)) != {ncols}:
            i, found = next((i, len(r)) for i, r in enumerate(block) if len(r) != ncols)
            raise BertkitError(
                f"line {n + i}: expected {ncols} columns like line {first}, found {found}", path
            )
        sentences.append((n, [r[token_column] for r in block], [r[tc] for r in block]))
    if not sentences:
        raise BertkitError("no sentences, only -DOCSTART- lines", path)
    for start, toks, _ in sentences:
        if strip_digit_suffix:
            bad = [i for i, t in enumerate(toks) if len(t) < 2 or t[-1] not in "0123456789"]
            if bad:
                raise BertkitError(f"line {start + bad[0]}: no digit to strip from {toks[bad[0]]!r}", path)
            toks[:] = [t[:-1] for t in toks]
        if "" in toks or any(map(str.isspace, toks)):
            raise BertkitError(f"line {start + [t.strip() for t in toks].index('')}: empty token", path)
    read_as = None
    if tag_column is not None:
        _clean_tag_ends(text, lines, sentences, tc % ncols == ncols - 1, repairs)
        read_as = schemes.to_iob2([(start, tags) for start, _, tags in sentences], scheme, path)
        how = "detected; --tag-scheme forces one" if scheme == "auto" else "as given"
        log.info("%s: tags read as %s (%s)", path, read_as.upper(), how)
    width = 1 if _join_for([s[1] for s in sentences], join) == "space" else 0
    out = []
    for start, toks, iob2 in sentences:
        lens = list(map(len, toks))
        ends = list(accumulate(lens))  # (C-level arithmetic: MSRA has 2.2M tokens)
        if width:
            ends = list(map(add, ends, range(len(toks))))
        offsets = list(zip(map(sub, ends, lens), ends, strict=True))
        text = (" " if width else "").join(toks)
        out.append(TokenExample(toks, None if tag_column is None else iob2, text, offsets, start, read_as))
    repairs.warn()
    return out


def _clean_tag_ends(
    text: str,
    lines: list[str],
    sentences: list[tuple[int, list[str], list[str]]],
    last: bool,
    repairs: _Repairs,
) -> None:
    """Count the tags that ended in spaces or a stray \\r (left by mixed line ends), and strip them.
    In the last column (`last`) splitting already stripped them: then only tab lines ending in " "
    or "\\r" are counted, looked for only when the text holds such an ending at all."""
    if last:
        # (One-character searches first: they are far faster than two-character ones.)
        ends = "\t" in text and ("\r" in text or " " in text)
        ends = ends and (any(e in text for e in (" \n", " \r", "\r\r")) or text.endswith((" ", "\r")))
        for i, s in enumerate(lines if ends else ()):
            if s[-1:] in (" ", "\r") and "\t" in s and not s.isspace():
                repairs.add(_end_kind(s), i + 1)
        return
    dirty = {t for t in set().union(*(s[2] for s in sentences)) if t[-1:].isspace()}
    for start, _, tags in sentences if dirty else ():
        if not dirty.isdisjoint(tags):
            for i, t in enumerate(tags):
                if t in dirty:
                    repairs.add(_end_kind(t), start + i)
            tags[:] = [t.rstrip() for t in tags]


def _end_kind(s: str) -> str:
    return "cr" if "\r" in s[len(s.rstrip()) :] else "space"


def _join_for(sentences: list[list[str]], join: str) -> str:
    """ "auto" joins without spaces when the file is character-level CJK: more than half of its
    tokens are single CJK characters and no token holds two (a word-segmented file keeps its
    spaces, and a stray CJK token does not glue an English file together). Decided per file, so
    every sentence of a file is laid out alike."""
    if join != "auto":
        return join
    chars = "".join(chain.from_iterable(sentences))
    tokens = sum(map(len, sentences))
    if not _CJK.search(chars):
        return "space"
    if len(chars) != tokens:  # some tokens are longer than one character
        if any(len(_CJK.findall(t)) > 1 for s in sentences for t in s if len(t) > 1):
            return "space"
        chars = "".join(t for s in sentences for t in s if len(t) == 1)
    return "none" if 2 * len(_CJK.findall(chars)) > tokens else "space"


# --------------------------------------------------------------------------- spans


@_gc_paused()
def read_span_jsonl(
    path: PathLike, text_field: str = "text", label_field: str = "label", nested: str = "outer"
) -> list[TokenExample]:
    """Read CLUENER-style JSON lines, `{"text": ..., "label": {type: {span: [[start, end], ...]}}}`
    with inclusive ends, into character tokens with IOB2 tags.

    Whitespace characters are not tokens (BERT drops them); offsets index the original text, which
    is `TokenExample.text`. Spans must match the text they point at. Flat tags cannot nest, so a
    span inside another is dropped with `nested="outer"` (CLUENER train has a company inside a
    book title) or is an error with `nested="error"`; spans that cross are always an error.
    Without the label field in the first record (a test file) tags are None.
    """
    if nested not in ("outer", "error"):
        raise BertkitError(f"unknown nested {nested!r} (outer or error)")
    repairs = _Repairs(path)
    records = _jsonl(_forgive_invisible(_read_text(path), repairs), path)
    labelled = label_field in records[0][1]
    out = []
    for n, obj in records:
        text = _str_field(obj, text_field, n, path)
        keep = [i for i, ch in enumerate(text) if not ch.isspace()]
        tags = None
        if labelled:
            if label_field not in obj:
                raise BertkitError(f"line {n}: missing field {label_field!r}", path)
            char_tags = ["O"] * len(text)
            for s, e, kind in _spans(obj[label_field], text, nested, n, path):
                inside = [i for i in range(s, e + 1) if not text[i].isspace()]
                for j, i in enumerate(inside):
                    char_tags[i] = ("I-" if j else "B-") + kind
            tags = [char_tags[i] for i in keep]
        out.append(TokenExample([text[i] for i in keep], tags, text, [(i, i + 1) for i in keep], n))
    repairs.warn()
    return out


def _spans(label: Any, text: str, nested: str, n: int, path: PathLike) -> list[tuple[int, int, str]]:
    """The checked, non-overlapping (start, end inclusive, type) spans of one record."""
    if label is None:
        return []
    if not isinstance(label, dict) or not all(isinstance(v, dict) for v in label.values()):
        raise BertkitError(f"line {n}: label must be an object {{type: {{span: [[start, end], ...]}}}}", path)
    found = set()
    for kind, spans in label.items():
        for span, places in spans.items():
            for place in places if isinstance(places, list) else [places]:
                ok = isinstance(place, list) and len(place) == 2
                if not ok or not all(type(x) is int for x in place):
                    raise BertkitError(f"line {n}: span {span!r}: expected [start, end], not {place!r}", path)
                s, e = place
                if not 0 <= s <= e < len(text) or text[s : e + 1] != span:
                    raise BertkitError(
                        f"line {n}: span {span!r} ({kind}) at [{s}, {e}] does not match the text there "
                        f"({text[max(s, 0) : e + 1]!r}); ends are inclusive",
                        path,
                    )
                found.add((s, e, kind))
    kept: list[tuple[int, int, str]] = []
    for s, e, kind in sorted(found, key=lambda x: (x[0], -x[1], x[2])):
        if kept and s <= kept[-1][1]:  # kept spans are disjoint and sorted: only the last can overlap
            ps, pe, pkind = kept[-1]
            if nested == "outer" and e <= pe and (s, e) != (ps, pe):
                continue
            raise BertkitError(f"line {n}: span [{s}, {e}] ({kind}) overlaps [{ps}, {pe}] ({pkind})", path)
        kept.append((s, e, kind))
    return kept


# --------------------------------------------------------------------------- SQuAD


def read_squad(path: PathLike) -> list[QAExample]:
    """Read SQuAD v1.1 JSON. Each answer must lie in its context at `answer_start`; a missing or
    mistyped field is an error naming its place, e.g. `data[0].paragraphs[2].qas[1]`."""
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BertkitError(f"line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})", path) from None
    out: list[QAExample] = []
    seen: dict[str, str] = {}
    for a, article in enumerate(_get(doc, "data", list, "", path)):
        at = f"data[{a}]"
        title = _get(article, "title", str, at, path, optional=True)
        for p, para in enumerate(_get(article, "paragraphs", list, at, path)):
            pt = f"{at}.paragraphs[{p}]"
            context = _get(para, "context", str, pt, path)
            for q, qa in enumerate(_get(para, "qas", list, pt, path)):
                qt = f"{pt}.qas[{q}]"
                qid = str(_get(qa, "id", (str, int), qt, path))
                if qid in seen:
                    raise BertkitError(f"{qt}: question id {qid!r} repeats {seen[qid]}", path)
                seen[qid] = qt
                question = _get(qa, "question", str, qt, path)
                answers = []
                for k, ans in enumerate(_get(qa, "answers", list, qt, path)):
                    ak = f"{qt}.answers[{k}]"
                    answer, start = _get(ans, "text", str, ak, path), _get(ans, "answer_start", int, ak, path)
                    if context[start : start + len(answer)] != answer or start < 0:
                        raise BertkitError(
                            f"{ak}: answer {answer!r} of question {qid!r} is not in the context at "
                            f"answer_start {start} (found {context[max(start, 0) : start + len(answer)]!r})",
                            path,
                        )
                    answers.append({"text": answer, "answer_start": start})
                out.append(QAExample(qid, question, context, answers, title))
    if not out:
        raise BertkitError("no questions in the file", path)
    return out


def _get(obj: Any, key: str, kind: type | tuple, where: str, path: PathLike, optional: bool = False) -> Any:
    place = where or "top level"
    if not isinstance(obj, dict):
        raise BertkitError(f"{place}: expected an object, found {_json_type(obj)}", path)
    if key not in obj:
        if optional:
            return None
        raise BertkitError(f"{place}: missing field {key!r}", path)
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names: dict[type | tuple, str] = {list: "an array", str: "a string", int: "an integer"}
        name = names.get(kind, "a string or integer")
        raise BertkitError(
            f"{where + '.' if where else ''}{key}: expected {name}, found {_json_type(value)}", path
        )
    return value


# --------------------------------------------------------------------------- labels


def label_vocab(examples: Iterable[TextExample | TokenExample]) -> list[str]:
    """The sorted set of labels (tags for token examples); unlabelled examples add nothing."""
    labels: set[str] = set()
    for ex in examples:
        if isinstance(ex, TokenExample):
            labels.update(ex.tags or ())
        elif isinstance(ex.label, float):
            raise ValueError("regression labels have no vocabulary")
        elif isinstance(ex.label, tuple):
            labels.update(ex.label)
        elif ex.label is not None:
            labels.add(ex.label)
    return sorted(labels)


def check_labels(
    examples: Sequence[TextExample | TokenExample],
    label2id: Mapping[str, int],
    path: PathLike,
    map_unknown_to: str | None = None,
) -> list[TextExample | TokenExample]:
    """Check that every label of a dev/test file was seen in training (is in `label2id`).

    An unseen label is an error naming the file, line and label, unless `map_unknown_to` (itself a
    known label, e.g. "O") is given: then unseen labels become it in the returned copies.
    """
    if map_unknown_to is not None and map_unknown_to not in label2id:
        raise BertkitError(f"map_unknown_to={map_unknown_to!r} is not a training label", path)
    names = sorted(label2id)
    known = (
        "training labels: "
        + ", ".join(names[:20])
        + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    )
    out: list[TextExample | TokenExample] = []
    for ex in examples:
        if isinstance(ex, TokenExample) and ex.tags is not None:
            bad = [i for i, t in enumerate(ex.tags) if t not in label2id]
            if bad and map_unknown_to is None:
                i = bad[0]
                raise BertkitError(
                    f"line {ex.line}: tag {ex.tags[i]!r} (token {i + 1}, {ex.tokens[i]!r}) never occurs "
                    f"in the training data ({known})",
                    path,
                )
            if bad and map_unknown_to is not None:  # (else raised just above)
                ex = replace(ex, tags=[t if t in label2id else map_unknown_to for t in ex.tags])
        elif isinstance(ex, TextExample) and isinstance(ex.label, tuple):
            unseen = [x for x in ex.label if x not in label2id]
            if unseen and map_unknown_to is None:
                raise BertkitError(
                    f"line {ex.line}: label {unseen[0]!r} never occurs in the training data ({known})", path
                )
            if unseen and map_unknown_to is not None:  # (else raised just above)
                mapped = (x if x in label2id else map_unknown_to for x in ex.label)
                ex = replace(ex, label=tuple(dict.fromkeys(mapped)))
        elif isinstance(ex, TextExample) and isinstance(ex.label, str) and ex.label not in label2id:
            if map_unknown_to is None:
                raise BertkitError(
                    f"line {ex.line}: label {ex.label!r} never occurs in the training data ({known})", path
                )
            ex = replace(ex, label=map_unknown_to)
        out.append(ex)
    return out
