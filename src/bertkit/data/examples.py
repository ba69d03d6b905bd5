"""The examples readers return: a text (or text pair) with its label, a tagged sentence, and a
SQuAD question. Each keeps where it came from, so later errors can name the line. And the
reader options a user gives (`ReaderOptions`): which columns, which tag scheme, which labels."""

from __future__ import annotations

from dataclasses import dataclass

from bertkit.data.schemes import ALIASES, CHOICES, NAMES
from bertkit.options import option

_ALIASES = ", ".join(f"{a}={s}" for a, s in ALIASES.items())


@dataclass
class ReaderOptions:
    """How a file is read, each also a flag of the commands that read labelled files; None
    (not given): the format's own rule, or what a trained model was trained with."""

    text_column: str | None = option(None, help="text column: header name or 0-based index")
    pair_column: str | None = option(None, help="second text column for sentence pairs")
    label_column: str | None = option(None, help="label column: header name or 0-based index")
    token_column: int | None = option(None, help="CoNLL: token column index (default 0)")
    tag_column: int | None = option(None, help="CoNLL: tag column index (default -1, the last)")
    scheme: str | None = option(
        None,
        flag="--tag-scheme",
        aliases=("--scheme",),
        choices=CHOICES,
        metavar="SCHEME",
        help=f"CoNLL tag scheme of the file: auto (default: detected from the tags), or one of "
        f"{', '.join(NAMES)} ({_ALIASES}), checked strictly; tags are read as IOB2",
    )
    labels_file: str | None = option(
        None,
        flag="--labels",
        help="multi-label: a label file, one name a line, in id order (label ids in the data index it, "
        "as GoEmotions' emotions.txt)",
    )
    label_separator: str | None = option(
        None,
        help="multi-label TSV/CSV: what joins the labels of one text (default ','; a JSON list also reads)",
    )
    strip_digit_suffix: bool = option(
        False, help="CoNLL: strip a trailing digit from each token (Weibo NER's word-position marks)"
    )
    # what the task says about the labels (its flags, or a trained model's settings)
    regression: bool | None = None  # classify: the label is a number
    multi_label: bool | None = None  # classify: the label is a list of names
    label_names: list[str] | None = None  # multi-label: a trained model's labels, in id order


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
