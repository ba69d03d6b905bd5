"""The BERT family's tokenizers, run by the Hugging Face `tokenizers` library (Rust).

WordPiece (BERT, DistilBERT, ELECTRA) gets google-research/bert's pipeline (tokenization.py):

    BertNormalizer      drop control characters, map whitespace to " ", put spaces around CJK
                        characters, lower-case and strip accents (uncased models)
    BertPreTokenizer    split on whitespace and punctuation
    WordPiece           greedy longest-match-first subwords, "##" marks a continuation; [UNK] for a
                        word with no match or longer than 100 characters
    TemplateProcessing  [CLS] A [SEP] (token types 0), [CLS] A [SEP] B [SEP] (B's types 1)

Byte-level BPE (RoBERTa) and SentencePiece Unigram (XLM-R, CamemBERT) run as their
tokenizer.json has them, with their own special tokens and templates (see `pipeline`); pre-split
words get a byte-level tokenizer's prefix space, as transformers' `add_prefix_space=True` gives.

`Tokenizer.__call__` takes the arguments of `transformers`' fast tokenizers and returns the same
ids, masks, offsets and overflow windows (the tests check this on real data); `tokenizers` does
the truncation and padding. A saved tokenizer loads in `transformers` unchanged. Learning a new
vocabulary from text is `tokenization.vocab`'s.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import tokenizers
from tokenizers import AddedToken, normalizers

from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path, write_json, write_text
from bertkit.hub import resolve
from bertkit.tokenization.encoding import BatchEncoding, as_tensor, inputs_of, outputs_of
from bertkit.tokenization.files import MAX_INPUT_CHARS_PER_WORD, backend_of, read_json, read_vocab, wordpiece
from bertkit.tokenization.pipeline import (
    KINDS,
    SPECIAL_TOKENS,
    Specials,
    WordRule,
    byte_level,
    component,
    kind_of,
    prefix_space,
    roberta_processing,
    sentence_template,
    set_bert_pipeline,
    tokenizer_class,
    with_prefix_space,
    word_rule,
)

__all__ = ["MAX_INPUT_CHARS_PER_WORD", "SPECIAL_TOKENS", "BatchEncoding", "Tokenizer", "read_vocab"]

DEFAULT_MODEL_MAX_LENGTH = 512  # BERT's position embeddings

_PADDING = {False: None, "do_not_pad": None, True: "longest"} | {s: s for s in ("longest", "max_length")}
_TRUNCATION = {False: None, "do_not_truncate": None, True: "longest_first"}
_TRUNCATION |= {s: s for s in ("longest_first", "only_first", "only_second")}
_DEFAULTS: dict[str, Any] = dict(do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True)
_DEFAULTS["model_max_length"] = DEFAULT_MODEL_MAX_LENGTH
_CONFIG_TYPES: dict[str, type] = dict(do_lower_case=bool, strip_accents=bool, tokenize_chinese_chars=bool)
_CONFIG_TYPES["model_max_length"] = int
# tokenizer.json's BertNormalizer fields, by tokenizer_config.json name
_NORMALIZER_FIELDS = dict(do_lower_case="lowercase", strip_accents="strip_accents")
_NORMALIZER_FIELDS["tokenize_chinese_chars"] = "handle_chinese_chars"


class Tokenizer:
    """A WordPiece, byte-level BPE or Unigram tokenizer: build it with `from_pretrained`,
    `from_vocab` or `train_tokenizer`."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        source: str | os.PathLike | None = None,
        specials: Specials | None = None,
        add_prefix_space: bool | None = None,
        class_name: str | None = None,
    ):
        """Wrap a `tokenizers.Tokenizer`. A WordPiece one gets (in place) BERT's normalizer,
        pre-tokenizer, post-processor and decoder; a BPE or Unigram one keeps its own, and gets
        RoBERTa's template if it has none. `specials`: the special tokens (default: read from the
        template, else the kind's names). `source` names the tokenizer's file in errors.
        `strip_accents=None` follows `do_lower_case`, as in the original BERT. `add_prefix_space`
        (byte-level BPE): a space before every text, as transformers' option of that name."""
        kind = kind_of(backend)
        if kind is None:
            raise BertkitError(
                f"not a {', '.join(KINDS)} tokenizer (model is {type(backend.model).__name__})", source
            )
        post = component(backend.post_processor)
        specials = specials or Specials.read(kind, {}, post)
        vocab = backend.get_vocab(with_added_tokens=True)
        names = specials.by_role()
        if missing := [n for n in names.values() if n not in vocab]:
            raise BertkitError(f"vocabulary lacks the special token(s) {' '.join(missing)}", source)
        self.kind, self.specials, self.class_name = kind, specials, class_name
        self.do_lower_case = bool(do_lower_case) if kind == "wordpiece" else False
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.model_max_length = int(model_max_length)
        if kind == "wordpiece":
            backend.model.unk_token = specials.unk
            chinese = self.tokenize_chinese_chars
            set_bert_pipeline(backend, specials, bert_normalizer(self.do_lower_case, strip_accents, chinese))
        elif backend.post_processor is None:
            make = roberta_processing if byte_level(backend) else sentence_template
            backend.post_processor = make(backend, specials)
        if add_prefix_space is not None and byte_level(backend):
            backend = with_prefix_space(backend, add_prefix_space)
        # As added tokens, "[MASK]" etc. in the text map to their ids instead of "[", "mask", "]", as
        # in transformers; normalized=False matches them before lower-casing.
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in names.values()])
        # A tokenizer.json may carry truncation and padding (MiniLM's pads all to 128): set per call instead.
        backend.no_truncation()
        backend.no_padding()
        self._backend, self._ids = backend, {role: vocab[name] for role, name in names.items()}
        # pre-split words: a byte-level tokenizer puts a space before each, as transformers does
        self._words = with_prefix_space(backend) if byte_level(backend) else backend
        self.word_rule: WordRule = word_rule(backend, kind)
        self._lock = threading.Lock()  # guards that per-call state of the backends

    @classmethod
    def from_vocab(
        cls,
        vocab: str | os.PathLike | Sequence[str],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    ) -> Tokenizer:
        """From a vocab.txt file (line n holds token id n-1) or a list of tokens."""
        if isinstance(vocab, (str, os.PathLike)):
            source, tokens = os.fspath(vocab), read_vocab(vocab)
        else:
            source, tokens = None, list(vocab)
        return cls(
            wordpiece(tokens, source),
            do_lower_case=do_lower_case,
            strip_accents=strip_accents,
            tokenize_chinese_chars=tokenize_chinese_chars,
            model_max_length=model_max_length,
            source=source,
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, do_lower_case: bool | None = None) -> Tokenizer:
        """From a directory with tokenizer.json (preferred) or vocab.txt, and tokenizer_config.json
        and special_tokens_map.json if present. A WordPiece setting comes from, by priority:
        `do_lower_case=`, tokenizer_config.json (which transformers follows too), tokenizer.json's
        BertNormalizer, BERT's defaults (uncased). Special tokens: tokenizer_config.json, then
        special_tokens_map.json, then the file's template, then the kind's names. `directory`
        may be a Hub name (`org/name[@revision]`, see `bertkit.hub`)."""
        d = resolve(directory)
        if not d.is_dir():
            raise BertkitError("tokenizer directory not found" if not d.exists() else "not a directory", d)
        options: dict[str, Any] = dict(_DEFAULTS)
        post = None
        if (source := d / "tokenizer.json").exists():
            spec = read_json(source)
            backend, post = backend_of(spec, source), spec.get("post_processor")
            norm = n if isinstance(n := spec.get("normalizer"), dict) else {}
            if norm.get("type") == "BertNormalizer":
                options.update({k: norm[f] for k, f in _NORMALIZER_FIELDS.items() if f in norm})
        elif (source := d / "vocab.txt").exists():
            backend = wordpiece(read_vocab(source), source)
        else:
            raise BertkitError("no tokenizer.json or vocab.txt in the tokenizer directory", d)
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
            config |= read_json(d / name) if (d / name).exists() else {}
        for key, of_type in _CONFIG_TYPES.items():
            if key not in config or (config[key] is None and key != "strip_accents"):
                continue  # unset; but a null strip_accents means "follow lower-casing"
            value = config[key]
            if value is not None and type(value) is not of_type:
                raise BertkitError(
                    f"{key} must be {of_type.__name__}, not {value!r}", d / "tokenizer_config.json"
                )
            options[key] = value
        if options["model_max_length"] > 10**12:  # transformers' sentinel for "no limit"
            options["model_max_length"] = DEFAULT_MODEL_MAX_LENGTH
        if do_lower_case is not None:
            options["do_lower_case"] = do_lower_case
        kind = kind_of(backend) or ""
        prefix = config.get("add_prefix_space")
        options |= dict(
            specials=Specials.read(kind, config, post),
            add_prefix_space=prefix if isinstance(prefix, bool) else None,
            class_name=c if isinstance(c := config.get("tokenizer_class"), str) else None,
        )
        return cls(backend, source=source, **options)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (and a
        WordPiece tokenizer's vocab.txt), each atomically;
        `transformers.AutoTokenizer.from_pretrained(directory)` loads them."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise BertkitError("output exists and is not a directory", d)
        if self.kind == "wordpiece":
            ids = self._backend.get_vocab(with_added_tokens=False)
            tokens = sorted(ids, key=ids.__getitem__)
            if [ids[t] for t in tokens] != list(range(len(tokens))) or any("\n" in t for t in tokens):
                raise BertkitError(
                    "vocabulary cannot be written as vocab.txt (ids not 0..N-1, or a newline)", d
                )
            write_text(d / "vocab.txt", "".join(t + "\n" for t in tokens))
        with self._lock, atomic_path(d / "tokenizer.json") as tmp:
            self._backend.save(str(tmp))
        special = {f"{role}_token": name for role, name in self.specials.by_role().items()}
        config: dict[str, Any] = {
            "tokenizer_class": self.class_name or tokenizer_class(self.kind, self._backend)
        }
        if self.kind == "wordpiece":
            config |= {"do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents}
            config |= {"tokenize_chinese_chars": self.tokenize_chinese_chars}
        else:  # RoBERTa's and XLM-R's <s> and </s> open and close a text
            special |= {"bos_token": self.specials.cls, "eos_token": self.specials.sep}
            if byte_level(self._backend):
                config["add_prefix_space"] = prefix_space(self._backend)
        config |= {"model_max_length": self.model_max_length, **special}
        write_json(d / "tokenizer_config.json", config)
        write_json(d / "special_tokens_map.json", special)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The wrapped `tokenizers.Tokenizer` (with no truncation or padding set)."""
        return self._backend

    @property
    def corpus_backend(self) -> tokenizers.Tokenizer:
        """The backend that encodes a corpus' lines for pretraining: a byte-level tokenizer puts a
        space before each line, so that a word opening a (hard-wrapped) line gets the "Ġ" form it
        has everywhere else in running text; other kinds encode lines as they do any text."""
        return self._words

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=False)

    @property
    def vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    pad_token_id = property(lambda self: self._ids["pad"])
    unk_token_id = property(lambda self: self._ids["unk"])
    cls_token_id = property(lambda self: self._ids["cls"])
    sep_token_id = property(lambda self: self._ids["sep"])
    mask_token_id = property(lambda self: self._ids["mask"])
    mask_token = property(lambda self: self.specials.mask)

    @property
    def special_ids(self) -> list[int]:
        """The ids of the special tokens ([CLS] [SEP] [PAD] [UNK] [MASK] or their kind's)."""
        return sorted(self._ids.values())

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Id of a token, or of each token; the [UNK] id for tokens not in the vocabulary."""
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [cast(int, self.convert_tokens_to_ids(t)) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        if not isinstance(ids, int):
            return [cast(str, self.convert_ids_to_tokens(int(i))) for i in ids]
        if (token := self._backend.id_to_token(ids)) is None:
            raise ValueError(f"token id {ids} is not in the vocabulary")
        return token

    def tokenize(self, text: str) -> list[str]:
        """The wordpieces of `text`, without [CLS] and [SEP]."""
        return self(text, add_special_tokens=False).encodings[0].tokens

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text from ids: wordpieces joined, "##" continuations glued, spaces before punctuation dropped."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids  # a tensor or an array
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_overflowing_tokens: bool = False,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        truncation_side: str = "right",
    ) -> BatchEncoding:
        """Encode a text (or pair), or a batch of them, as `transformers`' BERT tokenizer does.

        A str gives flat lists, a list of str one list per text. `padding`: True or "longest",
        "max_length" (needs `max_length`), False. `truncation`: True or "longest_first", "only_first",
        "only_second", False; it cuts at `max_length`, else at `model_max_length`; `max_length` alone
        turns it on. With `return_overflowing_tokens` the cut-off rest comes back as more rows, each
        window repeating `stride` tokens of the one before; `overflow_to_sample_mapping` gives each
        row's input. `return_tensors`: "pt" (torch) or "np". With `is_split_into_words`, a text is a
        list of words (a batch, a list of such lists); word_ids() index those words.
        `truncation_side`: "right" cuts the end of a text, "left" its start (transformers keeps it
        as the tokenizer's attribute of that name)."""
        words = is_split_into_words
        inputs, batched = inputs_of(text, text_pair, words)
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        if not isinstance(stride, int) or stride < 0:
            raise ValueError(f"stride must be an int >= 0, not {stride!r}")
        if truncation_side not in ("right", "left"):
            raise ValueError(f"truncation_side must be 'right' or 'left', not {truncation_side!r}")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', not {return_tensors!r}")
        settings = (pad, trunc, max_length, stride, pad_to_multiple_of, truncation_side)
        encodings = self._encode(inputs, words, add_special_tokens, *settings)
        overflow = return_overflowing_tokens
        data, rows = outputs_of(encodings, overflow, return_offsets_mapping, return_special_tokens_mask)
        if return_tensors is not None:
            data = {k: as_tensor(k, v, return_tensors) for k, v in data.items()}
        elif not batched and not overflow:
            data = {k: v[0] for k, v in data.items()}  # one text: flat lists, as in transformers
        return BatchEncoding(data, rows)

    def _encode(
        self,
        inputs: list,
        words: bool,
        add_special_tokens: bool,
        pad: str | None,
        trunc: str | None,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
        side: str = "right",
    ) -> list[tokenizers.Encoding]:
        """`encode_batch` under these truncation and padding settings (the backend is shared: the
        lock keeps another thread's settings out)."""
        backend = self._words if words else self._backend
        with self._lock:
            try:
                if trunc:
                    assert max_length is not None  # _strategies sets it whenever it truncates
                    backend.enable_truncation(max_length, stride=stride, strategy=trunc, direction=side)
                if pad:
                    length = max_length if pad == "max_length" else None
                    backend.enable_padding(
                        pad_id=self.pad_token_id,
                        pad_token=self.specials.pad,
                        length=length,
                        pad_to_multiple_of=pad_to_multiple_of,
                    )
                return backend.encode_batch(
                    inputs, add_special_tokens=add_special_tokens, is_pretokenized=words
                )
            except BaseException as e:
                # Settings that cannot be met come as an Exception (only_second when the first text
                # fills max_length) or a Rust panic, a BaseException (a stride longer than a truncated
                # pair member's share); transformers passes both on as they are.
                if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
                    raise
                raise ValueError(f"cannot encode with these settings: {str(e).strip()}") from None
            finally:
                backend.no_truncation()
                backend.no_padding()

    def _strategies(
        self, padding: Any, truncation: Any, max_length: int | None, pad_to_multiple_of: int | None
    ) -> tuple[str | None, str | None, int | None]:
        """transformers-style padding/truncation arguments as `tokenizers` settings."""
        for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if truncation is None:  # as in transformers: max_length without padding means truncate
            truncation = max_length is not None and padding is False
        if not isinstance(padding, (bool, str)) or padding not in _PADDING:
            raise ValueError(f"padding must be one of {list(_PADDING)}, not {padding!r}")
        if not isinstance(truncation, (bool, str)) or truncation not in _TRUNCATION:
            raise ValueError(f"truncation must be one of {list(_TRUNCATION)}, not {truncation!r}")
        pad, trunc = _PADDING[padding], _TRUNCATION[truncation]
        if pad == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        max_length = self.model_max_length if trunc and max_length is None else max_length
        if trunc and pad and pad_to_multiple_of and max_length and max_length % pad_to_multiple_of:
            raise ValueError(
                f"max_length {max_length} is not a multiple of pad_to_multiple_of {pad_to_multiple_of}"
            )
        return pad, trunc, max_length

    def __getstate__(self) -> dict[str, Any]:  # a lock does not pickle (DataLoader workers under spawn)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind}, vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case})"


def bert_normalizer(lowercase: bool, strip_accents: bool | None, chinese: bool) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lowercase
    )
