"""Reading a tokenizer's files: tokenizer.json of a kind bertkit runs, vocab.txt, the JSON beside."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import models

from bertkit.errors import BertkitError
from bertkit.tokenization.pipeline import KINDS, UNK

MAX_INPUT_CHARS_PER_WORD = 100  # WordPiece: a longer word is [UNK]


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise BertkitError(f"cannot read: {getattr(e, 'strerror', None) or e}", path) from None
    except json.JSONDecodeError as e:
        raise BertkitError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path) from None
    if not isinstance(value, dict):
        raise BertkitError(f"expected a JSON object, found {type(value).__name__}", path)
    return value


def backend_of(spec: dict[str, Any], source: Path) -> tokenizers.Tokenizer:
    """The `tokenizers` backend of a tokenizer.json of a kind bertkit runs."""
    model = m if isinstance(m := spec.get("model"), dict) else {}
    if model.get("type") not in KINDS:
        raise BertkitError(f"not a {', '.join(KINDS)} tokenizer (model type {model.get('type')!r})", source)
    ids = model.get("vocab")
    if model["type"] == "WordPiece" and (
        not isinstance(ids, dict) or sorted(ids.values()) != list(range(len(ids)))
    ):
        raise BertkitError("model.vocab is missing or its ids are not 0..N-1, each once", source)
    try:
        backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
    except Exception as e:  # tokenizers raises a bare Exception on bad content
        raise BertkitError(f"invalid tokenizer file: {e}", source) from None
    if model["type"] == "Unigram":
        backend.model = _unigram(model)
    return backend


def _unigram(model: dict[str, Any]) -> models.Unigram:
    """The Unigram model rebuilt from the scores as Python reads them, as transformers does: the
    Rust JSON reader can land a score one unit in the last place away, which turns an exact tie
    between two segmentations (a run of dashes) the other way."""
    vocab = [(str(piece), float(score)) for piece, score in model["vocab"]]
    return models.Unigram(vocab, model.get("unk_id"), bool(model.get("byte_fallback", False)))


def wordpiece(tokens: Sequence[Any], source: str | os.PathLike | None) -> tokenizers.Tokenizer:
    """A WordPiece backend with token i as id i. Rejects an empty vocabulary, empty tokens and
    duplicates (a duplicate would leave an id unused and vocab.txt would not round-trip)."""
    if not tokens:
        raise BertkitError("empty vocabulary", source)
    ids: dict[str, int] = {}
    where = (lambda i: f"line {i + 1}") if source is not None else (lambda i: f"token {i}")
    for i, t in enumerate(tokens):
        if not isinstance(t, str) or not t:
            raise BertkitError(f"{where(i)}: empty or non-string token {t!r}", source)
        if t in ids:
            raise BertkitError(f"{where(i)}: duplicate token {t!r} (first at {where(ids[t])})", source)
        ids[t] = i
    model = models.WordPiece(ids, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD)
    return tokenizers.Tokenizer(model)


def read_vocab(path: str | os.PathLike) -> list[str]:
    """The tokens of a vocab.txt, in id order, each without trailing whitespace (as the `tokenizers`
    reader that transformers uses drops it, "\\r" of Windows line ends included)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise BertkitError("vocabulary file not found", path) from None
    except OSError as e:
        raise BertkitError(f"cannot read: {e.strerror or e}", path) from None
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BertkitError(f"line {line}: not valid UTF-8", path) from None
    return [line.rstrip() for line in (lines[:-1] if lines[-1] == "" else lines)]
