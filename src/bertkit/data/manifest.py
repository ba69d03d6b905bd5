"""The shard format and its manifest: file names and types, reading a shard directory's
manifest.json, and the identity of a build (inputs, tokenizer, options) that decides reuse.

Layout of a shard directory, for each split ("train", "heldout"), shard k:

    {split}-{k:05d}.tokens.bin   token ids, 1-D, little-endian uint16 (vocab_size <= 65535) or uint32
    {split}-{k:05d}.lines.bin    int64: each line's start offset into the tokens, then the end
    {split}-{k:05d}.docs.bin     int64: each document's first line index into the lines, then the end
    {split}-{k:05d}.words.bin    uint8, one a token: 1 where the token continues the word of the
                                 token before it (only with a segmenter, see `bertkit.tokenization.segment`)
    manifest.json                counts, sha256 of every file, the tokenizer, the inputs, the options

`bertkit.data.shards` builds such a directory and `bertkit.data.corpus` reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import BertkitError
from bertkit.tokenization.segment import SEGMENTERS
from bertkit.tokenization.text import DOC_MODES, PathArg

FORMAT, FORMAT_VERSION = "bertkit-shards", 1
MANIFEST = "manifest.json"
SPLITS = ("train", "heldout")
KINDS = ("tokens", "lines", "docs")  # the files of a shard: {name}.{kind}.bin
WORDS = "words"  # the optional fourth file: word-continuation flags (uint8, one a token)
# what Tokenizer.from_pretrained reads
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
OFFSET = np.dtype("<i8")  # line and document offsets
_SHARD_NAME = re.compile(r"^(train|heldout)-\d{5}$")


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


def shard_file(name: str, kind: str) -> str:
    """The file name of one kind (tokens, lines, docs, words) of shard `name`."""
    return f"{name}.{kind}.bin"


# ---- the identity of a build: inputs, tokenizer and options --------------------------------------


def build_options(
    heldout: float,
    doc_mode: str,
    strip_gutenberg: bool,
    dedupe_lines: bool,
    shard_tokens: int,
    segmenter: str | None = None,
) -> dict[str, Any]:
    """The checked build options, as the manifest records them."""
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


def sha256(path: Path) -> str:
    """The sha256 of a file's bytes, in hex; an unreadable file is a BertkitError."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise BertkitError(f"cannot read: {e.strerror or e}", path) from None
    return h.hexdigest()


def file_info(path: Path) -> dict[str, Any]:
    """An input file's identity: its path as given, size and sha256."""
    return {"path": os.fspath(path), "bytes": path.stat().st_size, "sha256": sha256(path)}


def tokenizer_info(directory: Path) -> dict[str, Any]:
    """The tokenizer's identity: the sha256 of each file `Tokenizer.from_pretrained` reads, and
    one over them all (what reuse compares; the path is for people)."""
    files = {n: sha256(directory / n) for n in TOKENIZER_FILES if (directory / n).is_file()}
    combined = hashlib.sha256("".join(f"{n} {h}\n" for n, h in files.items()).encode()).hexdigest()
    return {"path": os.fspath(directory), "sha256": combined, "files": files}


def differences(
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
