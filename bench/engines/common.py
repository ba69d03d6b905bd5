"""What the reference engines share: tokenization into length-sorted padded batches (the
`tokenizers` library, as transformers' fast tokenizer), mean pooling, a classifier's head."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

BATCH = 32  # texts per batch: sentence-transformers' default, sorted by length as it does
MAX_LENGTH = 512


class Batcher:
    """texts -> (indices, input_ids, attention_mask, token_type_ids) int64 batches in length
    order, each padded to its longest text."""

    def __init__(self, model_dir: Path, max_length: int = MAX_LENGTH, batch: int = BATCH):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tok.enable_truncation(max_length)
        self.tok.no_padding()
        self.batch = batch

    def __call__(self, texts: list[str]) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
        enc = self.tok.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(enc[i].ids))
        for s in range(0, len(order), self.batch):
            idx = order[s : s + self.batch]
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
