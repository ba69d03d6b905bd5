"""The span reader: CLUENER-style JSON lines, a text and its labelled character spans a line,
read into character `TokenExample`s with IOB2 tags.

Every problem is a one-line `BertkitError` naming the file and the line; lines of only whitespace
and invisible characters read as blank, and a BOM beginning a line is dropped, with one warning
per kind (see `bertkit.data.cleaning`).
"""

from __future__ import annotations

from typing import Any

from bertkit.data.cleaning import (
    PathLike,
    Repairs,
    forgive_invisible,
    gc_paused,
    jsonl_records,
    read_text,
    str_field,
)
from bertkit.data.examples import TokenExample
from bertkit.errors import BertkitError


@gc_paused()
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
    repairs = Repairs(path)
    records = jsonl_records(forgive_invisible(read_text(path), repairs), path)
    labelled = label_field in records[0][1]
    out = []
    for n, obj in records:
        text = str_field(obj, text_field, n, path)
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
