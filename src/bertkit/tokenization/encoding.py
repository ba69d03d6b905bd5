"""What a call of `Tokenizer` takes and gives: texts, pairs or pre-split words in; model inputs
by name out, as transformers' `BatchEncoding`."""

from __future__ import annotations

from typing import Any

import tokenizers


class BatchEncoding(dict):
    """Model inputs by name (`input_ids`, `token_type_ids`, `attention_mask`, ...), also readable as
    attributes, like `transformers.BatchEncoding`; keeps the `tokenizers` encodings, one per row."""

    def __init__(self, data: dict[str, Any], encodings: list[tokenizers.Encoding]):
        super().__init__(data)
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Index of the input word each token comes from; None for [CLS], [SEP] and [PAD]."""
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0 for tokens of the first text, 1 for the pair's, None for special tokens."""
        return self.encodings[batch_index].sequence_ids

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The wordpiece strings of row `batch_index`, special tokens included."""
        return self.encodings[batch_index].tokens

    def to(self, device: Any) -> BatchEncoding:
        """Move the tensors (return_tensors="pt") to `device`."""
        self.update({k: v.to(device) for k, v in self.items() if hasattr(v, "to")})
        return self


def inputs_of(text: Any, text_pair: Any, words: bool) -> tuple[list, bool]:
    """What `encode_batch` takes for a text (or pair) or a batch of them, and whether it was a batch."""
    one = lambda t: _check_text(t, words)
    batched = isinstance(text, (list, tuple)) and (
        not words or bool(text) and isinstance(text[0], (list, tuple))
    )
    if not batched:
        return ([(one(text), one(text_pair))] if text_pair else [one(text)]), False  # "" is no pair, as in HF
    if text_pair is None:
        return [one(t) for t in text], True
    if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(text):
        raise ValueError("for a batch of texts, text_pair must be a list of the same length")
    return [(one(a), one(b)) for a, b in zip(text, text_pair, strict=True)], True


def outputs_of(
    encodings: list[tokenizers.Encoding], overflow: bool, offsets: bool, special: bool
) -> tuple[dict[str, Any], list[tokenizers.Encoding]]:
    """The output lists by name, one row an encoding; with overflow, each input gives its first
    window and then the rest, as rows of their own."""
    rows = [r for e in encodings for r in ([e, *e.overflowing] if overflow else [e])]
    data: dict[str, Any] = {
        "input_ids": [r.ids for r in rows],
        "token_type_ids": [r.type_ids for r in rows],
        "attention_mask": [r.attention_mask for r in rows],
    }
    if special:
        data["special_tokens_mask"] = [r.special_tokens_mask for r in rows]
    if offsets:
        data["offset_mapping"] = [r.offsets for r in rows]
    if overflow:
        data["overflow_to_sample_mapping"] = [i for i, e in enumerate(encodings) for _ in [e, *e.overflowing]]
    return data, rows


def _check_text(text: Any, words: bool) -> Any:
    if words and isinstance(text, (list, tuple)) and all(isinstance(w, str) for w in text):
        return list(text)
    if not words and isinstance(text, str):
        return text
    raise ValueError(
        f"a text must be {'a list of str (words)' if words else 'a str'}, not {type(text).__name__}"
    )


def as_tensor(key: str, rows: list, kind: str) -> Any:
    if rows and isinstance(rows[0], list) and len({len(r) for r in rows}) > 1:
        raise ValueError(f"cannot make a tensor of {key} rows of different lengths; pass padding=True")
    if kind == "pt":
        import torch  # lazy: tokenizing alone should not pay for importing torch

        return torch.tensor(rows, dtype=torch.long)
    import numpy as np

    return np.array(rows, dtype=np.int64)
