"""What kind of tokenizer a `tokenizer.json` holds, its special tokens and its word-boundary rule.

Three kinds, as the BERT family uses them:

    wordpiece   BERT, DistilBERT, ELECTRA: "##" marks a piece that continues a word; bertkit sets
                BERT's normalizer, pre-tokenizer, [CLS] A [SEP] B [SEP] template and decoder
    bpe         RoBERTa: byte-level BPE, "Ġ" marks a piece that starts a word (after a space)
    unigram     XLM-RoBERTa, CamemBERT: SentencePiece, "▁" marks a piece that starts a word

A BPE or Unigram file keeps its own normalizer, pre-tokenizer, template (`<s> A </s></s> B </s>`)
and decoder. The special tokens come from `tokenizer_config.json` / `special_tokens_map.json`
(`cls_token`, `sep_token`, ...), else from the template, else the kind's conventions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

KINDS = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}
ROLES = ("cls", "sep", "pad", "unk", "mask")
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # BERT's order: ids 0..4 of a trained vocabulary
BERT_SPECIALS = {"cls": CLS, "sep": SEP, "pad": PAD, "unk": UNK, "mask": MASK}
# RoBERTa's and XLM-R's names, in the fairseq order a trained vocabulary gives them (ids 0..4)
SENTENCE_SPECIALS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}
BYTE_LEVEL, METASPACE = "Ġ", "▁"


@dataclass(frozen=True)
class Specials:
    """The special tokens by role: [CLS]/<s> opens a sequence, [SEP]/</s> closes it, [PAD]/<pad>
    fills, [UNK]/<unk> stands for what the vocabulary lacks, [MASK]/<mask> is masked-LM's."""

    cls: str
    sep: str
    pad: str
    unk: str
    mask: str

    def by_role(self) -> dict[str, str]:
        return {r: getattr(self, r) for r in ROLES}

    @classmethod
    def read(cls, kind: str, config: dict[str, Any], post: dict[str, Any] | None) -> Specials:
        """From tokenizer_config.json (or special_tokens_map.json) fields, the template's tokens,
        and the kind's conventions, in that order."""
        names = dict(BERT_SPECIALS if kind == "wordpiece" else SENTENCE_SPECIALS)
        names.update(_template_specials(post))
        for role in ROLES:
            value = config.get(f"{role}_token")
            if isinstance(value, dict):  # an AddedToken written out: {"content": "<s>", ...}
                value = value.get("content")
            if isinstance(value, str) and value:
                names[role] = value
        return cls(**names)


@dataclass(frozen=True)
class WordRule:
    """How pieces show word boundaries: WordPiece marks a continuation ("##ing"), byte-level BPE
    and SentencePiece mark a word's start ("Ġthe", "▁the")."""

    continuation: str | None = None
    start: str | None = None

    def continues(self, piece: str) -> bool:
        """Whether `piece` continues the word before it (never true of a special token)."""
        if self.continuation is not None:
            return piece.startswith(self.continuation)
        assert self.start is not None
        return not piece.startswith(self.start)

    def describe(self) -> str:
        if self.continuation is not None:
            return f"WordPiece {self.continuation} pieces"
        return f"pieces without a leading {self.start}"


def kind_of(backend: tokenizers.Tokenizer) -> str | None:
    return KINDS.get(type(backend.model).__name__)


def word_rule(backend: tokenizers.Tokenizer, kind: str) -> WordRule:
    if kind == "wordpiece":
        return WordRule(continuation=getattr(backend.model, "continuing_subword_prefix", "##"))
    return WordRule(start=BYTE_LEVEL if byte_level(backend) else METASPACE)


def component(part: Any) -> dict[str, Any] | None:
    """One pipeline component (pre-tokenizer, post-processor) as tokenizer.json writes it, read
    from that component alone: the whole file's JSON carries the vocabulary (250k pieces for XLM-R)."""
    return None if part is None else json.loads(part.__getstate__())


def byte_level(backend: tokenizers.Tokenizer) -> bool:
    return _has(component(backend.pre_tokenizer), "ByteLevel")


def prefix_space(backend: tokenizers.Tokenizer) -> bool:
    """Whether a byte-level tokenizer puts a space before each text."""
    pre = component(backend.pre_tokenizer)
    return any(n.get("type") == "ByteLevel" and n.get("add_prefix_space") for n in _nodes(pre))


def with_prefix_space(backend: tokenizers.Tokenizer, on: bool = True) -> tokenizers.Tokenizer:
    """A copy of a byte-level tokenizer that adds a space before each text (or each pre-split
    word) and trims it from the offsets, as transformers' `add_prefix_space=True` does."""
    spec = json.loads(backend.to_str())
    for part in (spec.get("pre_tokenizer"), spec.get("post_processor")):
        for node in _nodes(part):
            if node.get("type") in ("ByteLevel", "RobertaProcessing"):
                node["add_prefix_space"] = on
    return tokenizers.Tokenizer.from_str(json.dumps(spec))


def set_bert_pipeline(backend: tokenizers.Tokenizer, specials: Specials, normalizer: Any) -> None:
    """BERT's normalizer, pre-tokenizer, [CLS] A [SEP] (B [SEP]) template and WordPiece decoder,
    set in place on a WordPiece backend."""
    vocab = backend.get_vocab(with_added_tokens=True)
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = specials.cls, specials.sep
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)


def sentence_template(backend: tokenizers.Tokenizer, specials: Specials) -> processors.PostProcessor:
    """RoBERTa's and XLM-R's template, for a BPE or Unigram file that has none: <s> A </s> and
    <s> A </s></s> B </s>, one token type."""
    vocab = backend.get_vocab(with_added_tokens=True)
    cls, sep = specials.cls, specials.sep
    return processors.TemplateProcessing(
        single=[cls, "$A", sep],
        pair=[cls, "$A", sep, sep, "$B", sep],
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )


def new_backend(kind: str) -> tokenizers.Tokenizer:
    """An untrained backend of a kind with the pipeline transformers' classes build for it:
    RoBERTa's byte-level BPE, or XLM-R's SentencePiece Unigram (whitespace split, "▁" always
    prepended)."""
    if kind == "bpe":
        backend = tokenizers.Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix=""))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        return backend
    backend = tokenizers.Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always"),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    return backend


def roberta_processing(backend: tokenizers.Tokenizer, specials: Specials) -> processors.PostProcessor:
    vocab = backend.get_vocab(with_added_tokens=True)
    sep, cls = (specials.sep, vocab[specials.sep]), (specials.cls, vocab[specials.cls])
    return processors.RobertaProcessing(sep, cls, trim_offsets=True, add_prefix_space=False)


def tokenizer_class(kind: str, backend: tokenizers.Tokenizer) -> str:
    """The transformers class a saved tokenizer_config.json names for this kind."""
    if kind == "wordpiece":
        return "BertTokenizer"
    if kind == "bpe" and byte_level(backend):
        return "RobertaTokenizer"
    return "XLMRobertaTokenizer" if kind == "unigram" else "PreTrainedTokenizerFast"


def _template_specials(post: dict[str, Any] | None) -> dict[str, str]:
    """cls/sep from the file's post-processor: RobertaProcessing names them, a template's
    single form is [first special] $A [last special]."""
    found: dict[str, str] = {}
    for node in _nodes(post):
        if node.get("type") in ("RobertaProcessing", "BertProcessing"):
            found |= {"cls": node["cls"][0], "sep": node["sep"][0]}
        elif node.get("type") == "TemplateProcessing":
            single = [next(iter(p.values())).get("id") for p in node.get("single", [])]
            if len(single) >= 3 and single[0] != "A" and single[-1] != "A":
                found |= {"cls": single[0], "sep": single[-1]}
    return found


def _nodes(part: Any) -> list[dict[str, Any]]:
    """A component and, for a Sequence, the components inside it."""
    if not isinstance(part, dict):
        return []
    inner = part.get("pretokenizers") or part.get("processors") or []
    return [part, *[n for p in inner for n in _nodes(p)]]


def _has(part: Any, kind: str) -> bool:
    return any(n.get("type") == kind for n in _nodes(part))
