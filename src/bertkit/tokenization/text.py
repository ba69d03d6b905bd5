"""Raw text for tokenizer training and pretraining: files named by paths, folders or globs, read as
lines (plain or gzip, LF or CRLF), Project Gutenberg boilerplate dropped, grouped into documents.

A document is a list of non-empty lines and a line is a "sentence", as in google-research/bert's
create_pretraining_data.py. `doc_mode` says where documents end: "file" (one document per file) or
"blank-line" (blank lines separate documents; the end of a file ends one too). Reading streams:
memory stays bounded whatever the corpus size, and every problem with a file (unreadable, not gzip,
bad UTF-8, binary) is a `BertkitError` that names the file and, where it applies, the line.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import itertools
import json
import os
import re
from array import array
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bertkit.errors import BertkitError

PathArg = str | os.PathLike
DOC_MODES = ("file", "blank-line")

_GUTENBERG_START = re.compile(r"\s*\*\*\*\s*START OF\b.*PROJECT GUTENBERG", re.IGNORECASE)
_GUTENBERG_END = re.compile(r"\s*\*\*\*\s*END OF\b.*PROJECT GUTENBERG", re.IGNORECASE)
_PROGRESS_EVERY = 1024  # lines between updates of ReadStats.bytes_read


@dataclass
class ReadStats:
    """What `iter_document_lines` has read so far; a caller polls it for a progress bar."""

    bytes_read: int = 0  # bytes on disk (compressed for .gz) passed; a file counts whole once left
    lines: int = 0  # non-blank lines, after boilerplate stripping, duplicates included
    duplicate_lines: int = 0  # lines dropped by dedupe_lines


def strip_gutenberg_boilerplate(lines: Iterable[str], max_header_lines: int = 1000) -> Iterator[str]:
    """Drop a Project Gutenberg licence header (through the "*** START OF ... PROJECT GUTENBERG"
    line) and footer (from "*** END OF ..."). Text with no start marker in its first
    `max_header_lines` lines passes unchanged; streaming holds at most that many lines."""
    it, head = iter(lines), []
    for line in it:
        if _GUTENBERG_START.match(line):
            break
        head.append(line)
        if len(head) == max_header_lines:  # no marker near the top: not a Gutenberg file
            yield from head
            yield from it
            return
    else:
        yield from head  # the text ended without a marker
        return
    for line in it:
        if _GUTENBERG_END.match(line):
            return
        yield line


def resolve_files(patterns: PathArg | Iterable[PathArg]) -> list[Path]:
    """The files named by paths, folders (searched recursively, hidden names skipped) and glob
    patterns ("**" recurses), in order and each once. A name that matches nothing is an error."""
    found: dict[Path, None] = {}
    for pattern in [patterns] if isinstance(patterns, (str, os.PathLike)) else patterns:
        p = os.fspath(pattern)
        # An existing name wins over glob syntax: Gutenberg titles contain "[sic]".
        matches = [Path(p)] if os.path.exists(p) else [Path(m) for m in sorted(glob.glob(p, recursive=True))]
        files = [m for m in matches if m.is_file()]
        for folder in (m for m in matches if m.is_dir()):
            hidden = lambda f, root=folder: any(s.startswith(".") for s in f.relative_to(root).parts)
            files += sorted(f for f in folder.rglob("*") if f.is_file() and not hidden(f))
        if not files:
            raise BertkitError("no files match this pattern" if glob.has_magic(p) else "no such file", p)
        found.update(dict.fromkeys(files))
    if not found:
        raise BertkitError("no input files given")
    return list(found)


def iter_text_lines(patterns: PathArg | Iterable[PathArg], strip_gutenberg: bool = True) -> Iterator[str]:
    """Stream the lines, without line ends (LF or CRLF), of text files, plain or gzip (".gz"),
    named by paths, folders or glob patterns (see `resolve_files`), dropping Project Gutenberg
    headers and footers unless `strip_gutenberg` is False. Bad UTF-8 or a binary file is a
    BertkitError that names the file and line."""
    for path in resolve_files(patterns):
        lines = _read_lines(path)
        yield from strip_gutenberg_boilerplate(lines) if strip_gutenberg else lines


def iter_document_lines(
    patterns: PathArg | Iterable[PathArg],
    doc_mode: str = "file",
    strip_gutenberg: bool = True,
    dedupe_lines: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[tuple[int, int, str]]:
    """Stream (file index, document index in that file, line) for every kept line: whitespace
    stripped, blank lines dropped, and with `dedupe_lines` a line seen before anywhere in the corpus
    dropped too. The file index is into `resolve_files(patterns)`; a document ends where the pair
    changes. Documents are numbered in the text as read, before deduplication, so a document whose
    lines are all duplicates leaves a gap. `stats`, if given, is updated while reading."""
    if doc_mode not in DOC_MODES:
        raise BertkitError(f"doc_mode must be one of {', '.join(DOC_MODES)}, not {doc_mode!r}")
    seen = LineHashSet() if dedupe_lines else None
    for file_index, path in enumerate(resolve_files(patterns)):
        with contextlib.closing(_read_lines(path, stats)) as lines:  # closed at once past a footer
            doc, in_doc = 0, False
            for line in strip_gutenberg_boilerplate(lines) if strip_gutenberg else lines:
                line = line.strip()
                if not line:
                    if in_doc and doc_mode == "blank-line":
                        doc, in_doc = doc + 1, False
                    continue
                in_doc = True
                if stats is not None:
                    stats.lines += 1
                if seen is not None and not seen.add(line):
                    if stats is not None:
                        stats.duplicate_lines += 1
                    continue
                yield file_index, doc, line


def iter_documents(
    patterns: PathArg | Iterable[PathArg],
    doc_mode: str = "file",
    strip_gutenberg: bool = True,
    dedupe_lines: bool = False,
) -> Iterator[list[str]]:
    """Documents, each a list of non-empty lines (whitespace stripped), from text files (plain or
    .gz) named by paths, folders or glob patterns. `doc_mode` "file": one document per file;
    "blank-line": blank lines separate documents. `dedupe_lines` drops exact repeats of a line
    across the whole corpus (remembering an 8-byte hash per distinct line, not the line); a document
    left empty is skipped. A file that is unreadable, not gzip, not UTF-8 or binary (a NUL byte) is a
    BertkitError naming the file and line. Each document is held whole: for one huge document per
    file, stream `iter_document_lines` instead."""
    lines = iter_document_lines(patterns, doc_mode, strip_gutenberg, dedupe_lines)
    for _, group in itertools.groupby(lines, key=lambda item: item[:2]):
        yield [line for _, _, line in group]


class LineHashSet:
    """A set of lines that stores an 8-byte hash (BLAKE2b) of each, not the line: an open-addressing
    table in an `array` of uint64, linear probing, at most half full, so 8-16 bytes per distinct
    line. Two distinct lines share a hash with probability ~n²/2⁶⁵: nil for any real corpus."""

    def __init__(self, capacity: int = 1 << 16):
        self._slots = array("Q", bytes(8 * max(16, 1 << (capacity - 1).bit_length())))  # 0 = empty
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, line: str) -> bool:
        """Remember `line`; False when it was there already."""
        digest = hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest()
        if not self._insert(int.from_bytes(digest, "little") or 1):  # 0 marks an empty slot
            return False
        self._count += 1
        if 2 * self._count > len(self._slots):
            old = self._slots
            self._slots = array("Q", bytes(16 * len(old)))
            for h in old:
                if h:
                    self._insert(h)
        return True

    def _insert(self, h: int) -> bool:
        slots = self._slots
        mask = len(slots) - 1
        i = h & mask
        while (found := slots[i]) != 0:
            if found == h:
                return False
            i = (i + 1) & mask
        slots[i] = h
        return True


def read_texts(source: str) -> list[str]:
    """Texts of a file (or "-" for standard input): one text a line, every line a row (an empty
    line an empty text, so row i is line i), or JSON lines with a "text" string field."""
    import sys

    try:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BertkitError(f"cannot read input ({e})", source) from None
    lines = raw.splitlines()
    jsonl = bool(lines) and all(not ln.strip() or ln.lstrip().startswith("{") for ln in lines)
    if not jsonl:
        return lines
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BertkitError(f"line {n}: invalid JSON ({e.msg})", source) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise BertkitError(f"line {n}: expected a JSON object with a 'text' string field", source)
        texts.append(obj["text"])
    return texts


def _read_lines(path: Path, stats: ReadStats | None = None) -> Generator[str, None, None]:
    """The lines of a plain or gzip file without their line ends, decoded one by one so that an
    error can name its line; `stats.bytes_read` advances with the bytes consumed on disk, and by
    the whole file once the generator ends or is closed."""
    done = 0
    try:
        with open(path, "rb") as raw:
            gz = path.name.endswith(".gz")
            with gzip.GzipFile(fileobj=raw, mode="rb") if gz else contextlib.nullcontext(raw) as f:
                try:
                    for number, line in enumerate(f, 1):
                        if b"\0" in line:
                            raise BertkitError(
                                f"line {number}: a NUL byte: binary data (or UTF-16), not UTF-8 text", path
                            )
                        try:
                            yield line.decode("utf-8").rstrip("\r\n")
                        except UnicodeDecodeError as e:
                            raise BertkitError(
                                f"line {number}: not valid UTF-8 (byte {e.start + 1})", path
                            ) from None
                        if stats is not None and number % _PROGRESS_EVERY == 0:
                            stats.bytes_read += raw.tell() - done
                            done = raw.tell()
                finally:
                    if stats is not None:
                        stats.bytes_read += os.fstat(raw.fileno()).st_size - done
    except (OSError, EOFError) as e:  # unreadable, or not gzip, or a truncated gzip
        raise BertkitError(f"cannot read: {getattr(e, 'strerror', None) or e}", path) from None
