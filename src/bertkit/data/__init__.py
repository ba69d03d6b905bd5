"""Examples and batches: readers for the formats users bring — TSV/CSV/JSONL rows (`readers`), class
folders (`folders`), CoNLL columns (`conll`), span JSONL (`spans`), SQuAD (`squad`) — into the
examples of `examples`, with the dirt real files carry forgiven (`cleaning`), labels read and
checked (`labels`) and tag schemes converted (`schemes`); padding and length-grouped batching
(`batching`); pretraining shards: built (`shards`: tokenized by workers in `token_stream`, cut
into train and held-out in `splits`), their manifest (`manifest`) and read (`corpus`); and
masked-LM instances (`mlm`). `ReaderOptions` (in `examples`) are the reader flags' settings. Which reader
a task uses is the task's choice (`bertkit.tasks.registry.load_examples`). May import
`tokenization` and the ground floor; not `models`, `evaluation` (its neighbours) or anything
above."""

from __future__ import annotations

from bertkit.data.conll import read_conll
from bertkit.data.examples import QAExample, TextExample, TokenExample
from bertkit.data.folders import read_folder_classification
from bertkit.data.labels import check_labels, label_vocab
from bertkit.data.readers import read_text_classification
from bertkit.data.spans import read_span_jsonl
from bertkit.data.squad import read_squad

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
