"""Learning a vocabulary from text, with `tokenizers`' trainers: WordPiece (BERT), byte-level BPE
(RoBERTa) or SentencePiece Unigram (XLM-R, CamemBERT).

`train_tokenizer` streams the lines of text files (plain or .gz, Gutenberg boilerplate stripped),
sees them through the normalizer and pre-tokenizer that encoding will use and learns
`vocab_size` tokens, the kind's five special tokens first. WordPiece gives every kept character
its "##" form so that no digit or letter is [UNK] inside a word; byte-level BPE starts from the
256 bytes, so nothing is ever unknown. The result is a `Tokenizer`, saved like any other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tokenizers
from tokenizers import models, pre_tokenizers, trainers

from bertkit.errors import BertkitError
from bertkit.options import option
from bertkit.tokenization.files import MAX_INPUT_CHARS_PER_WORD
from bertkit.tokenization.pipeline import SENTENCE_SPECIALS, SPECIAL_TOKENS, UNK, Specials, new_backend
from bertkit.tokenization.text import PathArg, iter_text_lines, resolve_files
from bertkit.tokenization.tokenizer import Tokenizer, bert_normalizer

PathsArg = PathArg | Iterable[PathArg]
MODEL_TYPES = ("wordpiece", "bpe", "unigram")


@dataclass
class VocabOptions:
    """What a vocabulary is learned with, each also a flag of `bertkit tokenizer train` (and
    `vocab_size`, `lowercase` of `bertkit pretrain`)."""

    vocab_size: int = option(30522, help="target vocabulary size (default {default})")
    model_type: str = option(
        "wordpiece",
        choices=MODEL_TYPES,
        help="wordpiece (BERT's, the default), bpe (RoBERTa's byte-level BPE) or unigram (XLM-R's "
        "SentencePiece); bpe and unigram keep case and take <s> </s> <pad> <unk> <mask>",
    )
    lowercase: bool = option(
        True, flag="--cased", negated=True, help="keep case (default: lower-case; wordpiece only)"
    )
    min_frequency: int = option(2, help="minimum pair frequency to merge")
    limit_alphabet: int = option(1000, help="characters kept (default {default}; Chinese: e.g. 6000)")
    alphabet_files: list[str] = option(
        flag="--initial-alphabet",
        nargs="+",
        metavar="FILE",
        default_factory=list,
        help="keep every character of these text files (e.g. the fine-tuning sets' training files), "
        "so that the text the model will meet has no [UNK] for characters the corpus lacks; they "
        "count towards --limit-alphabet",
    )


_D = VocabOptions()


def train_tokenizer(
    files: PathsArg,
    vocab_size: int,
    output: str | os.PathLike | None,
    do_lower_case: bool = _D.lowercase,
    min_frequency: int = _D.min_frequency,
    limit_alphabet: int = _D.limit_alphabet,
    strip_accents: bool | None = None,
    *,
    strip_gutenberg: bool = True,
    alphabet_files: PathsArg = (),
    model_type: str = _D.model_type,
) -> Tokenizer:
    """Learn a vocabulary of `vocab_size` tokens from text files, folders or glob patterns (plain
    or .gz) and save it to the directory `output` (None: do not save). `model_type`: wordpiece
    ([PAD] [UNK] [CLS] [SEP] [MASK] first; the normalizer isolates CJK characters, so each one
    is a token), bpe or unigram (<s> <pad> </s> <unk> <mask> first, cased). Lines are streamed,
    so memory grows with the number of distinct words, not with the corpus. Every character of
    `alphabet_files` (normalized as the corpus is) is kept whatever its count, as the trainer's
    initial alphabet: text the model will meet (a fine-tuning set) then has no unknown
    characters the corpus lacks (digits, product names)."""
    if model_type not in MODEL_TYPES:
        raise BertkitError(f"model_type must be one of {', '.join(MODEL_TYPES)}, not {model_type!r}")
    _check_options(vocab_size, min_frequency, limit_alphabet, output)
    paths = resolve_files(files)
    if model_type == "wordpiece":
        backend = tokenizers.Tokenizer(
            models.WordPiece(unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD)
        )
        # Training sees the text through the normalizer and pre-tokenizer that encoding will use.
        backend.normalizer = bert_normalizer(do_lower_case, strip_accents, chinese=True)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    else:
        backend = new_backend(model_type)
    alphabet = _alphabet(backend, alphabet_files)
    if len(alphabet) > limit_alphabet:
        raise BertkitError(
            f"the alphabet files hold {len(alphabet)} characters, more than limit_alphabet "
            f"{limit_alphabet}: raise limit_alphabet"
        )
    lines = _LineBatches(paths, strip_gutenberg)
    backend.train_from_iterator(
        lines, trainer=_trainer(model_type, vocab_size, min_frequency, limit_alphabet, alphabet)
    )
    if model_type == "wordpiece":
        _add_continuations(backend, alphabet)
    _check_trained(backend, vocab_size, lines.seen, paths)
    if model_type == "wordpiece":
        tok = Tokenizer(backend, do_lower_case=do_lower_case, strip_accents=strip_accents)
    else:
        tok = Tokenizer(backend, specials=Specials(**SENTENCE_SPECIALS))
    if output is not None:
        tok.save_pretrained(output)
    return tok


def _trainer(kind: str, vocab_size: int, min_frequency: int, limit_alphabet: int, alphabet: list[str]):
    if kind == "wordpiece":
        return trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
            initial_alphabet=alphabet,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix="##",
            show_progress=False,
        )
    specials = list(SENTENCE_SPECIALS.values())
    if kind == "bpe":  # every byte is in the alphabet: nothing is unknown
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=specials,
            show_progress=False,
        )
    return trainers.UnigramTrainer(
        vocab_size=vocab_size,
        initial_alphabet=alphabet,
        special_tokens=specials,
        unk_token=SENTENCE_SPECIALS["unk"],
        show_progress=False,
    )


def _check_options(
    vocab_size: int, min_frequency: int, limit_alphabet: int, output: str | os.PathLike | None
) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
        raise BertkitError(
            f"vocab_size must be more than the {len(SPECIAL_TOKENS)} special tokens, not {vocab_size}"
        )
    if min_frequency < 0 or limit_alphabet < 1:
        raise BertkitError("min_frequency must be >= 0 and limit_alphabet >= 1")
    if output is not None and Path(output).exists() and not Path(output).is_dir():
        raise BertkitError("output exists and is not a directory", output)


class _LineBatches:
    """The corpus' non-blank lines in batches (batches cut the calls across into Rust), counting
    the lines seen."""

    def __init__(self, paths: list[Path], strip_gutenberg: bool, size: int = 1000):
        self.paths, self.strip_gutenberg, self.size = paths, strip_gutenberg, size
        self.seen = 0

    def __iter__(self) -> Iterator[list[str]]:
        batch: list[str] = []
        for line in iter_text_lines(self.paths, self.strip_gutenberg):
            if line.strip():
                self.seen += 1
                batch.append(line)
            if len(batch) == self.size:
                yield batch
                batch = []
        if batch:
            yield batch


def _check_trained(backend: tokenizers.Tokenizer, vocab_size: int, seen: int, paths: list[Path]) -> None:
    if seen == 0 or backend.get_vocab_size() <= len(SPECIAL_TOKENS):
        names = ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise BertkitError(f"no text to train on in {names}")
    if backend.get_vocab_size() > vocab_size:
        n = backend.get_vocab_size()
        raise BertkitError(
            f"vocab_size {vocab_size} is too small: the characters alone (corpus and alphabet files) "
            f"take {n} tokens (raise vocab_size or lower limit_alphabet)"
        )


def _add_continuations(backend: tokenizers.Tokenizer, alphabet: list[str]) -> None:
    """Give each character of `alphabet` that can continue a word (a digit, a letter; not CJK
    or punctuation, which the pre-tokenizer splits off) its "##" form, appended to the trained
    vocabulary: without it "2018" is [UNK] when the corpus had no digits."""
    assert backend.normalizer is not None and backend.pre_tokenizer is not None
    vocab = backend.get_vocab()

    def continues(ch: str) -> bool:
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str("a" + ch))
        return len(words) == 1

    extra = [f"##{ch}" for ch in alphabet if f"##{ch}" not in vocab and continues(ch)]
    if not extra:
        return
    for piece in extra:
        vocab[piece] = len(vocab)
    backend.model = models.WordPiece(
        vocab,
        unk_token=UNK,
        max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
        continuing_subword_prefix="##",
    )


def _alphabet(backend: tokenizers.Tokenizer, files: PathsArg) -> list[str]:
    """The distinct characters of `files` as the trainer sees them (after `backend`'s
    normalizer), whitespace left out, in order of first appearance."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    files = list(files)
    if not files:
        return []
    normalize = backend.normalizer.normalize_str if backend.normalizer is not None else str
    seen: dict[str, None] = {}
    for line in iter_text_lines(files, strip_gutenberg=False):
        for ch in normalize(line):
            if not ch.isspace():
                seen[ch] = None
    return list(seen)
