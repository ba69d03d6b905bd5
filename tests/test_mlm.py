"""Pretraining instances: packing, BERT's 80/10/10 masking, whole words, next-sentence pairs,
determinism by position, and the sparse masked-LM loss against the dense one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertkit.data.batching import IGNORE
from bertkit.data.mlm import (
    InMemoryDocs,
    InstanceMaker,
    MaskingConfig,
    SpecialIds,
    WholeWords,
    collate,
    continuation_table,
    epoch_order,
    line_lengths,
    mask_tokens,
    pack_spans,
)
from bertkit.errors import BertkitError
from bertkit.tokenization.tokenizer import Tokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "run", "##ning", "##s", "play", "##ed", "dog", "a", "big"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_vocab(VOCAB)


@pytest.fixture(scope="module")
def special(tok):
    return SpecialIds.from_tokenizer(tok)


def test_masking_rates_and_special_tokens(special):
    rng = np.random.default_rng(0)
    body = rng.integers(5, len(VOCAB), size=200)
    ids = np.concatenate([[special.cls], body[:100], [special.sep], body[100:], [special.sep], [0] * 20])
    cfg = MaskingConfig()
    predicted = masked = randomised = kept = 0
    for _ in range(400):
        out, labels = mask_tokens(ids, rng, cfg, special)
        where = labels != IGNORE
        assert where.sum() == round(200 * 0.15)  # exactly round(p·n) of the maskable tokens
        assert not np.isin(ids[where], special.special).any()  # never [CLS]/[SEP]/[PAD]
        assert (labels[where] == ids[where]).all()
        assert (out[~where] == ids[~where]).all()  # nothing else changes
        predicted += where.sum()
        masked += (out[where] == special.mask).sum()
        same = out[where] == ids[where]
        kept += same.sum()
        randomised += ((out[where] != special.mask) & ~same).sum()
        assert not np.isin(out[where & (out != special.mask)], special.special).any()
    # 80/10/10 (a random token can hit the original id: 1 in 13 here, counted as kept)
    assert abs(masked / predicted - 0.8) < 0.01
    assert abs((randomised + kept) / predicted - 0.2) < 0.01
    assert abs(kept / predicted - (0.1 + 0.1 / 13)) < 0.01


def test_whole_word_masking_keeps_pieces_together(tok, special):
    cont = continuation_table(tok)
    assert [VOCAB[i] for i in np.flatnonzero(cont)] == ["##ning", "##s", "##ed"]
    words = ["the", "cat", "run ##ning", "play ##ed", "dog ##s", "a", "big", "mat", "run ##ning ##s"] * 4
    pieces = [p for w in words for p in w.split()]
    ids = np.array([special.cls, *tok.convert_tokens_to_ids(pieces), special.sep])
    starts = np.array([True] + [not p.startswith("##") for p in pieces] + [True])
    rng = np.random.default_rng(1)
    for _ in range(200):
        _, labels = mask_tokens(ids, rng, MaskingConfig(whole_word=True), special, cont[ids])
        where = labels != IGNORE
        # a predicted word is predicted whole: the label mask is constant within each word
        word_of = np.cumsum(starts)
        for w in np.unique(word_of[where]):
            assert where[word_of == w].all()
        assert 1 <= where.sum() <= round(len(pieces) * 0.15)


def test_word_list_groups_unspaced_characters():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北", "京", "大", "学", "生", "在", "##s", "run"]
    tok = Tokenizer.from_vocab(vocab)
    ww = WholeWords(tok, ["北京", "北京大学", "大学生", "run"])
    ids = np.array(
        tok.convert_tokens_to_ids(
            ["[CLS]", "北", "京", "大", "学", "生", "在", "北", "京", "run", "##s", "[SEP]"]
        )
    )
    # forward maximum matching: 北京大学 | 生 | 在 | 北京 | run ##s
    expect = [0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1, 0]
    assert ww.continuation(ids).astype(int).tolist() == expect
    assert WholeWords(tok).continuation(ids).astype(int).tolist() == [0] * 10 + [1, 0]


def test_pack_spans_cover_every_token_once_in_line_order():
    rng = np.random.default_rng(2)
    docs = [rng.integers(1, 30, size=rng.integers(1, 12)) for _ in range(40)] + [np.array([75, 3, 200])]
    spans = pack_spans(docs, budget=62)
    for d, lengths in enumerate(docs):
        mine = spans.doc == d
        s, e = spans.start[mine], spans.end[mine]
        assert s[0] == 0 and e[-1] == lengths.sum() and (s[1:] == e[:-1]).all()  # contiguous cover
        assert ((e - s) <= 62).all() and ((e - s) > 0).all()
        bounds = set(np.cumsum(lengths).tolist()) | {0}
        # a span ends at a line boundary unless a line is longer than the budget
        for a, b in zip(s, e, strict=True):
            crosses = [x for x in range(a + 1, b) if x in bounds]
            if b not in bounds:
                assert any(n > 62 for n in lengths)
            assert b - a <= 62 or crosses
        # greedy: the next line would not have fitted
        for a, b in zip(s[:-1], e[:-1], strict=True):
            nxt = min(x for x in bounds if x > b) if b in bounds else b
            assert nxt - a > 62 or b not in bounds
    with pytest.raises(BertkitError):
        pack_spans(docs, budget=0)


def _docs(rng, n_docs=6):
    return [
        [rng.integers(5, len(VOCAB), size=rng.integers(3, 15)) for _ in range(rng.integers(2, 9))]
        for _ in range(n_docs)
    ]


def test_instances_are_fixed_by_position_and_remasked_each_epoch(special):
    rng = np.random.default_rng(3)
    docs = InMemoryDocs(_docs(rng))
    spans = pack_spans(line_lengths(docs), budget=30)
    maker = InstanceMaker(docs, spans, special, MaskingConfig(), seed=7)
    again = InstanceMaker(docs, spans, special, MaskingConfig(), seed=7)
    for i in range(len(spans)):
        a, b = maker.make(0, i), again.make(0, i)
        assert all((a[k] == b[k]).all() for k in a)
        tokens, _ = docs.document_tokens(int(spans.doc[i]))
        original = np.where(a["labels"] != IGNORE, a["labels"], a["input_ids"])
        assert (original[1:-1] == tokens[spans.start[i] : spans.end[i]]).all()
        assert a["input_ids"][0] == special.cls and a["input_ids"][-1] == special.sep
    differs = sum((maker.make(0, i)["labels"] != maker.make(1, i)["labels"]).any() for i in range(len(spans)))
    assert differs >= len(spans) // 2  # fresh masks each epoch
    assert (epoch_order(50, 7, 0) != epoch_order(50, 7, 1)).any()
    assert sorted(epoch_order(50, 7, 0)) == list(range(50))


def test_next_sentence_pairs(special):
    rng = np.random.default_rng(4)
    raw = _docs(rng, 8)
    docs = InMemoryDocs(raw)
    spans = pack_spans(line_lengths(docs), budget=40)
    maker = InstanceMaker(docs, spans, special, MaskingConfig(), nsp=True, seed=1)
    labels = []
    for epoch in range(20):
        for i in range(len(spans)):
            x = maker.make(epoch, i)
            ids = np.where(x["labels"] != IGNORE, x["labels"], x["input_ids"])
            seps = np.flatnonzero(ids == special.sep)
            assert len(seps) == 2 and seps[1] == len(ids) - 1 and len(ids) <= 43
            a, b = ids[1 : seps[0]], ids[seps[0] + 1 : -1]
            assert (x["token_type_ids"] == (np.arange(len(ids)) > seps[0])).all()
            tokens, _ = docs.document_tokens(int(spans.doc[i]))
            span = tokens[spans.start[i] : spans.end[i]]
            label = int(x["next_sentence_label"])
            assert (a == span[: len(a)]).all() and len(a) >= 1 and len(b) >= 1
            if label == 0:
                assert (b == span[len(a) : len(a) + len(b)]).all()
            labels.append(label)
    assert abs(np.mean(labels) - 0.5) < 0.1
    with pytest.raises(BertkitError, match="at least 2 documents"):
        InstanceMaker(InMemoryDocs(raw[:1]), spans, special, MaskingConfig(), nsp=True)


def test_vocabulary_without_mask_is_a_clear_error():
    with pytest.raises(BertkitError, match=r"lacks the special token\(s\) \[MASK\]"):
        Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "cat"])


def test_sparse_mlm_loss_equals_dense_loss(special):
    from bertkit import BertConfig
    from bertkit.models.heads import BertForPreTraining
    from bertkit.training.masked_lm import mlm_loss

    rng = np.random.default_rng(5)
    docs = InMemoryDocs(_docs(rng))
    spans = pack_spans(line_lengths(docs), budget=30)
    maker = InstanceMaker(docs, spans, special, MaskingConfig(), nsp=True, seed=2)
    batch = collate([maker.make(0, i) for i in range(len(spans))], special.pad)
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=len(VOCAB))).eval()
    n = int((batch["labels"] != IGNORE).sum())
    loss = mlm_loss(model, {**batch, "mlm_norm": float(n)})
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    dense = torch.nn.functional.cross_entropy(
        out.prediction_logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE
    ) + torch.nn.functional.cross_entropy(out.seq_relationship_logits, batch["next_sentence_label"])
    torch.testing.assert_close(loss, dense, rtol=1e-5, atol=1e-6)
