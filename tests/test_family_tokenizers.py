"""Byte-level BPE (RoBERTa) and SentencePiece Unigram (XLM-R) tokenizers, trained here, against
transformers' fast tokenizers loading the same files: ids, pair ids, word ids of pre-split words
and offsets, on generated text (accents, CJK, emoji, odd spaces, empty strings)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertkit import Tokenizer
from bertkit.data.mlm import SpecialIds, continuation_table
from bertkit.errors import BertkitError
from bertkit.tokenization.vocab import train_tokenizer

WORDS = (
    "the a of and to in is was for on that with as by at from his her it an were are which be this "
    "café naïve résumé Zürich São Paulo Ελλάδα Москва 東京 北京大学 中文 日本語 😀 🚀 don't U.S. "
    "2024 3.14 e-mail co-operate New York Reuters said Monday percent market shares"
).split()


def _corpus(tmp_path_factory) -> str:
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(3000)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def trained(request, tmp_path_factory, hf):
    """(kind, ours, transformers' for text, transformers' for pre-split words)."""
    out = tmp_path_factory.mktemp(request.param)
    train_tokenizer(_corpus(tmp_path_factory), 400, out, model_type=request.param)
    ours = Tokenizer.from_pretrained(out)
    ref = hf.AutoTokenizer.from_pretrained(str(out))
    words_ref = hf.AutoTokenizer.from_pretrained(str(out), add_prefix_space=True)
    return request.param, ours, ref, words_ref


def test_trained_files_name_their_family_class_and_specials(trained, hf):
    kind, ours, ref, _ = trained
    assert type(ref).__name__ == {"bpe": "RobertaTokenizer", "unigram": "XLMRobertaTokenizer"}[kind]
    assert ours.kind == kind
    assert (ours.cls_token_id, ours.pad_token_id, ours.sep_token_id, ours.unk_token_id) == (0, 1, 2, 3)
    assert ours.mask_token_id == ref.mask_token_id == 4 and ours.mask_token == "<mask>"
    assert ours.pad_token_id == ref.pad_token_id and ours.cls_token_id == ref.cls_token_id


PIECES = list("abcdeéüñ  \t\nXYZ,.'-!?0123東京中文😀🚀") + [" the ", "café", "Москва", "  "]
TEXT = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)


@settings(max_examples=60, deadline=None, database=None)
@given(a=TEXT, b=TEXT)
def test_ids_pairs_and_offsets_equal_transformers(trained, a, b):
    _, ours, ref, _ = trained
    mine = ours(a, return_offsets_mapping=True)
    theirs = ref(a, return_offsets_mapping=True)
    assert mine["input_ids"] == theirs["input_ids"]
    assert mine["attention_mask"] == theirs["attention_mask"]
    assert mine["offset_mapping"] == [tuple(o) for o in theirs["offset_mapping"]]
    if b:
        assert ours(a, b)["input_ids"] == ref(a, b)["input_ids"]


@settings(max_examples=60, deadline=None, database=None)
@given(
    words=st.lists(TEXT.map(str.strip).filter(lambda w: w and not any(c.isspace() for c in w)), max_size=12)
)
def test_pre_split_words_equal_transformers_with_prefix_space(trained, words):
    """NER's input: words already split. A byte-level tokenizer puts a space before each word
    (transformers' add_prefix_space=True); word_ids map every piece to its word."""
    _, ours, _, words_ref = trained
    mine = ours(words, is_split_into_words=True, return_offsets_mapping=True)
    theirs = words_ref(words, is_split_into_words=True, return_offsets_mapping=True)
    assert mine["input_ids"] == theirs["input_ids"]
    assert mine.word_ids() == theirs.word_ids()
    assert mine["offset_mapping"] == [tuple(o) for o in theirs["offset_mapping"]]
    assert {w for w in mine.word_ids() if w is not None} == set(range(len(words)))


def test_batch_padding_uses_the_kinds_pad_token(trained):
    _, ours, ref, _ = trained
    texts = ["the market", "São Paulo shares said Monday", ""]
    mine = ours(texts, padding=True, truncation=True, max_length=8)
    theirs = ref(texts, padding=True, truncation=True, max_length=8)
    assert mine["input_ids"] == theirs["input_ids"] and mine["attention_mask"] == theirs["attention_mask"]
    assert ours.pad_token_id in mine["input_ids"][2]


def test_saved_again_loads_the_same(trained, tmp_path, hf):
    kind, ours, ref, _ = trained
    ours.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    text = "Zürich 東京 😀 don't"
    assert again(text)["input_ids"] == ours(text)["input_ids"] == ref(text)["input_ids"]
    assert not (tmp_path / "vocab.txt").exists()  # WordPiece's file only
    assert hf.AutoTokenizer.from_pretrained(str(tmp_path))(text)["input_ids"] == ours(text)["input_ids"]


def test_whole_word_rule_marks_word_starts(trained):
    """Whole-word masking: BPE and SentencePiece mark a word's first piece ("Ġ", "▁"); the pieces
    after it continue the word; special tokens never do."""
    kind, ours, _, _ = trained
    table = continuation_table(ours)
    enc = ours(["the", "co-operate", "Reuters"], is_split_into_words=True)
    ids, word_ids = enc["input_ids"], enc.word_ids()
    for i in range(1, len(ids) - 1):
        starts = word_ids[i] != word_ids[i - 1]
        assert bool(table[ids[i]]) == (not starts), (ours.convert_ids_to_tokens(ids[i]), kind)
    special = SpecialIds.from_tokenizer(ours)
    assert special.mask == ours.mask_token_id and special.pad == ours.pad_token_id
    assert not table[list(special.special)].any()


def test_missing_special_token_names_the_file(trained, tmp_path):
    _, ours, _, _ = trained
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["mask_token"] = "<nope>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(BertkitError, match="lacks the special token.*<nope>") as e:
        Tokenizer.from_pretrained(tmp_path)
    assert "tokenizer.json" in str(e.value)


def test_unsupported_tokenizer_model_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordLevel"}}))
    with pytest.raises(BertkitError, match="not a WordPiece, BPE, Unigram tokenizer.*WordLevel"):
        Tokenizer.from_pretrained(tmp_path)
