"""On real data: a byte-level BPE and a SentencePiece Unigram tokenizer trained on Gutenberg
books give transformers' ids on every sentence of SST-2 train, and on every sentence of
CoNLL-2003 train as pre-split words (ids and word ids), as NER feeds them."""

from __future__ import annotations

import csv

import pytest

from bertkit import Tokenizer
from bertkit.tokenization.vocab import train_tokenizer


def _sst2(data) -> list[str]:
    with open(data / "en/glue/SST-2/train.tsv", encoding="utf-8") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _conll(data) -> list[list[str]]:
    sentences, words = [], []
    for line in open(data / "en/conll2003/train.txt", encoding="utf-8"):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append(words)
            words = []
        else:
            words.append(parts[0])
    return sentences + ([words] if words else [])


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_every_sst2_and_conll_sentence_equals_transformers(kind, shared_data, hf, tmp_path):
    books = sorted((shared_data / "en/gutenberg/books").glob("*"))[:3]
    train_tokenizer([str(b) for b in books], 8000, tmp_path, model_type=kind)
    ours = Tokenizer.from_pretrained(tmp_path)
    ref = hf.AutoTokenizer.from_pretrained(str(tmp_path))
    words_ref = hf.AutoTokenizer.from_pretrained(str(tmp_path), add_prefix_space=True)
    sst = _sst2(shared_data)
    conll = _conll(shared_data)
    assert len(sst) > 60000 and len(conll) > 14000
    for i in range(0, len(sst), 2000):
        batch = sst[i : i + 2000]
        assert ours(batch)["input_ids"] == ref(batch)["input_ids"], i
    for i in range(0, len(conll), 2000):
        batch = conll[i : i + 2000]
        mine = ours(batch, is_split_into_words=True)
        theirs = words_ref(batch, is_split_into_words=True)
        assert mine["input_ids"] == theirs["input_ids"], i
        assert all(mine.word_ids(j) == theirs.word_ids(j) for j in range(len(batch))), i
    print(f"\n{kind}: {len(sst)} SST-2 sentences and {len(conll)} CoNLL-2003 sentences, ids equal")
