"""Token shards: a raw text corpus tokenized once into flat arrays that pretraining memory-maps.

Why: tokenizing on the fly costs more CPU than a small model's training step, and every epoch,
rank and DataLoader worker would repeat it. `build_shards` tokenizes the corpus once, in parallel
worker processes, into plain binary files (no pickle); `ShardedCorpus` opens them with `np.memmap`,
so any number of processes share them through the page cache without loading them.

Layout of the output directory, for each split ("train", "heldout"), shard k:

    {split}-{k:05d}.tokens.bin   token ids, 1-D, little-endian uint16 (vocab_size <= 65535) or uint32
    {split}-{k:05d}.lines.bin    int64: each line's start offset into the tokens, then the end
    {split}-{k:05d}.docs.bin     int64: each document's first line index into the lines, then the end
    {split}-{k:05d}.words.bin    uint8, one a token: 1 where the token continues the word of the
                                 token before it (only with a segmenter, see `bertkit.tokenization.segment`)
    manifest.json                counts, sha256 of every file, the tokenizer, the inputs, the options

A line is a "sentence" and a document a run of lines, as in google-research/bert's
create_pretraining_data.py (see `bertkit.tokenization.text` for what ends a document). Lines that tokenize
to nothing are dropped, and so are documents left empty. A shard closes once it holds at least
`shard_tokens` tokens, at a document boundary, so a document never spans shards.

The build is staged: everything is written into a hidden directory beside the output and renamed
into place at the end, so an interrupted run leaves nothing that looks complete. A later build with
the same inputs (paths, sizes, sha256), tokenizer files and options reuses the output as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import BertkitError
from bertkit.fileio import staged_output, write_json
from bertkit.tokenization.segment import SEGMENTERS, continuation, load_segmenter, word_starts
from bertkit.tokenization.text import DOC_MODES, PathArg, ReadStats, iter_document_lines, resolve_files
from bertkit.tokenization.tokenizer import Tokenizer

FORMAT, FORMAT_VERSION = "bertkit-shards", 1
MANIFEST = "manifest.json"
SPLITS = ("train", "heldout")
KINDS = ("tokens", "lines", "docs")  # the files of a shard: {name}.{kind}.bin
WORDS = "words"  # the optional fourth file: word-continuation flags (uint8, one a token)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")  # what from_pretrained reads
OFFSET = np.dtype("<i8")  # line and document offsets
MIN_HELDOUT_DOCS = 10  # hold out whole documents only when heldout × documents reaches this
BLOCK_LINES = 100  # else hold out blocks of this many lines
CHUNK_LINES, CHUNK_CHARS = 2048, 1 << 20  # a unit of work for a tokenizing process
COPY_STEP = 1 << 22  # tokens or lines copied at a time from the staging stream into a shard
DOC_BATCH = 1 << 16  # documents per step when choosing the held-out split
SMALL_CORPUS_BYTES = 4 << 20  # below this, workers=None tokenizes in this process (no spawning)
_SHARD_NAME = re.compile(r"^(train|heldout)-\d{5}$")


def build_shards(
    inputs: PathArg | Iterable[PathArg],
    tokenizer_dir: PathArg,
    output_dir: PathArg,
    *,
    workers: int | None = None,
    heldout: float = 0.01,
    doc_mode: str = "file",
    strip_gutenberg: bool = True,
    dedupe_lines: bool = False,
    shard_tokens: int = 50_000_000,
    segmenter: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize text files (plain or .gz; paths, folders or glob patterns) with the tokenizer in
    `tokenizer_dir` into token shards in `output_dir`, and return the manifest.

    Reading (`bertkit.tokenization.text.iter_document_lines`): documents per `doc_mode` ("file" or
    "blank-line"), Project Gutenberg boilerplate dropped unless `strip_gutenberg` is False, exact
    repeats of a line dropped corpus-wide with `dedupe_lines`. `workers` processes tokenize chunks
    of lines, a bounded number at a time, so memory does not grow with the corpus; the output
    does not depend on `workers`. workers=1 tokenizes in this process; None uses os.cpu_count()
    processes, or this process alone for a corpus under 4 MB (spawning would cost more).
    With `segmenter` (one of `bertkit.tokenization.segment.SEGMENTERS`) each line is also cut into words
    and every shard gets a words file (which tokens continue a word), for whole-word masking.

    Held-out split, deterministic (no random numbers): a unit of text is held out when the
    BLAKE2b hash of its position, as a fraction of 2⁶⁴, is below `heldout`. The unit is a whole
    document, keyed by (file path as given, document index in the file), when heldout × the
    number of documents is at least 10 (MIN_HELDOUT_DOCS). Otherwise (few, long documents: a few
    big files in doc_mode "file") it is a block of 100 consecutive lines of a document (or of
    lines // 2 lines when the corpus has under 200 lines), keyed by (path, document, block index);
    each held-out block becomes a held-out document, and the training lines around it become
    separate training documents, so no text is joined across a gap. With at least 2 units
    (always so when the corpus has >= 2 lines), if no unit falls under the fraction the one with
    the smallest hash is held out, and if all do the one with the largest hash is kept for
    training: neither split is empty. Every kept line is in exactly one split.

    If `output_dir` holds a manifest with the same inputs (paths, sizes, sha256), tokenizer files
    (sha256) and options, it is returned as it is, nothing rewritten; any difference is an error
    unless `overwrite`, which rebuilds. Errors (a `BertkitError` naming the file): no input files,
    no text, an unreadable, non-gzip, binary or non-UTF-8 file (with the line), a missing
    tokenizer or one lacking [PAD] [UNK] [CLS] [SEP] [MASK]."""
    start = time.perf_counter()
    options = _options(heldout, doc_mode, strip_gutenberg, dedupe_lines, shard_tokens, segmenter)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise BertkitError(f"workers must be a positive integer, not {workers!r}")
    files = resolve_files(inputs)
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    tokenizer_info = _tokenizer_info(Path(tokenizer_dir))
    input_info = [_file_info(p) for p in files]
    output = Path(output_dir)
    if output.is_dir() and (output / MANIFEST).exists():
        old = _reusable(output, input_info, tokenizer_info, options, overwrite)
        if old is not None:
            if progress:
                print(f"{output}: reused (same inputs, tokenizer and options)", file=sys.stderr)
            return old
    if workers is None:
        small = sum(i["bytes"] for i in input_info) < SMALL_CORPUS_BYTES
        workers = 1 if small else os.cpu_count() or 1
    vocab_size = tokenizer.backend.get_vocab_size(with_added_tokens=True)  # ids are below this
    dtype = np.dtype("<u2" if vocab_size <= 65535 else "<u4")

    with staged_output(output, overwrite) as stage:
        stream, stats = _tokenize(stage, files, options, tokenizer, workers, dtype, progress)
        splits, rule = _write_splits(stage, stream, [i["path"] for i in input_info], heldout, shard_tokens)
        stream.remove()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dtype": dtype.name,  # little-endian
            "vocab_size": vocab_size,
            "tokenizer": tokenizer_info,
            "inputs": input_info,
            "options": options,
            "heldout_rule": rule,
            "read": {
                "files": len(files),
                "bytes": stats.bytes_read,
                "lines": stats.lines,
                "duplicate_lines": stats.duplicate_lines,
                "lines_without_tokens": stream.empty_lines,
            },
            "splits": splits,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - start, 2),
        }
        write_json(stage / MANIFEST, manifest)
    return manifest


class ShardedCorpus:
    """One split of a shard directory, memory-mapped read-only: documents by a global index
    across its shards. Opening checks the manifest and each shard file's size (a truncated or
    missing file is a BertkitError); `verify()` also checks the sha256 of every file."""

    def __init__(self, directory: PathArg, split: str = "train"):
        self.directory = Path(directory)
        self._manifest = read_manifest(self.directory)
        if split not in SPLITS:
            raise BertkitError(f"split must be one of {', '.join(SPLITS)}, not {split!r}", self.directory)
        self.split = split
        self._dtype = np.dtype(self._manifest["dtype"]).newbyteorder("<")
        self._records = self._manifest["splits"][split]["shards"]
        self._shards = [_MappedShard(self.directory, r, self._dtype) for r in self._records]
        counts = [len(s.docs) - 1 for s in self._shards]
        self._first_doc = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # (shards + 1,)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    @property
    def num_docs(self) -> int:
        return int(self._first_doc[-1])

    @property
    def num_lines(self) -> int:
        return sum(len(s.lines) - 1 for s in self._shards)

    @property
    def num_tokens(self) -> int:
        return sum(len(s.tokens) for s in self._shards)

    @property
    def vocab_size(self) -> int:
        return int(self._manifest["vocab_size"])

    def __len__(self) -> int:
        return self.num_docs

    def document(self, i: int) -> list[np.ndarray]:
        """The lines of document i (negative counts from the end), each an int64 array of ids."""
        tokens, offsets = self.document_tokens(i)
        bounds = offsets.tolist()
        return [tokens[a:b].astype(np.int64) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def document_tokens(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids of document i, (N,), a read-only view in the stored dtype; int64 offsets
        of its lines into them, (L+1,), from 0 to N), without copying the tokens."""
        shard, lines = self._document_lines(i)
        first = int(lines[0])
        return shard.tokens[first : int(lines[-1])], np.asarray(lines, dtype=np.int64) - first

    @property
    def segmenter(self) -> str | None:
        """The segmenter whose word boundaries the shards hold (see `document_words`), or None."""
        return self._manifest["options"].get("segmenter")

    def document_words(self, i: int) -> np.ndarray | None:
        """Word-continuation flags of document i's tokens, (N,) bool (True: the token continues
        the word of the token before it), a read-only view without copying, or None when the
        shards were built without a segmenter."""
        shard, lines = self._document_lines(i)
        if shard.words is None:
            return None
        return shard.words[int(lines[0]) : int(lines[-1])].view(np.bool_)  # the flags are 0 or 1

    def verify(self) -> None:
        """Check the sha256 of every shard file of this split against the manifest."""
        for record in self._records:
            for kind in record["files"]:
                path = self.directory / _shard_file(record["name"], kind)
                if _sha256(path) != record["files"][kind]["sha256"]:
                    raise BertkitError("shard file altered: sha256 differs from the manifest", path)

    def _document_lines(self, i: int) -> tuple[_MappedShard, np.ndarray]:
        """The shard holding document i and its line offsets into that shard, (L+1,)."""
        shard, d = self._locate(i)
        return shard, shard.lines[shard.docs[d] : shard.docs[d + 1] + 1]

    def _locate(self, i: int) -> tuple[_MappedShard, int]:
        n = self.num_docs
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(f"document {i} out of range for {n} documents")
        i = int(i) + n if i < 0 else int(i)
        k = int(np.searchsorted(self._first_doc, i, side="right")) - 1
        return self._shards[k], i - int(self._first_doc[k])

    def __repr__(self) -> str:
        return f"ShardedCorpus({str(self.directory)!r}, {self.split!r}, docs={self.num_docs})"


def read_manifest(directory: PathArg) -> dict[str, Any]:
    """The manifest.json of a shard directory, checked for this format and version."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise BertkitError("not a shard directory (no manifest.json)", directory)
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BertkitError(f"cannot read the manifest: {e}", path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BertkitError(f"not a {FORMAT} manifest", path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BertkitError(
            f"format version {manifest.get('format_version')!r}; this bertkit reads {FORMAT_VERSION}", path
        )
    try:
        for split in SPLITS:
            for record in manifest["splits"][split]["shards"]:
                if not _SHARD_NAME.match(record["name"]) or not record["name"].startswith(split):
                    raise ValueError(f"bad shard name {record['name']!r}")
                for key in ("documents", "lines", "tokens"):
                    int(record[key])
        np.dtype(manifest["dtype"])
        int(manifest["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise BertkitError(f"malformed manifest: {type(e).__name__} {e}", path) from None
    return manifest


# ---- reading and tokenizing ----------------------------------------------------------------------


def _tokenize(
    stage: Path,
    files: list[Path],
    options: dict[str, Any],
    tokenizer: Tokenizer,
    workers: int,
    dtype: np.dtype,
    progress: bool,
) -> tuple[_Stream, ReadStats]:
    """Read and tokenize the whole corpus into a `_Stream` in the stage, with a progress bar over
    the bytes read; no text at all is an error."""
    stats = ReadStats()
    doc_mode, strip, dedupe = (options[k] for k in ("doc_mode", "strip_gutenberg", "dedupe_lines"))
    lines = iter_document_lines(files, doc_mode, strip, dedupe, stats=stats)
    segmenter = options.get("segmenter")
    stream = _Stream(stage, dtype, words=segmenter is not None)
    encoded = _encoded_chunks(_chunks(lines), tokenizer, workers, dtype, segmenter)
    total = sum(f.stat().st_size for f in files)
    with stream, _progress_bar(total, progress) as bar, contextlib.closing(encoded):
        for keys, (tokens, lengths, words) in encoded:
            stream.append(keys, tokens, lengths, words)
            bar.update(stats.bytes_read - bar.n)
    if stream.num_lines == 0:
        names = ", ".join(map(str, files[:3])) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise BertkitError(
            f"no text in {names}: every line is blank, boilerplate, a duplicate or without tokens",
            files[0] if len(files) == 1 else None,
        )
    return stream, stats


def _chunks(lines: Iterator[tuple[int, int, str]]) -> Iterator[tuple[list[str], np.ndarray]]:
    """Batches of at most CHUNK_LINES lines or about CHUNK_CHARS characters: (lines, their
    (file index, document index) keys, int64 (n, 2))."""
    texts: list[str] = []
    keys: list[tuple[int, int]] = []
    chars = 0
    for file_index, doc, line in lines:
        texts.append(line)
        keys.append((file_index, doc))
        chars += len(line)
        if len(texts) == CHUNK_LINES or chars >= CHUNK_CHARS:
            yield texts, np.array(keys, dtype=np.int64)
            texts, keys, chars = [], [], 0
    if texts:
        yield texts, np.array(keys, dtype=np.int64)


Encoded = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # tokens, line lengths, word flags


class _Encoder:
    """Lines → (token ids, flat in `dtype`; int64 token count of each line; with a segmenter,
    uint8 word-continuation flags, one a token, else None), without [CLS]/[SEP]."""

    def __init__(self, backend: Any, dtype: np.dtype, segmenter: str | None = None):
        self.backend, self.dtype = backend, dtype
        self.segment = load_segmenter(segmenter) if segmenter else None

    def __call__(self, lines: list[str]) -> Encoded:
        encodings = self.backend.encode_batch(lines, add_special_tokens=False)
        ids = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        tokens = np.fromiter(chain.from_iterable(ids), dtype=self.dtype, count=int(lengths.sum()))
        if self.segment is None:
            return tokens, lengths, None
        flags = [self._flags(line, e.offsets) for line, e in zip(lines, encodings, strict=True)]
        words = np.concatenate(flags).astype(np.uint8) if flags else np.zeros(0, np.uint8)
        return tokens, lengths, words

    def _flags(self, line: str, offsets: list[tuple[int, int]]) -> np.ndarray:
        assert self.segment is not None
        starts = word_starts(line, self.segment(line))  # the words of every segmenter spell the line
        return continuation(starts, [a for a, _ in offsets])


_worker_encoder: _Encoder | None = None  # set in each tokenizing process by _start_worker


def _start_worker(tokenizer_json: str, dtype: str, segmenter: str | None) -> None:
    global _worker_encoder
    import tokenizers

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per process: `workers` is the core count
    _worker_encoder = _Encoder(tokenizers.Tokenizer.from_str(tokenizer_json), np.dtype(dtype), segmenter)


def _encode_in_worker(lines: list[str]) -> Encoded:
    assert _worker_encoder is not None, "tokenizing process not initialised"
    return _worker_encoder(lines)


def _encoded_chunks(
    chunks: Iterator[tuple[list[str], np.ndarray]],
    tokenizer: Tokenizer,
    workers: int,
    dtype: np.dtype,
    segmenter: str | None = None,
) -> Generator[tuple[np.ndarray, Encoded], None, None]:
    """(keys, (tokens, lengths, words)) of each chunk, in order. With workers > 1, spawned processes
    (safe where forking a process with threads is not) get the tokenizer as its JSON, so they run
    exactly the one loaded here, and at most 2 × workers chunks are in flight."""
    if workers == 1:
        encode = _Encoder(tokenizer.backend, dtype, segmenter)
        for lines, keys in chunks:
            yield keys, encode(lines)
        return
    if segmenter:
        load_segmenter(segmenter)  # a missing package fails here, not in a worker
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(tokenizer.backend.to_str(), dtype.str, segmenter),
    )
    try:
        pending: deque = deque()
        for lines, keys in chunks:
            pending.append((keys, pool.submit(_encode_in_worker, lines)))
            if len(pending) >= 2 * workers:
                keys, future = pending.popleft()
                yield keys, future.result()
        while pending:
            keys, future = pending.popleft()
            yield keys, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        desc="tokenizing",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        dynamic_ncols=True,
    )
    try:
        yield bar
    finally:
        bar.close()


class _Stream:
    """The tokenized corpus in reading order, before the split, in hidden files of the stage:
    tokens; line offsets (0, then each line's end); each document's first line (then the line
    count, written on closing) and its (file index, document index) key. A context manager."""

    def __init__(self, stage: Path, dtype: np.dtype, words: bool = False):
        kinds = ("tokens", "lines", "docs", "keys") + ((WORDS,) if words else ())
        self.paths = {k: stage / f".stream.{k}" for k in kinds}
        self._files = {k: open(p, "wb") for k, p in self.paths.items()}  # noqa: SIM115 - closed below
        self._files["lines"].write(np.zeros(1, OFFSET).tobytes())
        self.dtype = dtype
        self.num_tokens = self.num_lines = self.num_docs = self.empty_lines = 0
        self._last_key: np.ndarray | None = None

    def append(
        self, keys: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, words: np.ndarray | None = None
    ) -> None:
        """keys (n, 2) int64, tokens (sum of lengths,), lengths (n,) int64 of one chunk; words
        (sum of lengths,) uint8 when the stream keeps word flags."""
        keep = lengths > 0
        self.empty_lines += int(len(lengths) - keep.sum())
        keys, lengths = keys[keep], lengths[keep]
        if not len(lengths):
            return
        new_doc = np.ones(len(keys), dtype=bool)
        new_doc[1:] = (keys[1:] != keys[:-1]).any(axis=1)
        if self._last_key is not None:
            new_doc[0] = bool((keys[0] != self._last_key).any())
        self._last_key = keys[-1].copy()
        self._files["docs"].write((self.num_lines + np.flatnonzero(new_doc)).astype(OFFSET).tobytes())
        self._files["keys"].write(keys[new_doc].astype(OFFSET).tobytes())
        self._files["lines"].write((self.num_tokens + np.cumsum(lengths)).astype(OFFSET).tobytes())
        self._files["tokens"].write(tokens.tobytes())  # the dropped lines had no tokens
        if WORDS in self._files:
            assert words is not None and len(words) == len(tokens)
            self._files[WORDS].write(words.tobytes())
        self.num_docs += int(new_doc.sum())
        self.num_lines += len(lengths)
        self.num_tokens += int(lengths.sum())

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the files; on success, first end the document list with the line count."""
        if exc[0] is None:
            self._files["docs"].write(np.array([self.num_lines], dtype=OFFSET).tobytes())
        for f in self._files.values():
            f.close()

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Read-only maps of the closed, non-empty stream: tokens (T,), line offsets (L+1,),
        document first lines (D+1,), document keys (D, 2), word flags (T,) or None."""
        tokens = np.memmap(self.paths["tokens"], dtype=self.dtype, mode="r")
        lines = np.memmap(self.paths["lines"], dtype=OFFSET, mode="r")
        docs = np.memmap(self.paths["docs"], dtype=OFFSET, mode="r")
        keys = np.memmap(self.paths["keys"], dtype=OFFSET, mode="r", shape=(self.num_docs, 2))
        words = np.memmap(self.paths[WORDS], dtype=np.uint8, mode="r") if WORDS in self.paths else None
        return tokens, lines, docs, keys, words

    def remove(self) -> None:
        for p in self.paths.values():
            p.unlink(missing_ok=True)


# ---- the split and the shards --------------------------------------------------------------------


def _write_splits(
    stage: Path, stream: _Stream, paths: list[str], heldout: float, shard_tokens: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cut the stream into held-out units (see build_shards), then copy the text into the shards
    of each split in reading order: (split summaries for the manifest, the held-out rule used)."""
    tokens, lines, docs, keys, words = stream.arrays()
    whole = heldout * stream.num_docs >= MIN_HELDOUT_DOCS
    block = BLOCK_LINES if stream.num_lines >= 2 * BLOCK_LINES else max(1, stream.num_lines // 2)
    threshold = int(heldout * 2.0**64)

    units = lambda: _iter_units(docs, keys, paths, None if whole else block)
    count, forced = _fix_ups(units(), threshold)
    # Training lines between held-out blocks of a document form one training document.
    writers = {s: _ShardWriter(stage, s, tokens.dtype, shard_tokens, words) for s in SPLITS}
    run: list[int] | None = None  # [doc, first line, end line] of the training run being built
    index = held_units = 0
    for unit_docs, starts, ends, hashes in units():
        held = hashes < threshold
        for u, value in forced.items():
            if index <= u < index + len(held):
                held[u - index] = value
        index += len(held)
        held_units += int(held.sum())
        for d, a, b, h in zip(unit_docs.tolist(), starts.tolist(), ends.tolist(), held.tolist(), strict=True):
            if not h and run is not None and run[0] == d and run[2] == a:
                run[2] = b
                continue
            if run is not None:
                writers["train"].add(tokens, lines, run[1], run[2])
                run = None
            if h:
                writers["heldout"].add(tokens, lines, a, b)
            else:
                run = [d, a, b]
    if run is not None:
        writers["train"].add(tokens, lines, run[1], run[2])
    splits = {s: w.close() for s, w in writers.items()}
    rule = {"unit": "document" if whole else "block", "block_lines": None if whole else block}
    return splits, rule | {"units": count, "held_out_units": held_units}


def _fix_ups(
    units: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], threshold: int
) -> tuple[int, dict[int, bool]]:
    """(number of units, {unit index: held out} overriding the hash rule): with 2 or more units,
    the lowest hash is held out if none falls under the threshold, the highest kept for training
    if all do, so that neither split is empty; a lone unit always trains."""
    count = chosen = 0
    lowest = highest = (0, 0)  # (hash, unit index)
    for _, _, _, hashes in units:
        lo, hi = int(np.argmin(hashes)), int(np.argmax(hashes))  # a batch has >= 1 unit
        if count == 0 or int(hashes[lo]) < lowest[0]:
            lowest = (int(hashes[lo]), count + lo)
        if count == 0 or int(hashes[hi]) > highest[0]:
            highest = (int(hashes[hi]), count + hi)
        chosen += int((hashes < threshold).sum())
        count += len(hashes)
    if count == 1:  # a single unit is for training, whatever its hash: no held-out split
        return count, {lowest[1]: False}
    if count >= 2 and chosen == 0:
        return count, {lowest[1]: True}
    if count >= 2 and chosen == count:
        return count, {highest[1]: False}
    return count, {}


def _iter_units(
    docs: np.ndarray, keys: np.ndarray, paths: list[str], block: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The held-out units of the stream, DOC_BATCH documents at a time (see `_units`)."""
    for d0 in range(0, len(keys), DOC_BATCH):
        yield _units(docs, keys, paths, d0, min(d0 + DOC_BATCH, len(keys)), block)


def _units(
    docs: np.ndarray, keys: np.ndarray, paths: list[str], d0: int, d1: int, block: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The held-out units of documents d0..d1-1: (document, first line, end line, uint64 hash)
    of each, (U,) each; whole documents when `block` is None, else blocks of `block` lines."""
    starts, ends = np.asarray(docs[d0:d1]), np.asarray(docs[d0 + 1 : d1 + 1])
    doc_ids = np.arange(d0, d1, dtype=np.int64)
    if block is None:
        names = [f"{paths[f]}\0{n}" for f, n in np.asarray(keys[d0:d1]).tolist()]
        return doc_ids, starts, ends, _hashes(names)
    per_doc = (ends - starts + block - 1) // block  # blocks of each document
    unit_docs = np.repeat(doc_ids, per_doc)
    j = np.arange(int(per_doc.sum())) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    unit_starts = np.repeat(starts, per_doc) + j * block
    unit_ends = np.minimum(unit_starts + block, np.repeat(ends, per_doc))
    doc_keys = np.asarray(keys[d0:d1])[unit_docs - d0].tolist()
    names = [f"{paths[f]}\0{n}\0{b}" for (f, n), b in zip(doc_keys, j.tolist(), strict=True)]
    return unit_docs, unit_starts, unit_ends, _hashes(names)


def _hashes(names: list[str]) -> np.ndarray:
    """8-byte BLAKE2b of each name, as uint64: stable across runs and machines (unlike hash())."""
    digests = b"".join(hashlib.blake2b(n.encode("utf-8"), digest_size=8).digest() for n in names)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


class _HashedFile:
    """A file written once, front to back, that counts its bytes and hashes them on the way."""

    def __init__(self, path: Path):
        self.path, self.bytes = path, 0
        self._file, self._sha = open(path, "wb"), hashlib.sha256()  # noqa: SIM115 - closed in close()

    def write(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values).tobytes()
        self._file.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {"bytes": self.bytes, "sha256": self._sha.hexdigest()}


class _ShardWriter:
    """The shards of one split: documents appended in order, a new shard once the open one
    holds `shard_tokens` tokens."""

    def __init__(
        self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int, words: np.ndarray | None = None
    ):
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, dtype, shard_tokens
        self.words = words  # the stream's word flags (T,), copied beside the tokens when given
        self.kinds = KINDS + ((WORDS,) if words is not None else ())
        self.records: list[dict[str, Any]] = []
        self._files: dict[str, _HashedFile] | None = None
        self._docs = self._lines = self._tokens = 0  # of the open shard

    def add(self, tokens: np.ndarray, lines: np.ndarray, first: int, end: int) -> None:
        """Append lines first..end-1 of the stream (tokens (T,), line offsets (L+1,)) as a document."""
        if self._files is not None and self._tokens >= self.shard_tokens:
            self._close_shard()
        if self._files is None:
            name = f"{self.split}-{len(self.records):05d}"
            self._files = {k: _HashedFile(self.directory / _shard_file(name, k)) for k in self.kinds}
        base, stop = int(lines[first]), int(lines[end])
        self._files["docs"].write(np.array([self._lines], dtype=OFFSET))
        for a in range(first, end, COPY_STEP):
            b = min(a + COPY_STEP, end)
            self._files["lines"].write((lines[a:b] - base + self._tokens).astype(OFFSET))
        for a in range(base, stop, COPY_STEP):
            self._files["tokens"].write(tokens[a : min(a + COPY_STEP, stop)])
            if self.words is not None:
                self._files[WORDS].write(self.words[a : min(a + COPY_STEP, stop)])
        self._docs += 1
        self._lines += end - first
        self._tokens += stop - base

    def _close_shard(self) -> None:
        assert self._files is not None
        self._files["lines"].write(np.array([self._tokens], dtype=OFFSET))
        self._files["docs"].write(np.array([self._lines], dtype=OFFSET))
        name = f"{self.split}-{len(self.records):05d}"
        files = {k: f.close() for k, f in self._files.items()}
        self.records.append(
            {"name": name, "documents": self._docs, "lines": self._lines, "tokens": self._tokens}
            | {"files": files}
        )
        self._files = None
        self._docs = self._lines = self._tokens = 0

    def close(self) -> dict[str, Any]:
        """The split's summary: totals and the shard records."""
        if self._files is not None:
            self._close_shard()
        total = lambda key: sum(r[key] for r in self.records)
        return {
            "documents": total("documents"),
            "lines": total("lines"),
            "tokens": total("tokens"),
            "shards": self.records,
        }


class _MappedShard:
    """The three arrays of one shard, memory-mapped read-only after checking the file sizes."""

    def __init__(self, directory: Path, record: dict[str, Any], dtype: np.dtype):
        name = record["name"]
        expected = {
            "tokens": int(record["tokens"]) * dtype.itemsize,
            "lines": (int(record["lines"]) + 1) * OFFSET.itemsize,
            "docs": (int(record["documents"]) + 1) * OFFSET.itemsize,
            WORDS: int(record["tokens"]),
        }
        arrays = {}
        kinds = [("tokens", dtype), ("lines", OFFSET), ("docs", OFFSET)]
        kinds += [(WORDS, np.dtype(np.uint8))] if WORDS in record["files"] else []
        for kind, dt in kinds:
            path = directory / _shard_file(name, kind)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise BertkitError("shard file missing (rebuild the shards)", path) from None
            if size != expected[kind] or size != record["files"][kind]["bytes"]:
                raise BertkitError(
                    f"shard file truncated or altered: {size} bytes, the manifest says {expected[kind]} "
                    "(rebuild the shards)",
                    path,
                )
            arrays[kind] = np.memmap(path, dtype=dt, mode="r") if size else np.zeros(0, dt)
        self.tokens, self.lines, self.docs = arrays["tokens"], arrays["lines"], arrays["docs"]
        self.words: np.ndarray | None = arrays.get(WORDS)  # (T,) uint8 word-continuation flags
        ends = (int(self.lines[0]), int(self.lines[-1]), int(self.docs[0]), int(self.docs[-1]))
        if ends != (0, len(self.tokens), 0, len(self.lines) - 1):
            raise BertkitError("shard offsets are inconsistent (rebuild the shards)", directory / name)


def _shard_file(name: str, kind: str) -> str:
    return f"{name}.{kind}.bin"


# ---- the manifest: identity of inputs, tokenizer and options -------------------------------------


def _options(
    heldout: float,
    doc_mode: str,
    strip_gutenberg: bool,
    dedupe_lines: bool,
    shard_tokens: int,
    segmenter: str | None = None,
) -> dict[str, Any]:
    if isinstance(heldout, bool) or not isinstance(heldout, (int, float)) or not 0 < heldout < 1:
        raise BertkitError(f"heldout must be a fraction between 0 and 1 (exclusive), not {heldout!r}")
    if doc_mode not in DOC_MODES:
        raise BertkitError(f"doc_mode must be one of {', '.join(DOC_MODES)}, not {doc_mode!r}")
    if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int) or shard_tokens < 1:
        raise BertkitError(f"shard_tokens must be a positive integer, not {shard_tokens!r}")
    if segmenter is not None and segmenter not in SEGMENTERS:
        raise BertkitError(f"segmenter must be one of {', '.join(SEGMENTERS)}, not {segmenter!r}")
    options = {
        "doc_mode": doc_mode,
        "heldout": float(heldout),
        "strip_gutenberg": bool(strip_gutenberg),
        "dedupe_lines": bool(dedupe_lines),
        "shard_tokens": shard_tokens,
    }
    # only when given, so shards built before segmenters existed are still reused
    return options | ({"segmenter": segmenter} if segmenter else {})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise BertkitError(f"cannot read: {e.strerror or e}", path) from None
    return h.hexdigest()


def _file_info(path: Path) -> dict[str, Any]:
    return {"path": os.fspath(path), "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _tokenizer_info(directory: Path) -> dict[str, Any]:
    """The tokenizer's identity: the sha256 of each file `Tokenizer.from_pretrained` reads, and
    one over them all (what reuse compares; the path is for people)."""
    files = {n: _sha256(directory / n) for n in TOKENIZER_FILES if (directory / n).is_file()}
    combined = hashlib.sha256("".join(f"{n} {h}\n" for n, h in files.items()).encode()).hexdigest()
    return {"path": os.fspath(directory), "sha256": combined, "files": files}


def _reusable(
    output: Path,
    inputs: list[dict[str, Any]],
    tokenizer: dict[str, Any],
    options: dict[str, Any],
    overwrite: bool,
) -> dict[str, Any] | None:
    """The existing manifest if the output was built from the same inputs, tokenizer and options
    and its files are whole; None to rebuild (overwrite); else a BertkitError saying what differs."""
    try:
        manifest = read_manifest(output)
        differences = _differences(manifest, inputs, tokenizer, options)
        if not differences:
            for split in SPLITS:
                ShardedCorpus(output, split)  # checks every shard file's size
            return manifest
    except BertkitError:
        if overwrite:
            return None
        raise
    if overwrite:
        return None
    raise BertkitError(
        f"holds shards built from other {'; '.join(differences)} (pass --overwrite / overwrite=True "
        "to rebuild)",
        output,
    )


def _differences(
    manifest: dict[str, Any], inputs: list[dict[str, Any]], tokenizer: dict[str, Any], options: dict[str, Any]
) -> list[str]:
    """What differs between the manifest's build and this one, in words; [] when nothing does."""
    found = []
    old_inputs = manifest.get("inputs", [])
    if old_inputs != inputs:
        old = {i.get("path"): i for i in old_inputs}
        changed = [i["path"] for i in inputs if old.get(i["path"]) != i]
        gone = [p for p in old if p not in {i["path"] for i in inputs}]
        what = []
        if changed:
            what.append(f"{len(changed)} new or changed, first {changed[0]}")
        if gone:
            what.append(f"{len(gone)} no longer given, first {gone[0]}")
        found.append("inputs (" + ("; ".join(what) or "another order") + ")")
    if manifest.get("tokenizer", {}).get("sha256") != tokenizer["sha256"]:
        found.append(f"tokenizer (was {manifest.get('tokenizer', {}).get('path')})")
    old_options = manifest.get("options", {})
    if old_options != options:
        shown = [f"{k} {old_options.get(k)!r} → {v!r}" for k, v in options.items() if old_options.get(k) != v]
        found.append("options: " + ", ".join(shown))
    return found
