"""Chinese whole-word masking from a word segmentation: `bertkit shards --segmenter` records word
boundaries beside the character tokens, and pretraining masks whole words from them.

The reference is the segmentation itself: each test line is written out as its words, and a
token belongs to the word whose characters it covers, counted here by walking the characters."""

from __future__ import annotations

import string
import sys

import numpy as np
import pytest

from bertkit.cli import main
from bertkit.data.corpus import ShardedCorpus
from bertkit.data.mlm import (
    IGNORE,
    InstanceMaker,
    MaskingConfig,
    SpecialIds,
    WholeWords,
    line_lengths,
    pack_spans,
)
from bertkit.data.shards import build_shards
from bertkit.errors import BertkitError
from bertkit.tokenization.segment import continuation, load_segmenter, word_starts
from bertkit.tokenization.tokenizer import SPECIAL_TOKENS, Tokenizer

# Hand-segmented lines (words separated by spaces), Chinese with a Latin word and digits.
SEGMENTED = [
    "我们 在 北京大学 学习 自然语言 处理 。",
    "他 说 ， 今天 的 天气 非常 好 ， 适合 去 公园 散步 。",
    "研究生 命 起源 是 一个 古老 的 问题 。",
    "bert 模型 在 中文 任务 上 表现 出色 ， 准确率 达到 95 % 。",
    "孙子 兵法 说 ： 知己知彼 ， 百战不殆 。",
    "人工智能 正在 改变 我们 的 生活 方式 和 工作 方式 。",
]


def raw(line: str) -> str:
    """A segmented line as it was written: no spaces between Chinese words."""
    out, alnum = "", string.ascii_letters + string.digits
    for w in line.split():
        if out and out[-1] in alnum and w[0] in alnum:
            out += " "
        out += w
    return out


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    chars = sorted({c for line in SEGMENTED for c in line if not c.isspace() and not c.isascii()})
    ascii_ = [c for c in string.printable if not c.isspace()]
    vocab = [*SPECIAL_TOKENS, *chars, *ascii_, *("##" + c for c in ascii_)]
    d = tmp_path_factory.mktemp("zh-tok")
    Tokenizer.from_vocab(list(dict.fromkeys(vocab))).save_pretrained(d)
    return d


def corpus(directory, lines, copies=20):
    """The lines repeated (so there are spans enough to mask), one document per 6 lines."""
    directory.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join("\n".join(lines) for _ in range(copies)) + "\n"
    path = directory / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def reference_words(tok: Tokenizer, segmented: str) -> list[int]:
    """Word index of each token of the raw line, from the segmentation by character position."""
    line = raw(segmented)
    word_of_char, w, pos = {}, 0, 0
    for word in segmented.split():
        at = line.index(word, pos)
        for c in range(at, at + len(word)):
            word_of_char[c] = w
        pos, w = at + len(word), w + 1
    enc = tok.backend.encode(line, add_special_tokens=False)
    return [word_of_char[a] for a, _ in enc.offsets]


def build(tmp_path, monkeypatch, tok_dir, lines, name, segmenter):
    """Shards of `lines` under tmp_path/name, the corpus given by the same relative path every
    time (the held-out split hashes the path as given, so every build splits alike)."""
    corpus(tmp_path / name, lines)
    monkeypatch.chdir(tmp_path / name)
    build_shards(
        "corpus.txt", tok_dir, "shards", workers=1, progress=False, doc_mode="blank-line", segmenter=segmenter
    )
    return ShardedCorpus(tmp_path / name / "shards")


def test_segmenting_changes_no_token(tmp_path, monkeypatch, tok_dir):
    """A segmentation file (spaces between words) gives the raw corpus's tokens, and flags."""
    plain = build(tmp_path, monkeypatch, tok_dir, [raw(x) for x in SEGMENTED], "plain", None)
    seg = build(tmp_path, monkeypatch, tok_dir, SEGMENTED, "seg", "spaces")
    assert plain.segmenter is None and plain.document_words(0) is None
    assert seg.segmenter == "spaces" and (tmp_path / "seg/shards/train-00000.words.bin").is_file()
    seg.verify()
    tok = Tokenizer.from_pretrained(tok_dir)
    expected = {}  # a line's token ids -> its flags: True where the token's word began before it
    for s in SEGMENTED:
        ids = tuple(tok.backend.encode(raw(s), add_special_tokens=False).ids)
        expected[ids] = (np.diff([-1, *reference_words(tok, s)]) == 0).tolist()
    lines = 0
    for split in ("train", "heldout"):
        a, b = ShardedCorpus(plain.directory, split), ShardedCorpus(seg.directory, split)
        assert len(a) == len(b) > 0
        for d in range(len(a)):
            tokens, offsets = b.document_tokens(d)
            assert np.array_equal(a.document_tokens(d)[0], tokens)
            flags = b.document_words(d)
            assert flags is not None and flags.dtype == bool and len(flags) == len(tokens)
            for x, y in zip(offsets[:-1], offsets[1:], strict=True):
                assert flags[x:y].tolist() == expected[tuple(tokens[x:y].tolist())]
                lines += 1
    assert lines == 20 * len(SEGMENTED)


@pytest.mark.parametrize("nsp", [False, True])
def test_every_masked_word_is_masked_whole(tmp_path, monkeypatch, tok_dir, nsp):
    docs = build(tmp_path, monkeypatch, tok_dir, SEGMENTED, "seg", "spaces")
    tok = Tokenizer.from_pretrained(tok_dir)
    special = SpecialIds.from_tokenizer(tok)
    line_words = {tuple(tok.backend.encode(raw(s), add_special_tokens=False).ids): s for s in SEGMENTED}
    budget = 40 if nsp else 30  # short spans: a line or two each
    spans = pack_spans(line_lengths(docs), budget)
    counts = {"whole": 0, "cut": 0}

    def check(ids: np.ndarray, labels: np.ndarray, mask_words: bool) -> None:
        # find each whole corpus line inside the sequence and check its words
        row = ids.tolist()
        picked = labels != IGNORE
        original = np.where(picked, labels, ids).tolist()
        for line_ids, segmented in line_words.items():
            n = len(line_ids)
            for at in range(len(row) - n + 1):
                if tuple(original[at : at + n]) != line_ids:
                    continue
                words = np.asarray(reference_words(tok, segmented))
                for w in range(words.max() + 1):
                    got = picked[at : at + n][words == w]
                    if len(got) > 1 and got.any():
                        counts["whole" if got.all() else "cut"] += 1
        if mask_words:
            assert counts["cut"] == 0

    for whole in (True, False):
        counts = {"whole": 0, "cut": 0}
        masking = MaskingConfig(probability=0.3, whole_word=whole)
        words = WholeWords(tok) if whole else None
        maker = InstanceMaker(docs, spans, special, masking, nsp=nsp, whole_words=words, seed=3)
        for epoch in range(3):
            for i in range(len(spans)):
                x = maker.make(epoch, i)
                check(x["input_ids"], x["labels"], whole)
        if whole:  # many multi-character words were masked, every one of them whole
            assert counts["whole"] > 50 and counts["cut"] == 0
        else:  # the same check fails without the segmentation: characters are masked alone
            assert counts["cut"] > 50


def test_the_segmenters_agree_on_real_words(tmp_path, monkeypatch, tok_dir):
    jieba = pytest.importorskip("jieba", reason="jieba not installed (pip install bertkit[zh])")
    jieba.setLogLevel(60)
    lines = [raw(x) for x in SEGMENTED]
    cut = [" ".join(jieba.lcut(x)) for x in lines]
    by_jieba = build(tmp_path, monkeypatch, tok_dir, lines, "jieba", "jieba")
    by_file = build(tmp_path, monkeypatch, tok_dir, cut, "file", "spaces")
    assert by_jieba.manifest["options"]["segmenter"] == "jieba"
    for d in range(len(by_jieba)):
        assert np.array_equal(by_jieba.document_tokens(d)[0], by_file.document_tokens(d)[0])
        assert np.array_equal(by_jieba.document_words(d), by_file.document_words(d))
    # jieba knows 北京大学 as one word: its four characters flagged as one
    tok = Tokenizer.from_pretrained(tok_dir)
    ids = tok.backend.encode(lines[0], add_special_tokens=False).ids
    flags = by_jieba.document_words(0)[: len(ids)].tolist()
    at = lines[0].index("北京大学")
    assert flags[at : at + 4] == [False, True, True, True]
    rjieba = pytest.importorskip("rjieba", reason="rjieba not installed")
    assert [rjieba.cut(x) for x in lines] == [jieba.lcut(x) for x in lines]


def test_word_starts_and_continuation():
    line = "我们在 北京大学bert"
    starts = word_starts(line, ["我们", "在", "北京大学", "bert"])
    assert starts.tolist() == [0, 2, 4, 8]
    # tokens: 我 们 在 北 京 大 学 be ##rt
    cont = continuation(starts, [0, 1, 2, 4, 5, 6, 7, 8, 10])
    assert cont.tolist() == [False, True, False, False, True, True, True, False, True]
    with pytest.raises(BertkitError, match="do not spell the line"):
        word_starts(line, ["我们", "北京"])


def test_bad_segmenters_are_one_line_errors(tmp_path, monkeypatch, tok_dir, capsys):
    path = corpus(tmp_path / "c", [raw(x) for x in SEGMENTED])
    with pytest.raises(BertkitError, match="segmenter must be one of"):
        build_shards(path, tok_dir, tmp_path / "out", segmenter="thulac", progress=False)
    monkeypatch.setitem(sys.modules, "rjieba", None)  # as if not installed
    with pytest.raises(BertkitError, match="pip install rjieba"):
        load_segmenter("rjieba")
    args = ["shards", "--corpus", str(path), "--tokenizer", str(tok_dir), "--output", str(tmp_path / "out")]
    assert main([*args, "--segmenter", "rjieba", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install rjieba" in err
    assert not (tmp_path / "out").exists()
    # shards built without a segmenter are not silently reused for one
    assert main([*args, "--quiet"]) == 0
    assert main([*args, "--segmenter", "spaces", "--quiet"]) == 2
    assert "segmenter None → 'spaces'" in capsys.readouterr().err


def test_pretrain_masks_the_shards_words(tmp_path, monkeypatch, tok_dir, capsys):
    docs = build(tmp_path, monkeypatch, tok_dir, SEGMENTED, "seg", "spaces")
    out = tmp_path / "model"
    args = ["pretrain", "--corpus", str(docs.directory), "--tokenizer", str(tok_dir), "--output", str(out)]
    args += ["--config", "tiny", "--whole-word-mask", "--max-steps", "2", "--batch-size", "4"]
    args += ["--max-seq-length", "32", "--quiet"]
    assert main(args) == 0
    assert "the shards' spaces word boundaries" in capsys.readouterr().out
    metrics = (out / "pretrain_metrics.json").read_text()
    assert "spaces word boundaries" in metrics


def test_pretrain_on_raw_text_segments_it(tmp_path, tok_dir, capsys):
    path = corpus(tmp_path / "c", SEGMENTED)
    out = tmp_path / "model"
    args = ["pretrain", "--corpus", str(path), "--tokenizer", str(tok_dir), "--output", str(out)]
    args += ["--segmenter", "spaces", "--doc-mode", "blank-line", "--config", "tiny", "--whole-word-mask"]
    args += ["--max-steps", "1", "--batch-size", "4", "--max-seq-length", "32", "--quiet", "--workers", "1"]
    assert main(args) == 0
    assert ShardedCorpus(out / "data").segmenter == "spaces"
    assert "the shards' spaces word boundaries" in capsys.readouterr().out
