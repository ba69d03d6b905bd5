"""Training a WordPiece vocabulary with `bertkit tokenizer train` on real text (Project Gutenberg
books, ChnSentiCorp), checked against transformers' BertTokenizer loading the result, and the CLI's
one-line errors on bad input."""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from bertkit.cli import main
from bertkit.tokenization.text import iter_text_lines, resolve_files, strip_gutenberg_boilerplate
from bertkit.tokenization.tokenizer import SPECIAL_TOKENS, Tokenizer
from bertkit.tokenization.vocab import train_tokenizer

BOOKS = [
    "Carroll, Lewis/Alice's Adventures in Wonderland.txt.gz",
    "Carroll, Lewis/Through the Looking-Glass.txt.gz",
    "Doyle, Arthur Conan/A Study in Scarlet.txt.gz",
]
NO_MARKERS = (
    "Dickens, Charles/The Lock and Key Library: "
    "Classic Mystery and Detective Stories: Old Time English.txt.gz"
)


@pytest.fixture(scope="module")
def books(shared_data) -> list[Path]:
    return [shared_data / "en/gutenberg/books" / b for b in BOOKS]


def gutenberg_body(path: Path) -> list[str]:
    """The lines between the START and END markers, found without bertkit's helper."""
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.lstrip().startswith(("*** START OF", "***START OF"))
    )
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith(("*** END OF", "***END OF")))
    return lines[start + 1 : end]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["tokenizer", "train", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_same_encodings(ours: Tokenizer, theirs, texts: list[str]) -> None:
    kw = dict(padding=True, truncation=True, max_length=128, return_offsets_mapping=True)
    a, b = ours(texts, **kw), theirs(texts, **kw)
    for key in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping"):
        assert a[key] == b[key], key


# -- reading text -----------------------------------------------------------------------------------


def test_gutenberg_header_and_footer_are_stripped(books, shared_data):
    for book in books:
        assert list(iter_text_lines(book)) == gutenberg_body(book)
        raw = gzip.decompress(book.read_bytes()).decode("utf-8").splitlines()
        assert list(iter_text_lines(book, strip_gutenberg=False)) == raw  # CRLF handled too
    # A file without markers (an old Gutenberg etext) passes through whole.
    plain = shared_data / "en/gutenberg/books" / NO_MARKERS
    raw = gzip.decompress(plain.read_bytes()).decode("utf-8").splitlines()
    assert list(iter_text_lines(plain)) == raw
    assert list(strip_gutenberg_boilerplate(["a", "b"])) == ["a", "b"]


def test_files_folders_and_globs(shared_data):
    folder = shared_data / "en/gutenberg/books/Carroll, Lewis"
    want = sorted(folder / name for name in os.listdir(folder))
    assert resolve_files(folder) == want
    assert resolve_files(str(folder) + "/Alice*.txt.gz") == sorted(
        map(Path, glob.glob(str(folder / "Alice*.txt.gz")))
    )
    # "**" recursion, and no file twice when patterns overlap.
    every = resolve_files([str(shared_data / "en/gutenberg/books/**/*.txt.gz"), folder])
    assert len(every) == len(set(every)) == len(glob.glob(str(shared_data / "en/gutenberg/books/*/*.txt.gz")))
    # An existing name wins over glob syntax: this title contains "[sic]".
    sic = shared_data / "en/gutenberg/books/Austen, Jane/Love and Freindship [sic].txt.gz"
    assert resolve_files(sic) == [sic]


# -- training ---------------------------------------------------------------------------------------


def test_cli_trains_on_books_and_transformers_agrees(books, hf, tmp_path, capsys, shared_data):
    out = tmp_path / "tok"
    rc, stdout, err = run_cli(capsys, *books, "--vocab-size", 2000, "--output", out)
    assert rc == 0, err
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert f"vocabulary of {len(vocab)} tokens" in stdout
    assert len(vocab) == 2000 and tuple(vocab[:5]) == SPECIAL_TOKENS
    assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is True

    ours = Tokenizer.from_pretrained(out)
    body = [line for b in books for line in gutenberg_body(b) if line.strip()]
    # The most frequent words of the corpus are whole tokens (counted here, without tokenizers).
    counts = collections.Counter(w for line in body for w in re.findall(r"[a-z]+", line.lower()))
    for word, _ in counts.most_common(100):
        assert ours.tokenize(word) == [word]

    texts = body[::7] + (shared_data / "en/glue/SST-2/dev.tsv").read_text().splitlines()[1:]
    for theirs in (hf.BertTokenizer.from_pretrained(str(out)), hf.AutoTokenizer.from_pretrained(str(out))):
        assert theirs.vocab_size == ours.vocab_size == 2000
        assert_same_encodings(ours, theirs, texts)
    # save/load round trip: same files, same encodings.
    ours.save_pretrained(tmp_path / "again")
    again = Tokenizer.from_pretrained(tmp_path / "again")
    assert (tmp_path / "again/vocab.txt").read_bytes() == (out / "vocab.txt").read_bytes()
    assert json.loads((tmp_path / "again/tokenizer.json").read_text()) == json.loads(
        (out / "tokenizer.json").read_text()
    )
    assert_same_encodings(again, theirs, texts)


def test_api_cased_training_matches_transformers(books, hf, tmp_path):
    tok = train_tokenizer(books[:1], 1000, tmp_path / "cased", do_lower_case=False, strip_accents=False)
    assert not tok.do_lower_case and tok.vocab_size == 1000
    assert "Alice" in tok.vocab and tok.tokenize("Alice") == ["Alice"]
    theirs = hf.BertTokenizer.from_pretrained(str(tmp_path / "cased"))
    assert theirs.do_lower_case is False
    lines = [line for line in gutenberg_body(books[0]) if line.strip()]
    assert_same_encodings(tok, theirs, lines + ["Café NAÏVE Ångström", "ÉCOLE"])
    assert_same_encodings(Tokenizer.from_pretrained(tmp_path / "cased"), theirs, lines)


def test_subprocess_cli_exits_zero(books, tmp_path):
    out = tmp_path / "sub"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "bertkit.cli", "tokenizer", "train", str(books[0])]
    proc = subprocess.run(
        [*cmd, "--vocab-size", "500", "--output", str(out)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 500 and f"vocabulary of 500 tokens; saved to {out}" in proc.stdout


def is_cjk(ch: str) -> bool:
    """google-research/bert's _is_chinese_char ranges."""
    cp = ord(ch)
    ranges = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F)]
    ranges += [(0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
    return any(lo <= cp <= hi for lo, hi in ranges)


def test_chinese_training_gives_single_character_tokens(shared_data, hf, tmp_path, capsys):
    rows = (shared_data / "zh/chnsenticorp/train.tsv").read_text(encoding="utf-8").splitlines()[1:4001]
    texts = [r.split("\t", 1)[1] for r in rows]
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    rc, _, err = run_cli(capsys, corpus, "--vocab-size", 3000, "--output", tmp_path / "zh")
    assert rc == 0, err
    tok = Tokenizer.from_pretrained(tmp_path / "zh")
    counts = collections.Counter(ch for t in texts for ch in t if is_cjk(ch))
    frequent = [ch for ch, _ in counts.most_common(800)]
    assert all(tok.tokenize(ch) == [ch] for ch in frequent)
    assert all(tok.tokenize(ch + ch) == [ch, ch] for ch in frequent)
    # No token joins CJK characters: the normalizer isolates each one before training.
    assert not [t for t in tok.vocab if sum(map(is_cjk, t)) > 1]
    sample = texts[:500] + ["我爱北京天安门", unicodedata.normalize("NFKC", "ｈｅｌｌｏ１２３")]
    assert_same_encodings(tok, hf.BertTokenizer.from_pretrained(str(tmp_path / "zh")), sample)


def test_initial_alphabet_keeps_characters_the_corpus_lacks(hf, tmp_path, capsys):
    # A corpus with no digits, no Latin letters and no 呗 (as translated classical prose), and the
    # text a model will be fine-tuned on (customer questions) as the alphabet file.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("天下大势，分久必合，合久必分。\n周末七国分争，并入于秦。\n" * 40, encoding="utf-8")
    questions = ["花呗怎么还款", "借呗2018年的额度", "QQ号码***绑定"]
    alphabet = tmp_path / "questions.txt"
    alphabet.write_text("\n".join(questions) + "\n", encoding="utf-8")
    plain = train_tokenizer(corpus, 300, tmp_path / "plain", limit_alphabet=200)
    assert plain.tokenize("分呗") == ["分", "[UNK]"] and plain.tokenize("2018") == ["[UNK]"]

    rc, _, err = run_cli(capsys, corpus, "--vocab-size", 300, "--limit-alphabet", 200,
                         "--initial-alphabet", alphabet, "--output", tmp_path / "kept")  # fmt: skip
    assert rc == 0, err
    tok = Tokenizer.from_pretrained(tmp_path / "kept")
    chars = {ch for q in questions for ch in q.lower()}
    assert all(tok.tokenize(ch) == [ch] for ch in chars)
    assert tok.tokenize("借呗2018") == ["借", "呗", "2", "##0", "##1", "##8"]  # "##" forms for digits
    assert tok.tokenize("qq") == ["q", "##q"]
    assert "[UNK]" not in tok.tokenize(" ".join(questions))
    assert [tok.vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert len(tok.vocab) == len(set(tok.vocab.values())) == max(tok.vocab.values()) + 1
    assert_same_encodings(tok, hf.BertTokenizer.from_pretrained(str(tmp_path / "kept")), questions)

    # More characters than --limit-alphabet allows: one line, nothing written.
    out = tmp_path / "small"
    rc, out_text, err = run_cli(capsys, corpus, "--limit-alphabet", 5, "--initial-alphabet", alphabet,
                                "--output", out)  # fmt: skip
    assert_one_line_error(rc, out_text, err, "limit_alphabet 5")
    assert not out.exists()


# -- bad input --------------------------------------------------------------------------------------


def assert_one_line_error(rc: int, out: str, err: str, *needles: str) -> None:
    assert rc != 0 and out == ""
    assert err.startswith("bertkit: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_bad_inputs_fail_with_one_line(books, shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "missing.txt"
    assert_one_line_error(*run_cli(capsys, missing, "--output", out), str(missing))
    pattern = str(tmp_path / "nothing-*.txt")
    assert_one_line_error(*run_cli(capsys, pattern, "--output", out), pattern, "no files match")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert_one_line_error(*run_cli(capsys, empty, "--output", out), str(empty), "no text")
    bad = shared_data / "zh/weibo_ner/weiboNER.conll.train"  # emoji stored as split surrogates
    assert_one_line_error(*run_cli(capsys, bad, "--output", out), str(bad), "line 5873", "not valid UTF-8")
    fake_gz = tmp_path / "fake.txt.gz"
    fake_gz.write_text("not gzip")
    assert_one_line_error(*run_cli(capsys, fake_gz, "--output", out), str(fake_gz), "cannot read")
    assert_one_line_error(*run_cli(capsys, books[0], "--vocab-size", 50, "--output", out), "too small")
    assert_one_line_error(*run_cli(capsys, books[0], "--vocab-size", 3, "--output", out), "vocab_size")
    assert not out.exists()  # nothing written by a failed run
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_one_line_error(*run_cli(capsys, books[0], "--output", a_file), str(a_file), "not a directory")


@pytest.mark.slow
def test_full_gutenberg_training(shared_data, hf, tmp_path, capsys):
    """All 362 books (~117 MB) into a BERT-size vocabulary (minutes on 2 cores)."""
    folder = shared_data / "en/gutenberg/books"
    rc, stdout, err = run_cli(capsys, folder, "--vocab-size", 30522, "--output", tmp_path / "full")
    assert rc == 0, err
    assert "vocabulary of 30522 tokens" in stdout
    ours = Tokenizer.from_pretrained(tmp_path / "full")
    theirs = hf.BertTokenizer.from_pretrained(str(tmp_path / "full"))
    texts = [line for i, line in enumerate(iter_text_lines(folder)) if i % 97 == 0 and line.strip()]
    assert_same_encodings(ours, theirs, texts)
    for word in ("the", "said", "holmes", "alice", "elizabeth", "frankenstein"):
        assert ours.tokenize(word) == [word]
