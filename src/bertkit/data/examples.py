"""The examples readers return: a text (or text pair) with its label, a tagged sentence, and a
SQuAD question. Each keeps where it came from, so later errors can name the line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TextExample:
    """One row of a classification/regression file; `line` is its 1-based line in the file."""

    text: str
    pair: str | None
    label: str | float | tuple[str, ...] | None  # a tuple of names for multi-label
    line: int


@dataclass
class TokenExample:
    """One sentence: tokens, IOB2 tags (None when the file has none), the sentence as text and
    each token's (start, end) character span in it; `line` is the line of the first token;
    `scheme` the tag scheme its CoNLL file was read in (None: no tags, or not a CoNLL file)."""

    tokens: list[str]
    tags: list[str] | None
    text: str
    offsets: list[tuple[int, int]]
    line: int
    scheme: str | None = None


@dataclass
class QAExample:
    """One SQuAD question; `answers` holds {"text", "answer_start"} dicts."""

    id: str
    question: str
    context: str
    answers: list[dict]
    title: str | None
