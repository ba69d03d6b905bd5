"""Readers: files in the formats users bring (TSV/CSV/JSONL, CoNLL columns, span JSONL, SQuAD).
Which reader a task uses is the task's choice: `bertkit.tasks.registry.load_examples`."""

from __future__ import annotations

from bertkit.data.folders import read_folder_classification
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

__all__ = [
    "QAExample",
    "TextExample",
    "TokenExample",
    "check_labels",
    "label_vocab",
    "read_conll",
    "read_folder_classification",
    "read_span_jsonl",
    "read_squad",
    "read_text_classification",
]
