"""Readers: files in the formats users bring (TSV/CSV/JSONL, CoNLL columns, span JSONL, SQuAD)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertkit.data.folders import is_folder_dataset, read_folder_classification
from bertkit.data.readers import (
    QAExample,
    TextExample,
    TokenExample,
    check_labels,
    label_vocab,
    read_conll,
    read_span_jsonl,
    read_squad,
    read_text_classification,
)
from bertkit.errors import BertkitError

FORMATS = ("tsv", "csv", "jsonl", "conll", "spans", "squad", "folders")

__all__ = [
    "FORMATS",
    "QAExample",
    "TextExample",
    "TokenExample",
    "check_labels",
    "label_vocab",
    "load_examples",
    "read_conll",
    "read_folder_classification",
    "read_span_jsonl",
    "read_squad",
    "read_text_classification",
]


def load_examples(task: str, path: str | Path, fmt: str | None = None, **opts: Any) -> list:
    """Read `path` for `task` ("classify", "ner", "qa"). Without `fmt` the format follows the task
    and the extension: NER reads CoNLL columns (.jsonl/.json: character-offset spans), QA reads
    SQuAD JSON, classification reads TSV/CSV/JSONL, or a folder per label (a directory, or a folder
    inside a tar archive: `aclImdb.tar.gz/aclImdb/train`). `opts` are the reader's keyword options."""
    suffix = Path(path).suffix.lower()
    if fmt is None:
        if task == "ner":
            fmt = "spans" if suffix in (".json", ".jsonl") else "conll"
        elif task == "qa":
            fmt = "squad"
    if fmt not in (None, *FORMATS):
        raise BertkitError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    keep = lambda *names: {k: v for k, v in opts.items() if k in names and v is not None}  # noqa: E731
    if task == "ner":
        if fmt == "spans":
            return read_span_jsonl(path, **keep("text_field", "label_field"))
        if fmt != "conll":
            raise BertkitError(f"format {fmt!r} does not hold NER tags; use conll or spans", path)
        return read_conll(path, **keep("token_column", "tag_column", "scheme", "strip_digit_suffix"))
    if task == "qa":
        if fmt != "squad":
            raise BertkitError(f"format {fmt!r} does not hold QA examples; use squad", path)
        return read_squad(path)
    if fmt == "folders" or (fmt is None and is_folder_dataset(path)):
        return read_folder_classification(path)
    if fmt in ("conll", "spans", "squad"):
        raise BertkitError(
            f"format {fmt!r} does not hold classification examples; use tsv, csv or jsonl", path
        )
    return read_text_classification(
        path, fmt, **keep("text_column", "pair_column", "label_column", "header", "regression")
    )
