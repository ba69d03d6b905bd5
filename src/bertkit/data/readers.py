"""Readers of classification (and regression) files: TSV, CSV and JSON lines, one example a row.

Every problem with an input file is a one-line `BertkitError` that names the file and, where it
applies, the line, so the CLI can print it without a traceback. What a person cannot see is
forgiven with one warning per kind (see `bertkit.data.cleaning`). The other formats have their
own modules: `conll` (token columns), `spans` (CLUENER-style span JSONL), `squad`, `folders`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from bertkit.data.cleaning import (
    PathLike,
    Repairs,
    forgive_invisible,
    gc_paused,
    jsonl_records,
    read_text,
    split_lines,
    str_field,
    unquote,
)
from bertkit.data.examples import TextExample
from bertkit.data.labels import LabelSets, parse_label
from bertkit.errors import BertkitError

Column = str | int | None

_FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
_TEXT_NAMES = ("sentence", "text", "text_a")
_PAIR_NAMES = (("sentence1", "sentence2"), ("#1 String", "#2 String"), ("text_a", "text_b"))
_LABEL_NAMES = ("label", "score", "Quality")  # Quality: MRPC's label column
# With columns given by index, a first row holding any of these names is taken for a header.
_HEADER_HINTS = {*_TEXT_NAMES, *_LABEL_NAMES, "index", "id", "sentence1", "sentence2", "#1 String", "text_b"}


@gc_paused()
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
    repairs = Repairs(path)
    text = forgive_invisible(read_text(path), repairs)
    fmt = _format(path, format)
    columns: list[Column] = [text_column, pair_column, label_column]
    if fmt == "jsonl":
        records = jsonl_records(text, path)
        examples = _jsonl_examples(
            records, path, text_column, pair_column, label_column, regression, label_sets
        )
    else:
        if fmt == "tsv":
            rows = [(n, line.split("\t")) for n, line in enumerate(split_lines(text), 1) if line]
        else:
            rows = _csv_rows(text, path)
        examples = _table_examples(rows, path, columns, header, regression, label_sets, repairs)
    repairs.warn()
    return examples


def _format(path: PathLike, format: str | None) -> str:
    """The format, "tsv", "csv" or "jsonl": `format` if given, else by the file's extension."""
    fmt = format or _FORMATS.get(Path(path).suffix.lower())
    if fmt not in ("tsv", "csv", "jsonl"):
        what = f"format {format!r}" if format else f"extension {Path(path).suffix!r}"
        raise BertkitError(f"unknown {what}; pass format='tsv', 'csv' or 'jsonl'", path)
    return fmt


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


def _table_examples(
    rows: list[tuple[int, list[str]]],
    path: PathLike,
    columns: list[Column],
    header: bool | None,
    regression: bool,
    label_sets: LabelSets | None,
    repairs: Repairs,
) -> list[TextExample]:
    """The examples of a TSV or CSV file's rows, (first line, cells) each, the header first if any."""
    first_line, first = rows[0]
    names = [c.strip() for c in first]
    header, columns = _resolve_columns(columns, header, names, first_line, path)
    data = rows[1:] if header else rows
    if not data:
        raise BertkitError("no examples: the file holds only a header row", path)
    ncols = len(first)
    ti, pi, li = (
        _column(c, role, names if header else None, ncols, first_line, path)
        for c, role in zip(columns, ("text", "pair", "label"), strict=True)
    )
    if ti is None:  # columns were given, but not the text one
        raise BertkitError("no text column: pass text_column= along with the other columns", path)
    shape = f" ({', '.join(names)})" if header else ""
    out = []
    for n, cells in data:
        if len(cells) != ncols:
            raise BertkitError(f"line {n}: expected {ncols} columns{shape}, found {len(cells)}", path)
        text_value = unquote(cells[ti], n, repairs)
        if not text_value.strip():
            raise BertkitError(f"line {n}: empty text", path)
        pair_value = None if pi is None else unquote(cells[pi], n, repairs)
        if pair_value is not None and not pair_value.strip():
            raise BertkitError(f"line {n}: empty pair text", path)
        label = None if li is None else parse_label(cells[li], regression, n, path, label_sets)
        out.append(TextExample(text_value, pair_value, label, n))
    return out


def _resolve_columns(
    columns: list[Column], header: bool | None, names: list[str], first_line: int, path: PathLike
) -> tuple[bool, list[Column]]:
    """(whether the first row is a header, the text, pair and label columns): the header guessed
    when `header` is None, the columns taken from the header when none are given."""
    # A digit string names a column by position, like an int.
    cols = [int(c) if isinstance(c, str) and c.lstrip("-").isdigit() else c for c in columns]
    if header is None:
        if any(isinstance(c, str) for c in cols):
            header = True
        elif cols == [None, None, None]:
            header = any(n in names for n in _TEXT_NAMES + ("sentence1", "#1 String"))
        else:
            header = any(n in _HEADER_HINTS for n in names)
    if cols != [None, None, None]:
        return header, cols
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
    return header, [text_name, pair[1] if pair else None, next((x for x in _LABEL_NAMES if x in names), None)]


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
        text = str_field(obj, text_field or "text", n, path)
        pair = None if pair_field is None else str_field(obj, pair_field, n, path)
        if label_field is not None and label_field not in obj:
            raise BertkitError(f"line {n}: missing field {label_field!r}", path)
        label = (
            None if label_field is None else parse_label(obj[label_field], regression, n, path, label_sets)
        )
        out.append(TextExample(text, pair, label, n))
    return out
