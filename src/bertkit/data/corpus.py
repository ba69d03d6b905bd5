"""Reading token shards: one split of a shard directory (see `bertkit.data.manifest` for the
layout), memory-mapped read-only, so any number of processes share it through the page cache
without loading it; pretraining reads its documents by index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bertkit.data.manifest import OFFSET, SPLITS, WORDS, read_manifest, sha256, shard_file
from bertkit.errors import BertkitError
from bertkit.tokenization.text import PathArg


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
                path = self.directory / shard_file(record["name"], kind)
                if sha256(path) != record["files"][kind]["sha256"]:
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
            path = directory / shard_file(name, kind)
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
