"""Property-based fuzzing of the tokenizer wrapper against transformers' BertTokenizerFast on the
same files: any text (accents, CJK, emoji, control and zero-width characters, odd whitespace)
gives the same ids, offsets inside the text, and no exception; bad argument types are clear
errors, never crashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertkit.errors import BertkitError
from bertkit.tokenization.tokenizer import Tokenizer

# Characters that stress BERT's basic tokenizer: accents and combining marks (stripped when
# lower-casing), CJK (split per character), control/format characters (dropped), punctuation,
# odd whitespace, emoji and other astral-plane characters.
SPECIAL = "aeiouAÉÎõüßçñ中文字符日本語한국어 \t\n\r\u00a0\u200b\u200d\u0301\u0000\ufeff.,!?'\"-😀👍🏽𝔘🇫🇷"
ALPHABET = st.one_of(
    st.characters(codec="utf-8", exclude_categories=("Cs",)),
    st.sampled_from(sorted(set(SPECIAL))),  # emoji with modifiers and flags arrive as code points
)
TEXT = st.text(alphabet=ALPHABET, max_size=80)


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, database=None)


@pytest.fixture(scope="module")
def pair(minilm_dir, hf):
    return Tokenizer.from_pretrained(minilm_dir), hf.BertTokenizerFast.from_pretrained(str(minilm_dir))


@fuzz(300)
@given(text=TEXT)
def test_same_ids_and_offsets_as_transformers(pair, text):
    ours, ref = pair
    a = ours(text, return_offsets_mapping=True)
    b = ref(text, return_offsets_mapping=True)
    assert a["input_ids"] == b["input_ids"]
    assert a["offset_mapping"] == [tuple(o) for o in b["offset_mapping"]]
    for start, end in a["offset_mapping"]:
        assert 0 <= start <= end <= len(text)
    ours.decode(a["input_ids"])  # never raises


@fuzz(150)
@given(first=TEXT, second=TEXT, max_length=st.integers(4, 40))
def test_pairs_truncated_like_transformers(pair, first, second, max_length):
    ours, ref = pair
    a = ours(first, second, truncation=True, max_length=max_length)
    b = ref(first, second, truncation=True, max_length=max_length)
    assert a["input_ids"] == b["input_ids"]
    assert a["token_type_ids"] == b["token_type_ids"]
    assert len(a["input_ids"]) <= max_length


@fuzz(100)
@given(words=st.lists(TEXT.filter(lambda w: w.strip() != ""), min_size=1, max_size=8))
def test_pre_split_words_like_transformers(pair, words):
    ours, ref = pair
    a = ours(words, is_split_into_words=True)
    b = ref(words, is_split_into_words=True)
    assert a["input_ids"] == b["input_ids"]
    assert a.word_ids() == b.word_ids()


@pytest.mark.parametrize("bad", [None, 3, 2.5, b"bytes", ["ok", None], [["nested"]], {"text": "x"}])
def test_wrong_input_types_are_clear_errors(pair, bad):
    ours, _ = pair
    with pytest.raises((BertkitError, TypeError, ValueError)) as e:
        ours(bad)
    assert "Traceback" not in str(e.value) and str(e.value)
