"""Pretraining instances, made on the fly from token shards: packing, next-sentence pairs,
dynamic masking (80/10/10), whole-word masking.

The plan of an epoch is fixed by (seed, epoch) alone: the corpus is cut once into spans of
whole lines of at most `max_seq_length` tokens (`pack_spans`), the spans are shuffled by
(seed, epoch), and everything random about one instance (its next-sentence partner, which
tokens are masked and how) is drawn from a generator seeded by (seed, epoch, span index).
So any batch can be rebuilt from its position alone: resuming at step k is exact and O(1),
each epoch masks afresh, and each rank of a distributed run takes its own slice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from bertkit.data.batching import IGNORE
from bertkit.errors import BertkitError


@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int
    mask: int
    pad: int
    vocab_size: int
    special: tuple[int, ...]  # never masked, never drawn as a random replacement
    is_special: np.ndarray = field(init=False, repr=False, compare=False)  # (V,) bool lookup

    def __post_init__(self) -> None:
        table = np.zeros(self.vocab_size, dtype=bool)
        table[list(self.special)] = True
        object.__setattr__(self, "is_special", table)

    @classmethod
    def from_tokenizer(cls, tok) -> SpecialIds:
        """The tokenizer's own special tokens ([CLS] [SEP] [MASK] [PAD] [UNK], or <s> </s> <mask>
        <pad> <unk>), and every other token it marks special (never masked either)."""
        ids = (tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.pad_token_id)
        return cls(*ids, tok.vocab_size, tuple(i for i in tok.special_ids if i < tok.vocab_size))


def continuation_table(tok) -> np.ndarray:
    """(V,) bool: True for the pieces that continue the word before them, which whole-word
    masking keeps with it, by the tokenizer's word rule: WordPiece "##ing"; byte-level BPE and
    SentencePiece pieces without a leading "Ġ" / "▁". CJK characters are words of their own
    (BERT splits them apart)."""
    table = np.zeros(tok.vocab_size, dtype=bool)
    special = set(tok.special_ids)
    for token, i in tok.vocab.items():
        if i < tok.vocab_size and i not in special and tok.word_rule.continues(token):
            table[i] = True
    return table


class WholeWords:
    """Which tokens continue the word before them, for whole-word masking: WordPiece "##"
    pieces, and, for text written without spaces (Chinese), the characters of the words of a
    supplied word list, found by forward maximum matching (as Chinese BERT-wwm groups
    characters by a word segmentation). Without a list a CJK character is a word of its own."""

    def __init__(self, tok, words: Iterable[str] = ()):
        self.table = continuation_table(tok)
        self.words: set[tuple[int, ...]] = set()
        for w in words:
            ids = tuple(tok.convert_tokens_to_ids(tok.tokenize(w.strip()))) if w.strip() else ()
            if len(ids) > 1:
                self.words.add(ids)
        self.firsts = {w[0] for w in self.words}
        self.longest = max((len(w) for w in self.words), default=1)

    def continuation(self, ids: np.ndarray) -> np.ndarray:
        """(T,) bool for a sequence of ids (T,)."""
        cont = self.table[ids]
        if not self.words:
            return cont
        row, i, n = ids.tolist(), 0, len(ids)
        while i < n:
            step = 1
            if row[i] in self.firsts:
                for size in range(min(self.longest, n - i), 1, -1):
                    if tuple(row[i : i + size]) in self.words:
                        cont[i + 1 : i + size] = True
                        step = size
                        break
            i += step
        return cont


@dataclass
class MaskingConfig:
    probability: float = 0.15  # share of (non-special) tokens predicted
    mask_rate: float = 0.8  # of those: replaced by [MASK] ...
    random_rate: float = 0.1  # ... by a random token; the rest are left unchanged
    whole_word: bool = False
    max_predictions: int | None = None  # cap per sequence (BERT: 20 at length 128); None: no cap

    def validate(self) -> None:
        if not 0 < self.probability < 1:
            raise BertkitError(f"masking probability must be in (0, 1), not {self.probability}")
        if self.mask_rate < 0 or self.random_rate < 0 or self.mask_rate + self.random_rate > 1:
            raise BertkitError("mask_rate and random_rate must be >= 0 and sum to at most 1")


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    cfg: MaskingConfig,
    special: SpecialIds,
    continuation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masked-LM corruption of one sequence `ids` (T,) int64, special tokens included.

    Returns (corrupted ids (T,), labels (T,) holding the original id at predicted positions and
    IGNORE elsewhere). round(p·n) of the n maskable tokens are predicted (at least one), chosen
    as whole words when `continuation` ((T,) bool: the token continues the previous word, see
    `WholeWords`) is given; of those 80 % become [MASK], 10 % a random
    non-special token, 10 % stay as they are.
    """
    maskable = ~special.is_special[ids]  # (T,)
    positions = np.flatnonzero(maskable)
    labels = np.full_like(ids, IGNORE)
    if len(positions) == 0:
        return ids.copy(), labels
    budget = max(1, int(round(len(positions) * cfg.probability)))
    if cfg.max_predictions is not None:
        budget = min(budget, cfg.max_predictions)
    if continuation is None:
        picked = np.sort(rng.choice(positions, budget, replace=False))
    else:
        # a word starts at each maskable token that is not a continuation of a maskable one
        prev = np.concatenate([[False], maskable[:-1]])
        starts = maskable & ~(continuation & prev)  # (T,)
        word_of = np.cumsum(starts)[positions] - 1  # (M,) word index of each maskable position
        sizes = np.bincount(word_of).tolist()
        chosen = np.zeros(len(sizes), dtype=bool)
        count = 0
        for w in rng.permutation(len(sizes)).tolist():
            if count >= budget:
                break
            if count + sizes[w] > budget:  # as BERT: a whole word or nothing
                continue
            chosen[w] = True
            count += sizes[w]
        picked = positions[chosen[word_of]] if count else positions[:1]
    labels[picked] = ids[picked]
    out = ids.copy()
    action = rng.random(len(picked))
    to_mask = picked[action < cfg.mask_rate]
    to_random = picked[(action >= cfg.mask_rate) & (action < cfg.mask_rate + cfg.random_rate)]
    out[to_mask] = special.mask
    if len(to_random):
        out[to_random] = _random_tokens(rng, len(to_random), special)
    return out, labels


def _random_tokens(rng: np.random.Generator, n: int, special: SpecialIds) -> np.ndarray:
    """n ids drawn uniformly from the vocabulary without its special tokens (by redrawing the
    rare special ones: cheaper than building the list of ordinary ids each time)."""
    out = rng.integers(0, special.vocab_size, n)
    while (bad := special.is_special[out]).any():
        out[bad] = rng.integers(0, special.vocab_size, int(bad.sum()))
    return out


# ---- packing ------------------------------------------------------------------------------


@dataclass
class SpanIndex:
    """The corpus cut into spans, as flat arrays (N spans): span i covers tokens
    [start[i], end[i]) of document doc[i], in whole lines where lines fit."""

    doc: np.ndarray  # (N,) int64
    start: np.ndarray  # (N,) int64, token offset inside the document
    end: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.doc)


def pack_spans(line_lengths_per_doc, budget: int) -> SpanIndex:
    """Greedy packing: consecutive lines of a document join a span while they fit in `budget`
    tokens; a line longer than the budget is cut into budget-sized pieces. Spans never cross
    documents. `line_lengths_per_doc` yields one (L,) int array per document."""
    if budget < 1:
        raise BertkitError(f"max_seq_length leaves no room for tokens (budget {budget})")
    docs, starts, ends = [], [], []
    for d, lengths in enumerate(line_lengths_per_doc):
        pos = 0  # token offset of the current line
        span_start = 0
        for n in np.asarray(lengths, dtype=np.int64).tolist():
            if pos + n - span_start > budget and pos > span_start:  # close the span before this line
                docs.append(d)
                starts.append(span_start)
                ends.append(pos)
                span_start = pos
            while pos + n - span_start > budget:  # a line longer than a span: cut it
                docs.append(d)
                starts.append(span_start)
                ends.append(span_start + budget)
                span_start += budget
            pos += n
        if pos > span_start:
            docs.append(d)
            starts.append(span_start)
            ends.append(pos)
    as_array = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return SpanIndex(as_array(docs), as_array(starts), as_array(ends))


# ---- instances and batches ------------------------------------------------------------------


class InMemoryDocs:
    """Documents given as lists of line arrays, with the interface `InstanceMaker` reads
    (`ShardedCorpus` has the same two methods over memory-mapped shards)."""

    def __init__(self, docs: list[list[np.ndarray]]):
        self._docs = []
        for lines in docs:
            offsets = np.zeros(len(lines) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(x) for x in lines])
            tokens = np.concatenate(lines).astype(np.int64) if lines else np.zeros(0, np.int64)
            self._docs.append((tokens, offsets))

    def __len__(self) -> int:
        return len(self._docs)

    def document_tokens(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens of document d, (N,); offsets of its lines into them, (L+1,))."""
        return self._docs[d]

    def document_words(self, d: int) -> None:
        """No word boundaries beyond WordPiece's (see `ShardedCorpus.document_words`)."""
        return None


def line_lengths(docs) -> Iterator[np.ndarray]:
    for d in range(len(docs)):
        yield np.diff(docs.document_tokens(d)[1])


class InstanceMaker:
    """Turns span i of an epoch into a training instance, deterministically.

    `docs` gives `len(docs)` and `document_tokens(d)` (see `InMemoryDocs`). With `nsp`, the
    span (packed for max_seq_length - 3) is cut at a random line boundary into segments A and
    B; half of the time B is replaced by as many tokens from a random line of another document
    (label 1 = random, as BERT and `transformers` count it: 0 means B really follows A).
    """

    def __init__(
        self,
        docs,
        spans: SpanIndex,
        special: SpecialIds,
        masking: MaskingConfig,
        nsp: bool = False,
        whole_words: WholeWords | None = None,
        seed: int = 0,
    ):
        masking.validate()
        self.docs, self.spans, self.special, self.masking = docs, spans, special, masking
        self.nsp, self.whole_words, self.seed = nsp, whole_words, seed
        if nsp and len(docs) < 2:
            raise BertkitError("next-sentence prediction needs at least 2 documents in the corpus")

    def make(self, epoch: int, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, i])
        d, s, e = int(self.spans.doc[i]), int(self.spans.start[i]), int(self.spans.end[i])
        sp = self.special
        if not self.nsp:
            pieces = [(d, s, e)]
            nsp_label = None
        else:
            pieces, nsp_label = self._pair(rng, d, self.docs.document_tokens(d)[1], s, e)
        segments = [self.docs.document_tokens(p)[0][a:b] for p, a, b in pieces]
        ids = np.concatenate([[sp.cls], *(np.append(x, sp.sep) for x in segments)]).astype(np.int64)
        types = np.zeros(len(ids), dtype=np.int64)
        if nsp_label is not None:
            types[len(segments[0]) + 2 :] = 1
        cont = self._continuation(ids, pieces) if self.whole_words is not None else None
        ids, labels = mask_tokens(ids, rng, self.masking, sp, cont)
        out = {"input_ids": ids, "token_type_ids": types, "labels": labels}
        if nsp_label is not None:
            out["next_sentence_label"] = np.asarray(nsp_label, dtype=np.int64)
        return out

    def _continuation(self, ids: np.ndarray, pieces: list[tuple[int, int, int]]) -> np.ndarray:
        """(T,) bool: which tokens of `ids` ([CLS] piece [SEP] ...) continue a word, from the
        vocabulary and word list (`whole_words`) and from the corpus's own word boundaries
        (`document_words`, where a segmenter recorded them)."""
        assert self.whole_words is not None
        cont = self.whole_words.continuation(ids)
        at = 1  # after [CLS]
        for d, a, b in pieces:
            words = self.docs.document_words(d)
            if words is not None:
                cont[at + 1 : at + b - a] |= words[a + 1 : b]  # a piece's first token starts a word
            at += b - a + 1  # the piece and its [SEP]
        return cont

    def _pair(self, rng, d, offsets, s, e) -> tuple[list[tuple[int, int, int]], int]:
        """The two segments, as (document, start, end) token ranges, and the NSP label."""
        inner = offsets[(offsets > s) & (offsets < e)]  # line boundaries inside the span
        if len(inner):
            cut = int(rng.choice(inner))
        else:  # one line (or part of one): cut it in the middle
            cut = s + (e - s) // 2 if e - s > 1 else e
        if e - cut and rng.random() >= 0.5:
            return [(d, s, cut), (d, cut, e)], 0
        other = int(rng.integers(0, len(self.docs) - 1))
        other += other >= d  # any document but this one
        o_tokens, o_offsets = self.docs.document_tokens(other)
        starts = o_offsets[:-1][np.diff(o_offsets) > 0]  # lines with tokens
        start = int(rng.choice(starts)) if len(starts) else 0
        stop = min(start + max(1, e - cut), len(o_tokens))
        return [(d, s, cut), (other, start, stop)], 1


def collate(instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of instances to the longest: input_ids/token_type_ids/attention_mask/labels
    (B, T), next_sentence_label (B,) when present."""
    longest = max(len(x["input_ids"]) for x in instances)
    b = len(instances)
    ids = torch.full((b, longest), pad_id, dtype=torch.long)
    types = torch.zeros((b, longest), dtype=torch.long)
    mask = torch.zeros((b, longest), dtype=torch.long)
    labels = torch.full((b, longest), IGNORE, dtype=torch.long)
    for r, x in enumerate(instances):
        n = len(x["input_ids"])
        ids[r, :n] = torch.from_numpy(x["input_ids"])
        types[r, :n] = torch.from_numpy(x["token_type_ids"])
        mask[r, :n] = 1
        labels[r, :n] = torch.from_numpy(x["labels"])
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}
    if "next_sentence_label" in instances[0]:
        batch["next_sentence_label"] = torch.tensor([int(x["next_sentence_label"]) for x in instances])
    return batch


def epoch_order(num_spans: int, seed: int, epoch: int) -> np.ndarray:
    """The span order of an epoch: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 2**31 - 1]).permutation(num_spans)


def rank_batches(
    maker: InstanceMaker,
    epoch: int,
    batch_size: int,
    pad_id: int,
    rank: int = 0,
    world: int = 1,
    skip: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of one epoch for one rank: the epoch's order is cut into global batches of
    `batch_size × world` spans; rank r takes the r-th slice of each. The final partial global
    batch is dropped so every rank runs the same number of steps. `skip` batches are jumped
    over without being built (resume)."""
    order = epoch_order(len(maker.spans), maker.seed, epoch)
    per_step = batch_size * world
    n = len(order) // per_step
    for k in range(skip, n):
        sel = order[k * per_step + rank * batch_size : k * per_step + (rank + 1) * batch_size]
        yield collate([maker.make(epoch, int(i)) for i in sel], pad_id)


def batches_per_epoch(num_spans: int, batch_size: int, world: int = 1) -> int:
    return num_spans // (batch_size * world)
