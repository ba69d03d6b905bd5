"""What the reference engines share: tokenization (the `tokenizers` library, as transformers'
fast tokenizer) into the batches bertkit's engine would make — sorted by length and cut by a
token budget (`bertkit.data.batching.sorted_order`: rows × longest ≤ the budget, at most 256
rows) — so that every engine gets the same batches; mean pooling; a classifier's head."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MAX_LENGTH = 512
# bertkit's budgets (bertkit.engine.runner.MAX_TOKENS): OpenVINO's requests run faster when small
MAX_TOKENS = 8192
OPENVINO_MAX_TOKENS = 1024


class Batcher:
    """texts -> (indices, input_ids, attention_mask, token_type_ids) int64 batches in length
    order, each padded to its longest text, within `max_tokens` padded tokens (`max_tokens` 0:
    one text a batch)."""

    def __init__(self, model_dir: Path, max_length: int = MAX_LENGTH, max_tokens: int = MAX_TOKENS):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tok.enable_truncation(max_length)
        self.tok.no_padding()
        self.max_tokens = max_tokens

    def __call__(self, texts: list[str]) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
        from bertkit.data.batching import sorted_order

        enc = self.tok.encode_batch(texts)
        lengths = [len(e.ids) for e in enc]
        one_each = ([i] for i in range(len(texts)))
        groups = sorted_order(lengths, self.max_tokens) if self.max_tokens else one_each
        for idx in groups:
            T = max(len(enc[i].ids) for i in idx)
            ids = np.zeros((len(idx), T), dtype=np.int64)
            mask = np.zeros((len(idx), T), dtype=np.int64)
            types = np.zeros((len(idx), T), dtype=np.int64)
            for r, i in enumerate(idx):
                n = len(enc[i].ids)
                ids[r, :n], mask[r, :n], types[r, :n] = enc[i].ids, 1, enc[i].type_ids
            yield idx, ids, mask, types


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    return (hidden.astype(np.float32) * m).sum(1) / m.sum(1)


def num_labels(model_dir: Path) -> int:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return len(cfg.get("id2label") or {}) or int(cfg.get("num_labels", 2))


def classifier_head(model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of a sequence classifier's linear layer on the pooled vector."""
    from safetensors.numpy import load_file

    w = load_file(str(Path(model_dir) / "model.safetensors"))
    return w["classifier.weight"].astype(np.float32), w["classifier.bias"].astype(np.float32)


def collect(kind: str, n: int, dim: int) -> np.ndarray:
    return np.zeros((n, dim), dtype=np.float32) if kind == "embed" else np.zeros(n, dtype=np.int64)
