"""Token shards: a raw text corpus tokenized once into flat arrays that pretraining memory-maps.

Why: tokenizing on the fly costs more CPU than a small model's training step, and every epoch,
rank and DataLoader worker would repeat it. `build_shards` tokenizes the corpus once, in parallel
worker processes (`bertkit.data.token_stream`), into plain binary files (no pickle) of a train and
a held-out split (`bertkit.data.splits`), laid out as `bertkit.data.manifest` describes;
`bertkit.data.corpus.ShardedCorpus` opens them with `np.memmap`, so any number of processes share
them through the page cache without loading them.

A line is a "sentence" and a document a run of lines, as in google-research/bert's
create_pretraining_data.py (see `bertkit.tokenization.text` for what ends a document). Lines that tokenize
to nothing are dropped, and so are documents left empty. A shard closes once it holds at least
`shard_tokens` tokens, at a document boundary, so a document never spans shards.

The build is staged: everything is written into a hidden directory beside the output and renamed
into place at the end, so an interrupted run leaves nothing that looks complete. A later build with
the same inputs (paths, sizes, sha256), tokenizer files and options reuses the output as it is.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.data.corpus import ShardedCorpus
from bertkit.data.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    build_options,
    differences,
    file_info,
    read_manifest,
    tokenizer_info,
)
from bertkit.data.splits import write_splits
from bertkit.data.token_stream import tokenize_corpus
from bertkit.errors import BertkitError
from bertkit.fileio import staged_output, write_json
from bertkit.options import option
from bertkit.tokenization.segment import SEGMENTERS
from bertkit.tokenization.text import DOC_MODES, PathArg, resolve_files
from bertkit.tokenization.tokenizer import Tokenizer

SMALL_CORPUS_BYTES = 4 << 20  # below this, workers=None tokenizes in this process (no spawning)


@dataclass
class ShardOptions:
    """How a corpus becomes shards, each also a flag of `bertkit shards` (and of `bertkit pretrain`,
    which takes its progress from training's --quiet)."""

    workers: int | None = option(None, help="tokenizing processes (default: CPU count; 1: in this process)")
    heldout: float = option(0.01, help="share of the text held out (default {default:g})")
    doc_mode: str = option(
        "file",
        choices=DOC_MODES,
        help="what a document is: a whole file, or text between blank lines (default {default})",
    )
    strip_gutenberg: bool = option(
        True,
        flag="--no-strip-gutenberg",
        negated=True,
        help="keep Project Gutenberg licence headers and footers (default: drop them)",
    )
    dedupe_lines: bool = option(False, help="drop exact repeats of a line across the corpus")
    shard_tokens: int = option(
        50_000_000, help="start a new shard after this many tokens, at a document end (default {default})"
    )
    segmenter: str | None = option(
        None,
        choices=SEGMENTERS,
        help="record word boundaries for --whole-word-mask (Chinese): cut each line with jieba or "
        "rjieba (pip install bertkit[zh]), or 'spaces' for a corpus already segmented (one line of "
        "space-separated words per line, e.g. a segmentation file); default: none",
    )
    progress: bool = option(True, flag="--quiet", negated=True, help="no progress bar")


def build_shards(
    inputs: PathArg | Iterable[PathArg],
    tokenizer_dir: PathArg,
    output_dir: PathArg,
    options: ShardOptions | None = None,
    *,
    overwrite: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Tokenize text files (plain or .gz; paths, folders or glob patterns) with the tokenizer in
    `tokenizer_dir` into token shards in `output_dir`, and return the manifest. The settings are
    `options` (default `ShardOptions()`) with `settings` (its fields by name) on top.

    Reading (`bertkit.tokenization.text.iter_document_lines`): documents per `doc_mode` ("file" or
    "blank-line"), Project Gutenberg boilerplate dropped unless `strip_gutenberg` is False, exact
    repeats of a line dropped corpus-wide with `dedupe_lines`. `workers` processes tokenize chunks
    of lines, a bounded number at a time, so memory does not grow with the corpus; the output
    does not depend on `workers`. workers=1 tokenizes in this process; None uses os.cpu_count()
    processes, or this process alone for a corpus under 4 MB (spawning would cost more).
    With `segmenter` (one of `bertkit.tokenization.segment.SEGMENTERS`) each line is also cut into words
    and every shard gets a words file (which tokens continue a word), for whole-word masking.
    The fraction `heldout` of the text, whole documents or blocks of lines, is held out by a
    deterministic rule that leaves neither split empty (see `bertkit.data.splits`).

    If `output_dir` holds a manifest with the same inputs (paths, sizes, sha256), tokenizer files
    (sha256) and options, it is returned as it is, nothing rewritten; any difference is an error
    unless `overwrite`, which rebuilds. Errors (a `BertkitError` naming the file): no input files,
    no text, an unreadable, non-gzip, binary or non-UTF-8 file (with the line), a missing
    tokenizer or one lacking its special tokens ([PAD] [UNK] [CLS] [SEP] [MASK] or its kind's)."""
    start = time.perf_counter()
    o = replace(options or ShardOptions(), **settings)
    workers, progress = o.workers, o.progress
    recorded = build_options(
        o.heldout, o.doc_mode, o.strip_gutenberg, o.dedupe_lines, o.shard_tokens, o.segmenter
    )
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise BertkitError(f"workers must be a positive integer, not {workers!r}")
    files = resolve_files(inputs)
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    identity: dict[str, Any] = {"tokenizer": tokenizer_info(Path(tokenizer_dir))}
    identity["inputs"] = [file_info(p) for p in files]
    output = Path(output_dir)
    old = _reusable(output, identity["inputs"], identity["tokenizer"], recorded, overwrite)
    if old is not None:
        if progress:
            print(f"{output}: reused (same inputs, tokenizer and options)", file=sys.stderr)
        return old
    if workers is None:
        small = sum(i["bytes"] for i in identity["inputs"]) < SMALL_CORPUS_BYTES
        workers = 1 if small else os.cpu_count() or 1
    with staged_output(output, overwrite) as stage:
        manifest = _build(stage, files, tokenizer, identity | {"options": recorded}, workers, progress)
        manifest["seconds"] = round(time.perf_counter() - start, 2)
        write_json(stage / MANIFEST, manifest)
    return manifest


def _build(
    stage: Path,
    files: list[Path],
    tokenizer: Tokenizer,
    identity: dict[str, Any],
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Tokenize `files` into the stage and write the shards of both splits there: the manifest,
    but for the seconds the build took. `identity`: the tokenizer, inputs and options."""
    options = identity["options"]
    vocab_size = tokenizer.backend.get_vocab_size(with_added_tokens=True)  # ids are below this
    dtype = np.dtype("<u2" if vocab_size <= 65535 else "<u4")
    stream, stats = tokenize_corpus(stage, files, options, tokenizer, workers, dtype, progress)
    paths = [i["path"] for i in identity["inputs"]]
    splits, rule = write_splits(stage, stream, paths, options["heldout"], options["shard_tokens"])
    stream.remove()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,  # little-endian
        "vocab_size": vocab_size,
        "tokenizer": identity["tokenizer"],
        "inputs": identity["inputs"],
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
    }


def _reusable(
    output: Path,
    inputs: list[dict[str, Any]],
    tokenizer: dict[str, Any],
    options: dict[str, Any],
    overwrite: bool,
) -> dict[str, Any] | None:
    """The existing manifest if the output was built from the same inputs, tokenizer and options
    and its files are whole; None to rebuild (overwrite) or when the output holds no manifest; else
    a BertkitError saying what differs."""
    if not (output.is_dir() and (output / MANIFEST).exists()):
        return None
    try:
        manifest = read_manifest(output)
        found = differences(manifest, inputs, tokenizer, options)
        if not found:
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
        f"holds shards built from other {'; '.join(found)} (pass --overwrite / overwrite=True to rebuild)",
        output,
    )
