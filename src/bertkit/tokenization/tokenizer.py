"""BERT's WordPiece tokenizer, run by the Hugging Face `tokenizers` library (Rust).

The pipeline is google-research/bert's tokenization.py:

    BertNormalizer      drop control characters, map whitespace to " ", put spaces around CJK
                        characters, lower-case and strip accents (uncased models)
    BertPreTokenizer    split on whitespace and punctuation
    WordPiece           greedy longest-match-first subwords, "##" marks a continuation; [UNK] for a
                        word with no match or longer than 100 characters
    TemplateProcessing  [CLS] A [SEP] (token types 0), [CLS] A [SEP] B [SEP] (B's types 1)

`Tokenizer.__call__` takes the arguments of `transformers`' BERT tokenizer and returns the same ids,
masks, offsets and overflow windows (the tests check this on real data); `tokenizers` does the
truncation and padding. A saved tokenizer loads in `transformers` unchanged. Learning a new
vocabulary from text is `tokenization.vocab`'s.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors

from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path, write_json, write_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # BERT's order: ids 0..4 of a trained vocabulary
DEFAULT_MODEL_MAX_LENGTH = 512  # BERT's position embeddings
MAX_INPUT_CHARS_PER_WORD = 100

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


class Tokenizer:
    """A BERT WordPiece tokenizer: build it with `from_pretrained`, `from_vocab` or `train_tokenizer`."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        source: str | os.PathLike | None = None,
    ):
        """Wrap a `tokenizers.Tokenizer` with a WordPiece model, setting (in place) its normalizer,
        pre-tokenizer, post-processor and decoder to BERT's. `source` names the vocabulary's file
        in errors. `strip_accents=None` follows `do_lower_case`, as in the original BERT."""
        if not isinstance(backend.model, models.WordPiece):
            raise BertkitError(f"not a WordPiece tokenizer (model is {type(backend.model).__name__})", source)
        vocab = backend.get_vocab(with_added_tokens=True)
        if missing := [t for t in SPECIAL_TOKENS if t not in vocab]:
            raise BertkitError(f"vocabulary lacks the special token(s) {' '.join(missing)}", source)
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.model_max_length = int(model_max_length)
        backend.model.unk_token = UNK
        backend.normalizer = bert_normalizer(self.do_lower_case, strip_accents, self.tokenize_chinese_chars)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0",
            pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
        )
        backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        # As added tokens, "[MASK]" etc. in the text map to their ids instead of "[", "mask", "]", as
        # in transformers; normalized=False matches them before lower-casing.
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        # A tokenizer.json may carry truncation and padding (MiniLM's pads all to 128): set per call instead.
        backend.no_truncation()
        backend.no_padding()
        self._backend, self._ids = backend, {t: vocab[t] for t in SPECIAL_TOKENS}
        self._lock = threading.Lock()  # guards that per-call state of the backend

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
            _wordpiece(tokens, source),
            do_lower_case=do_lower_case,
            strip_accents=strip_accents,
            tokenize_chinese_chars=tokenize_chinese_chars,
            model_max_length=model_max_length,
            source=source,
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, do_lower_case: bool | None = None) -> Tokenizer:
        """From a directory with tokenizer.json (preferred) or vocab.txt, and tokenizer_config.json
        if present. Each setting comes from, by priority: `do_lower_case=`, tokenizer_config.json
        (which transformers follows too), tokenizer.json's BertNormalizer, BERT's defaults (uncased)."""
        d = Path(directory)
        if not d.is_dir():
            raise BertkitError("tokenizer directory not found" if not d.exists() else "not a directory", d)
        options: dict[str, Any] = dict(_DEFAULTS)
        if (source := d / "tokenizer.json").exists():
            spec = _read_json(source)
            model = m if isinstance(m := spec.get("model"), dict) else {}
            if model.get("type") != "WordPiece":
                raise BertkitError(f"not a WordPiece tokenizer (model type {model.get('type')!r})", source)
            ids = model.get("vocab")
            if not isinstance(ids, dict) or sorted(ids.values()) != list(range(len(ids))):
                raise BertkitError("model.vocab is missing or its ids are not 0..N-1, each once", source)
            norm = n if isinstance(n := spec.get("normalizer"), dict) else {}
            if norm.get("type") == "BertNormalizer":
                options.update({k: norm[f] for k, f in _NORMALIZER_FIELDS.items() if f in norm})
            try:
                backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
            except Exception as e:  # tokenizers raises a bare Exception on bad content
                raise BertkitError(f"invalid tokenizer file: {e}", source) from None
        elif (source := d / "vocab.txt").exists():
            backend = _wordpiece(read_vocab(source), source)
        else:
            raise BertkitError("no tokenizer.json or vocab.txt in the tokenizer directory", d)
        if (config_path := d / "tokenizer_config.json").exists():
            config = _read_json(config_path)
            for key, kind in _CONFIG_TYPES.items():
                if key not in config or (config[key] is None and key != "strip_accents"):
                    continue  # unset; but a null strip_accents means "follow lower-casing"
                value = config[key]
                if value is not None and type(value) is not kind:
                    raise BertkitError(f"{key} must be {kind.__name__}, not {value!r}", config_path)
                options[key] = value
        if options["model_max_length"] > 10**12:  # transformers' sentinel for "no limit"
            options["model_max_length"] = DEFAULT_MODEL_MAX_LENGTH
        if do_lower_case is not None:
            options["do_lower_case"] = do_lower_case
        return cls(backend, source=source, **options)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json, each
        atomically; `transformers.AutoTokenizer.from_pretrained(directory)` loads them."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise BertkitError("output exists and is not a directory", d)
        ids = self._backend.get_vocab(with_added_tokens=False)
        tokens = sorted(ids, key=ids.__getitem__)
        if [ids[t] for t in tokens] != list(range(len(tokens))) or any("\n" in t for t in tokens):
            raise BertkitError("vocabulary cannot be written as vocab.txt (ids not 0..N-1, or a newline)", d)
        write_text(d / "vocab.txt", "".join(t + "\n" for t in tokens))
        with self._lock, atomic_path(d / "tokenizer.json") as tmp:
            self._backend.save(str(tmp))
        special = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case}
        config |= {"strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars}
        config |= {"model_max_length": self.model_max_length, **special}
        write_json(d / "tokenizer_config.json", config)
        write_json(d / "special_tokens_map.json", special)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The wrapped `tokenizers.Tokenizer` (with no truncation or padding set)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=False)

    @property
    def vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    pad_token_id = property(lambda self: self._ids[PAD])
    unk_token_id = property(lambda self: self._ids[UNK])
    cls_token_id = property(lambda self: self._ids[CLS])
    sep_token_id = property(lambda self: self._ids[SEP])
    mask_token_id = property(lambda self: self._ids[MASK])

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
    ) -> BatchEncoding:
        """Encode a text (or pair), or a batch of them, as `transformers`' BERT tokenizer does.

        A str gives flat lists, a list of str one list per text. `padding`: True or "longest",
        "max_length" (needs `max_length`), False. `truncation`: True or "longest_first", "only_first",
        "only_second", False; it cuts at `max_length`, else at `model_max_length`; `max_length` alone
        turns it on. With `return_overflowing_tokens` the cut-off rest comes back as more rows, each
        window repeating `stride` tokens of the one before; `overflow_to_sample_mapping` gives each
        row's input. `return_tensors`: "pt" (torch) or "np". With `is_split_into_words`, a text is a
        list of words (a batch, a list of such lists); word_ids() index those words."""
        words = is_split_into_words
        inputs, batched = _inputs(text, text_pair, words)
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        if not isinstance(stride, int) or stride < 0:
            raise ValueError(f"stride must be an int >= 0, not {stride!r}")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', not {return_tensors!r}")
        settings = (pad, trunc, max_length, stride, pad_to_multiple_of)
        encodings = self._encode(inputs, words, add_special_tokens, *settings)
        overflow = return_overflowing_tokens
        data, rows = _outputs(encodings, overflow, return_offsets_mapping, return_special_tokens_mask)
        if return_tensors is not None:
            data = {k: _as_tensor(k, v, return_tensors) for k, v in data.items()}
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
    ) -> list[tokenizers.Encoding]:
        """`encode_batch` under these truncation and padding settings (the backend is shared: the
        lock keeps another thread's settings out)."""
        with self._lock:
            try:
                if trunc:
                    assert max_length is not None  # _strategies sets it whenever it truncates
                    self._backend.enable_truncation(max_length, stride=stride, strategy=trunc)
                if pad:
                    length = max_length if pad == "max_length" else None
                    self._backend.enable_padding(
                        pad_id=self.pad_token_id,
                        pad_token=PAD,
                        length=length,
                        pad_to_multiple_of=pad_to_multiple_of,
                    )
                return self._backend.encode_batch(
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
                self._backend.no_truncation()
                self._backend.no_padding()

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
        return f"Tokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case})"


def bert_normalizer(lowercase: bool, strip_accents: bool | None, chinese: bool) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lowercase
    )


def _inputs(text: Any, text_pair: Any, words: bool) -> tuple[list, bool]:
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


def _outputs(
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


def _as_tensor(key: str, rows: list, kind: str) -> Any:
    if rows and isinstance(rows[0], list) and len({len(r) for r in rows}) > 1:
        raise ValueError(f"cannot make a tensor of {key} rows of different lengths; pass padding=True")
    if kind == "pt":
        import torch  # lazy: tokenizing alone should not pay for importing torch

        return torch.tensor(rows, dtype=torch.long)
    import numpy as np

    return np.array(rows, dtype=np.int64)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise BertkitError(f"cannot read: {getattr(e, 'strerror', None) or e}", path) from None
    except json.JSONDecodeError as e:
        raise BertkitError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path) from None
    if not isinstance(value, dict):
        raise BertkitError(f"expected a JSON object, found {type(value).__name__}", path)
    return value


def _wordpiece(tokens: Sequence[Any], source: str | os.PathLike | None) -> tokenizers.Tokenizer:
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
