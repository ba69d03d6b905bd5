"""The train/held-out split of a tokenized corpus and the shards each split is written into.

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

A shard closes once it holds at least `shard_tokens` tokens, at a document boundary, so a
document never spans shards (see `bertkit.data.manifest` for the files of a shard).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.data.manifest import KINDS, OFFSET, SPLITS, WORDS, shard_file
from bertkit.data.token_stream import TokenStream

MIN_HELDOUT_DOCS = 10  # hold out whole documents only when heldout × documents reaches this
BLOCK_LINES = 100  # else hold out blocks of this many lines
COPY_STEP = 1 << 22  # tokens or lines copied at a time from the staging stream into a shard
DOC_BATCH = 1 << 16  # documents per step when choosing the held-out split


def write_splits(
    stage: Path, stream: TokenStream, paths: list[str], heldout: float, shard_tokens: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cut the stream into held-out units (see above), then copy the text into the shards of each
    split in reading order: (split summaries for the manifest, the held-out rule used)."""
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
            self._files = {k: _HashedFile(self.directory / shard_file(name, k)) for k in self.kinds}
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
