"""Tokenizing a corpus for the shards: its lines read (see `bertkit.tokenization.text`), encoded in
chunks by worker processes, a bounded number at a time, and appended in reading order to a
`TokenStream` of hidden files in the build's stage, from which `bertkit.data.splits` writes the
shards. Memory does not grow with the corpus, and the stream does not depend on the workers."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.data.manifest import OFFSET, WORDS
from bertkit.errors import BertkitError
from bertkit.tokenization.segment import continuation, load_segmenter, word_starts
from bertkit.tokenization.text import ReadStats, iter_document_lines
from bertkit.tokenization.tokenizer import Tokenizer

CHUNK_LINES, CHUNK_CHARS = 2048, 1 << 20  # a unit of work for a tokenizing process


def tokenize_corpus(
    stage: Path,
    files: list[Path],
    options: dict[str, Any],
    tokenizer: Tokenizer,
    workers: int,
    dtype: np.dtype,
    progress: bool,
) -> tuple[TokenStream, ReadStats]:
    """Read and tokenize the whole corpus into a `TokenStream` in the stage, with a progress bar
    over the bytes read; no text at all is an error."""
    stats = ReadStats()
    doc_mode, strip, dedupe = (options[k] for k in ("doc_mode", "strip_gutenberg", "dedupe_lines"))
    lines = iter_document_lines(files, doc_mode, strip, dedupe, stats=stats)
    segmenter = options.get("segmenter")
    stream = TokenStream(stage, dtype, words=segmenter is not None)
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
        encode = _Encoder(tokenizer.corpus_backend, dtype, segmenter)
        for lines, keys in chunks:
            yield keys, encode(lines)
        return
    if segmenter:
        load_segmenter(segmenter)  # a missing package fails here, not in a worker
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(tokenizer.corpus_backend.to_str(), dtype.str, segmenter),
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


class TokenStream:
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

    def __enter__(self) -> TokenStream:
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
