"""Examples and batches: readers for the formats users bring (TSV/CSV/JSONL rows, class folders,
CoNLL columns, span JSONL, SQuAD) with tag schemes (`schemes`), padding and length-grouped
batching (`batching`), pretraining shards (`shards`) and masked-LM instances (`mlm`). Which
reader a task uses is the task's choice (`bertkit.tasks.registry.load_examples`). May import
`tokenization` and the ground floor; not `models`, `evaluation` (its neighbours) or anything above."""

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
