"""The CoNLL reader: column files of one token a line, blank lines between sentences, read into
`TokenExample`s with IOB2 tags whatever the file's tag scheme (see `bertkit.data.schemes`).

Every problem is a one-line `BertkitError` naming the file and the line. What a person cannot
see is forgiven with one warning per kind (see `bertkit.data.cleaning`): lines of only whitespace
and invisible characters read as blank, a BOM beginning a line is dropped, and so are spaces or a
stray \\r after a tag.
"""

from __future__ import annotations

import logging
import re
from itertools import accumulate, chain
from operator import add, sub
from typing import cast

import bertkit.data.schemes as schemes
from bertkit.data.cleaning import PathLike, Repairs, forgive_invisible, gc_paused, read_text, split_lines
from bertkit.data.examples import TokenExample
from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

_CJK = re.compile(
    "[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]"
)

Sentence = tuple[int, list[str], list[str]]  # (line of the first token, tokens, tags)


@gc_paused()
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
    strictly, or "auto" (see `schemes.detect`), which repairs stray I- tags with a warning and
    refuses mixed schemes; the scheme read is logged and set in each `TokenExample.scheme`.
    `join` lays out `TokenExample.text`: "space", "none" or "auto" (see `_join_for`). A line of
    only whitespace and invisible characters (BOM, zero-width spaces, word joiner, no-break
    space) is a blank line; a BOM beginning a line is dropped, and tags lose trailing spaces and
    a stray \r; each kind is one warning (see `Repairs`).
    """
    if scheme not in schemes.CHOICES or join not in ("auto", "space", "none"):
        raise BertkitError(f"scheme must be one of {schemes.CHOICES} and join one of auto, space, none")
    repairs = Repairs(path)
    text = forgive_invisible(read_text(path), repairs)
    lines = split_lines(text)
    sentences, ncols = _sentences(lines, token_column, tag_column, docstart, path)
    _check_tokens(sentences, strip_digit_suffix, path)
    read_as = None
    if tag_column is not None:
        _clean_tag_ends(text, lines, sentences, tag_column % ncols == ncols - 1, repairs)
        read_as = schemes.to_iob2([(start, tags) for start, _, tags in sentences], scheme, path)
        how = "detected; --tag-scheme forces one" if scheme == "auto" else "as given"
        log.info("%s: tags read as %s (%s)", path, read_as.upper(), how)
    out = _examples(sentences, _join_for([s[1] for s in sentences], join), tag_column is not None, read_as)
    repairs.warn()
    return out


def _sentences(
    lines: list[str], token_column: int, tag_column: int | None, docstart: bool, path: PathLike
) -> tuple[list[Sentence], int]:
    """(each sentence's first line, tokens and tags (the token column again without a tag column),
    the number of columns), checking that every line has as many columns as the first."""
    # Split every line in one comprehension (fast on MSRA's 2.2M lines); blank lines become None.
    rows = [
        (s.rstrip().split("\t") if "\t" in s else s.split()) if s and not s.isspace() else None for s in lines
    ]
    # Sentences end at blank and -DOCSTART- lines; slicing between them keeps per-line work in C.
    breaks = [i for i, r in enumerate(rows) if r is None or (docstart and r[0] == "-DOCSTART-")]
    sentences: list[Sentence] = []
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
    return sentences, ncols


def _check_tokens(sentences: list[Sentence], strip_digit_suffix: bool, path: PathLike) -> None:
    """Refuse empty tokens; with `strip_digit_suffix`, drop each token's last digit in place."""
    for start, toks, _ in sentences:
        if strip_digit_suffix:
            bad = [i for i, t in enumerate(toks) if len(t) < 2 or t[-1] not in "0123456789"]
            if bad:
                raise BertkitError(f"line {start + bad[0]}: no digit to strip from {toks[bad[0]]!r}", path)
            toks[:] = [t[:-1] for t in toks]
        if "" in toks or any(map(str.isspace, toks)):
            raise BertkitError(f"line {start + [t.strip() for t in toks].index('')}: empty token", path)


def _examples(sentences: list[Sentence], join: str, tagged: bool, read_as: str | None) -> list[TokenExample]:
    """The sentences as `TokenExample`s, their tokens joined by a space or by nothing (`join`)."""
    width = 1 if join == "space" else 0
    out = []
    for start, toks, iob2 in sentences:
        lens = list(map(len, toks))
        ends = list(accumulate(lens))  # (C-level arithmetic: MSRA has 2.2M tokens)
        if width:
            ends = list(map(add, ends, range(len(toks))))
        offsets = list(zip(map(sub, ends, lens), ends, strict=True))
        text = (" " if width else "").join(toks)
        out.append(TokenExample(toks, iob2 if tagged else None, text, offsets, start, read_as))
    return out


def _clean_tag_ends(
    text: str,
    lines: list[str],
    sentences: list[Sentence],
    last: bool,
    repairs: Repairs,
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
