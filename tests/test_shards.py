"""Token shards for pretraining (`bertkit.data.shards`, `bertkit shards`): shards decode back to the
tokenizer's ids line by line, documents and the held-out split partition the corpus, the build is
deterministic whatever the worker count, reused when nothing changed, and every bad input is a
one-line BertkitError that leaves nothing behind."""

from __future__ import annotations

import collections
import gzip
import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bertkit.cli import main
from bertkit.data.corpus import ShardedCorpus
from bertkit.data.manifest import SPLITS, read_manifest
from bertkit.data.shards import build_shards
from bertkit.errors import BertkitError
from bertkit.tokenization.text import LineHashSet, iter_documents, iter_text_lines
from bertkit.tokenization.tokenizer import SPECIAL_TOKENS, Tokenizer

WORDS = "the cat sat on a mat dog ran far away and then came back home red blue big small old new".split()
START = "*** START OF THE PROJECT GUTENBERG EBOOK A TALE ***"
END = "*** END OF THE PROJECT GUTENBERG EBOOK A TALE ***"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    Tokenizer.from_vocab([*SPECIAL_TOKENS, ".", ",", *WORDS, "##s"]).save_pretrained(d)
    return d


def sentences(n: int, start: int = 0) -> list[str]:
    """n distinct lines of in-vocabulary words (distinct token sequences too)."""
    combos = itertools.islice(itertools.product(WORDS, repeat=3), start, start + n)
    return [" ".join(c) + ("." if i % 3 else "") for i, c in enumerate(combos)]


def write_docs(path: Path, docs: list[list[str]], crlf: bool = False) -> Path:
    """Documents separated by blank lines (two between some, and spaces on one), plain or .gz."""
    nl = "\r\n" if crlf else "\n"
    text = "".join(nl.join(doc) + nl + (nl + "   " + nl if i % 2 else nl) for i, doc in enumerate(docs))
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def ids_of(tok_dir: Path, lines: list[str]) -> list[tuple[int, ...]]:
    tok = Tokenizer.from_pretrained(tok_dir)
    return [tuple(ids) for ids in tok(lines, add_special_tokens=False)["input_ids"]]


def read_split(directory: Path, split: str) -> list[list[tuple[int, ...]]]:
    corpus = ShardedCorpus(directory, split)
    docs = [[tuple(line.tolist()) for line in corpus.document(i)] for i in range(len(corpus))]
    assert all(line.dtype == np.int64 for i in range(len(corpus)) for line in corpus.document(i))
    return docs


def assert_partition(directory: Path, tok_dir: Path, source: list[list[str]], whole: bool) -> dict:
    """Every output document is a run of consecutive lines of one source document (the whole of
    it when `whole`), with exactly the tokenizer's ids; together they cover each line once."""
    where = {}
    for d, doc in enumerate(source):
        for p, ids in enumerate(ids_of(tok_dir, doc)):
            where[ids] = (d, p)
    covered: collections.Counter = collections.Counter()
    out = {split: read_split(directory, split) for split in SPLITS}
    for split, docs in out.items():
        assert docs, f"{split} is empty"
        for doc in docs:
            spots = [where[ids] for ids in doc]  # KeyError: a line that is no line of the corpus
            d, p = spots[0]
            assert spots == [(d, p + k) for k in range(len(doc))], "not consecutive lines of one document"
            assert not whole or len(doc) == len(source[d])
            covered.update(spots)
    assert covered == collections.Counter(where.values())  # each line once, train and held-out disjoint
    manifest = read_manifest(directory)
    for split, docs in out.items():
        counts = manifest["splits"][split]
        assert counts["documents"] == len(docs)
        assert counts["lines"] == sum(map(len, docs))
        assert counts["tokens"] == sum(len(line) for doc in docs for line in doc)
    return out


def shard_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "manifest.json"}


def assert_nothing_written(output: Path) -> None:
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


# -- reading documents ------------------------------------------------------------------------------


def test_documents_by_file_and_by_blank_line(tmp_path):
    a = write_docs(tmp_path / "a.txt", [["one", "two"], ["three"]])
    b = write_docs(tmp_path / "b.txt.gz", [["four  ", "  five"], ["one"]], crlf=True)
    assert list(iter_documents([a, b])) == [["one", "two", "three"], ["four", "five", "one"]]
    assert list(iter_documents([a, b], doc_mode="blank-line")) == [
        ["one", "two"],
        ["three"],
        ["four", "five"],
        ["one"],
    ]
    # Dedupe is corpus-wide; a document left empty is skipped.
    assert list(iter_documents([a, b], doc_mode="blank-line", dedupe_lines=True)) == [
        ["one", "two"],
        ["three"],
        ["four", "five"],
    ]
    with pytest.raises(BertkitError, match="doc_mode"):
        list(iter_documents(a, doc_mode="paragraph"))


def test_line_hash_set_grows_and_remembers():
    seen = LineHashSet(capacity=16)
    lines = [f"line {i}" for i in range(5000)]
    assert all(seen.add(line) for line in lines)
    assert not any(seen.add(line) for line in lines[::7])
    assert len(seen) == 5000


# -- building and reading shards --------------------------------------------------------------------


def test_whole_documents_held_out_and_shards_decode_to_the_tokenizer(tmp_path, tok_dir):
    lines = sentences(200)
    source = [lines[i : i + 5] for i in range(0, 200, 5)]  # 40 documents
    a = write_docs(tmp_path / "a.txt", source[:25])
    b = write_docs(tmp_path / "b.txt.gz", source[25:], crlf=True)
    out = tmp_path / "shards"
    manifest = build_shards(
        [a, b], tok_dir, out, heldout=0.3, doc_mode="blank-line", workers=1, progress=False
    )
    assert manifest == read_manifest(out)
    assert manifest["heldout_rule"]["unit"] == "document"  # 40 × 0.3 >= 10 documents
    docs = assert_partition(out, tok_dir, source, whole=True)
    # The training documents keep the corpus order.
    order = [ids_of(tok_dir, doc) for doc in source]
    train = docs["train"]
    assert [order.index(doc) for doc in train] == sorted(order.index(doc) for doc in train)

    assert manifest["dtype"] == "uint16" and manifest["vocab_size"] == len(WORDS) + 8
    assert manifest["inputs"] == [
        {"path": str(p), "bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in (a, b)
    ]
    assert manifest["options"] == {
        "doc_mode": "blank-line",
        "heldout": 0.3,
        "strip_gutenberg": True,
        "dedupe_lines": False,
        "shard_tokens": 50_000_000,
    }
    vocab_sha = hashlib.sha256((tok_dir / "vocab.txt").read_bytes()).hexdigest()
    assert manifest["tokenizer"]["files"]["vocab.txt"] == vocab_sha
    assert manifest["tokenizer"]["path"] == str(tok_dir)
    for split in SPLITS:
        corpus = ShardedCorpus(out, split)
        corpus.verify()
        assert corpus.num_tokens == manifest["splits"][split]["tokens"]
        assert corpus.vocab_size == len(WORDS) + 8
        for record in manifest["splits"][split]["shards"]:
            for kind, info in record["files"].items():
                data = (out / f"{record['name']}.{kind}.bin").read_bytes()
                assert hashlib.sha256(data).hexdigest() == info["sha256"]
    tokens = np.fromfile(out / "train-00000.tokens.bin", dtype="<u2")
    lines_at = np.fromfile(out / "train-00000.lines.bin", dtype="<i8")
    assert lines_at[0] == 0 and lines_at[-1] == len(tokens)
    assert tuple(tokens[lines_at[0] : lines_at[1]]) == train[0][0]


def test_few_long_documents_hold_out_blocks_of_lines(tmp_path, tok_dir):
    lines = sentences(750)
    source = [lines[i : i + 250] for i in range(0, 750, 250)]
    files = [write_docs(tmp_path / f"{i}.txt", [doc]) for i, doc in enumerate(source)]
    out = tmp_path / "shards"
    manifest = build_shards(files, tok_dir, out, heldout=0.05, workers=1, progress=False)
    assert manifest["heldout_rule"]["unit"] == "block" and manifest["heldout_rule"]["block_lines"] == 100
    docs = assert_partition(out, tok_dir, source, whole=False)
    where = {ids: p for doc in source for p, ids in enumerate(ids_of(tok_dir, doc))}
    for doc in docs["heldout"]:  # whole blocks: 100 lines from a multiple of 100, or a document's end
        assert where[doc[0]] % 100 == 0 and (len(doc) == 100 or where[doc[-1]] == 249)

    # Tiny corpora still get both splits: 2 lines give one each; 1 line has no held-out split.
    two = write_docs(tmp_path / "two.txt", [["the cat", "the dog"]])
    m = build_shards(two, tok_dir, tmp_path / "two", workers=1, progress=False)
    assert m["splits"]["train"]["lines"] == m["splits"]["heldout"]["lines"] == 1
    one = write_docs(tmp_path / "one.txt", [["the cat"]])
    m = build_shards(one, tok_dir, tmp_path / "one", workers=1, progress=False)
    assert m["splits"]["train"]["lines"] == 1 and m["splits"]["heldout"]["shards"] == []
    assert len(ShardedCorpus(tmp_path / "one", "heldout")) == 0


def test_gutenberg_boilerplate_dedupe_and_empty_lines(tmp_path, tok_dir):
    body = ["the cat sat", "on a mat", "", "the cat sat", "\u200b"]  # a duplicate; a line with no tokens
    book = tmp_path / "book.txt.gz"
    book.write_bytes(gzip.compress("\r\n".join(["header", START, *body, END, "licence"]).encode()))
    m = build_shards(book, tok_dir, tmp_path / "a", workers=1, progress=False)
    got = [line for split in SPLITS for doc in read_split(tmp_path / "a", split) for line in doc]
    assert sorted(got) == sorted(ids_of(tok_dir, ["the cat sat", "on a mat", "the cat sat"]))
    assert m["read"]["lines_without_tokens"] == 1
    assert m["read"]["bytes"] == book.stat().st_size  # the footer not read still counts as passed

    m = build_shards(book, tok_dir, tmp_path / "b", dedupe_lines=True, workers=1, progress=False)
    got = [line for split in SPLITS for doc in read_split(tmp_path / "b", split) for line in doc]
    assert sorted(got) == sorted(ids_of(tok_dir, ["the cat sat", "on a mat"]))
    assert m["read"]["duplicate_lines"] == 1

    m = build_shards(book, tok_dir, tmp_path / "c", strip_gutenberg=False, workers=1, progress=False)
    assert m["read"]["lines"] == 8  # header, both markers and the licence line kept


def test_uint32_for_a_vocabulary_over_65535(tmp_path):
    big = tmp_path / "big"
    Tokenizer.from_vocab([*SPECIAL_TOKENS, *(f"w{i}" for i in range(70_000))]).save_pretrained(big)
    text = tmp_path / "t.txt"
    text.write_text("w69999 w1\nw65536\n")
    m = build_shards(text, big, tmp_path / "out", workers=1, progress=False)
    assert m["dtype"] == "uint32"
    got = sorted(line for split in SPLITS for doc in read_split(tmp_path / "out", split) for line in doc)
    assert got == [(65541,), (70004, 6)]
    assert (tmp_path / "out/train-00000.tokens.bin").stat().st_size == 4 * m["splits"]["train"]["tokens"]


def test_shards_roll_over_at_document_ends(tmp_path, tok_dir):
    lines = sentences(120)
    source = [lines[i : i + 3] for i in range(0, 120, 3)]  # 40 documents of 3 lines, 9-12 tokens
    path = write_docs(tmp_path / "a.txt", source)
    out = tmp_path / "out"
    m = build_shards(
        path, tok_dir, out, doc_mode="blank-line", heldout=0.25, shard_tokens=25, workers=1, progress=False
    )
    shards = m["splits"]["train"]["shards"]
    assert len(shards) > 3 and [s["name"] for s in shards] == [f"train-{k:05d}" for k in range(len(shards))]
    corpus = ShardedCorpus(out, "train")
    docs = [corpus.document(i) for i in range(len(corpus))]
    first = 0
    for s in shards:  # a shard closes with the first document that takes it to 25 tokens
        sizes = [sum(map(len, d)) for d in docs[first : first + s["documents"]]]
        assert sum(sizes) == s["tokens"] and sum(sizes[:-1]) < 25
        assert s is shards[-1] or sum(sizes) >= 25
        first += s["documents"]
    assert first == len(corpus) == m["splits"]["train"]["documents"]
    assert_partition(out, tok_dir, source, whole=True)
    assert [x.tolist() for x in corpus.document(-1)] == [x.tolist() for x in docs[-1]]
    tokens, offsets = corpus.document_tokens(len(corpus) - 1)
    assert offsets[0] == 0 and offsets[-1] == len(tokens) and len(offsets) == len(docs[-1]) + 1
    with pytest.raises(IndexError):
        corpus.document(len(corpus))


def test_two_workers_write_the_same_bytes_as_one(tmp_path, tok_dir):
    lines = sentences(9000)  # more than 2 × 2 chunks of 2048 lines in flight
    source = [lines[i : i + 300] for i in range(0, 9000, 300)]
    files = [write_docs(tmp_path / f"{i}.txt", [doc]) for i, doc in enumerate(source)]
    one = build_shards(files, tok_dir, tmp_path / "one", workers=1, progress=False)
    two = build_shards(files, tok_dir, tmp_path / "two", workers=2, progress=False)
    assert shard_files(tmp_path / "one") == shard_files(tmp_path / "two")
    drop = lambda m: {k: v for k, v in m.items() if k not in ("created", "seconds")}
    assert drop(one) == drop(two)


def test_second_run_reuses_and_changes_need_overwrite(tmp_path, tok_dir, capsys):
    path = write_docs(tmp_path / "a.txt", [sentences(50)])
    out = tmp_path / "out"
    first = build_shards(path, tok_dir, out, workers=1, progress=False)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    again = build_shards(path, tok_dir, out, workers=1, progress=True)
    assert again == first and "reused" in capsys.readouterr().err
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before

    with pytest.raises(BertkitError, match="heldout 0.01 → 0.02"):
        build_shards(path, tok_dir, out, heldout=0.02, workers=1, progress=False)
    other_tok = tmp_path / "tok2"
    Tokenizer.from_vocab([*SPECIAL_TOKENS, *WORDS]).save_pretrained(other_tok)
    with pytest.raises(BertkitError, match="tokenizer"):
        build_shards(path, other_tok, out, workers=1, progress=False)
    write_docs(path, [sentences(60)])
    with pytest.raises(BertkitError, match=f"inputs .*{path}.*overwrite"):
        build_shards(path, tok_dir, out, workers=1, progress=False)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    rebuilt = build_shards(path, tok_dir, out, workers=1, progress=False, overwrite=True)
    assert rebuilt["read"]["lines"] == 60 and read_manifest(out) == rebuilt
    assert_partition(out, tok_dir, [sentences(60)], whole=False)


def test_truncated_or_altered_shards_are_errors(tmp_path, tok_dir):
    path = write_docs(tmp_path / "a.txt", [sentences(50)])
    out = tmp_path / "out"
    build_shards(path, tok_dir, out, workers=1, progress=False)
    tokens = out / "train-00000.tokens.bin"
    data = tokens.read_bytes()
    tokens.write_bytes(data[:-2])
    with pytest.raises(BertkitError, match=r"train-00000.tokens.bin: shard file truncated"):
        ShardedCorpus(out, "train")
    with pytest.raises(BertkitError, match="truncated"):  # and a rerun does not reuse it
        build_shards(path, tok_dir, out, workers=1, progress=False)
    tokens.write_bytes(data[:-2] + b"\x07\x00")
    ShardedCorpus(out, "train")  # the size is right: only verify() notices
    with pytest.raises(BertkitError, match="sha256 differs"):
        ShardedCorpus(out, "train").verify()
    tokens.unlink()
    with pytest.raises(BertkitError, match="missing"):
        ShardedCorpus(out, "train")
    build_shards(path, tok_dir, out, workers=1, progress=False, overwrite=True)
    ShardedCorpus(out, "train").verify()
    with pytest.raises(BertkitError, match="no manifest.json"):
        ShardedCorpus(tmp_path, "train")


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, tok_dir):
    out = tmp_path / "out"
    good = write_docs(tmp_path / "good.txt", [sentences(20)])
    boiler = tmp_path / "boiler.txt"
    boiler.write_text(f"header\n{START}\n\n  \n{END}\nlicence\n")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"the cat\n\x89PNG\x00\x01\x02\n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("the cat\nthe dog\ncaf\u00e9\n".encode("latin-1"))
    fake_gz = tmp_path / "fake.txt.gz"
    fake_gz.write_text("not gzip")
    no_mask = tmp_path / "no_mask"
    Tokenizer.from_vocab([*SPECIAL_TOKENS, *WORDS]).save_pretrained(no_mask)
    vocab = [t for t in (no_mask / "vocab.txt").read_text().splitlines() if t != "[MASK]"]
    (no_mask / "tokenizer.json").unlink()
    (no_mask / "vocab.txt").write_text("\n".join(vocab) + "\n")

    cases = [
        (([boiler], tok_dir), f"{boiler}: no text in"),
        (([good, binary], tok_dir), f"{binary}: line 2: a NUL byte"),
        (([good, latin1], tok_dir), f"{latin1}: line 3: not valid UTF-8"),
        (([fake_gz], tok_dir), f"{fake_gz}: cannot read"),
        (([], tok_dir), "no input files"),
        (([tmp_path / "missing.txt"], tok_dir), "missing.txt: no such file"),
        (([good], tmp_path / "no_tokenizer"), "tokenizer directory not found"),
        (([good], no_mask), r"lacks the special token\(s\) \[MASK\]"),
    ]
    for (inputs, tokenizer), message in cases:
        with pytest.raises(BertkitError, match=message):
            build_shards(inputs, tokenizer, out, workers=1, progress=False)
        assert_nothing_written(out)
    for bad in (dict(heldout=0), dict(heldout=1.0), dict(doc_mode="page"), dict(shard_tokens=0)):
        with pytest.raises(BertkitError, match=next(iter(bad))):
            build_shards(good, tok_dir, out, workers=1, progress=False, **bad)
    with pytest.raises(BertkitError, match="workers"):
        build_shards(good, tok_dir, out, workers=0, progress=False)
    assert_nothing_written(out)


def test_cli(tmp_path, tok_dir, capsys):
    good = write_docs(tmp_path / "good.txt", [sentences(30), sentences(30, 30)])
    out = tmp_path / "out"
    args = ["shards", "--corpus", str(good), "--tokenizer", str(tok_dir), "--output", str(out)]
    assert main([*args, "--workers", "1", "--doc-mode", "blank-line", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    m = read_manifest(out)
    train = m["splits"]["train"]
    assert f"train: {train['documents']:,} documents, {train['lines']:,} lines" in stdout
    assert m["options"]["doc_mode"] == "blank-line" and m["read"]["lines"] == 60

    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01")
    bad_out = tmp_path / "bad"
    rc = main(["shards", "--corpus", str(good), str(binary), "--tokenizer", str(tok_dir)] + [
        "--output", str(bad_out), "--workers", "1", "--quiet"
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"bertkit: error: {binary}: line 1") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert_nothing_written(bad_out)
    assert main([*args, "--workers", "1", "--quiet"]) == 2  # other options: not reused
    assert "--overwrite" in capsys.readouterr().err


def test_real_gutenberg_books_with_minilm(shared_data, minilm_dir, tmp_path):
    """Three books (folder names with spaces and commas; .txt.gz with CRLF) checked against the
    MiniLM tokenizer run on each line independently of the shard builder."""
    books = shared_data / "en/gutenberg/books"
    inputs = [books / "Carroll, Lewis", books / "Doyle, Arthur Conan/A Study in Scarlet.txt.gz"]
    out = tmp_path / "shards"
    m = build_shards(inputs, minilm_dir, out, workers=1, progress=False)

    lines = []
    files = sorted((books / "Carroll, Lewis").iterdir()) + [inputs[1]]
    for path in files:  # Gutenberg bodies, found without bertkit's helper
        text = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
        start = next(i for i, t in enumerate(text) if t.lstrip().startswith(("*** START OF", "***START OF")))
        end = next(i for i, t in enumerate(text) if t.lstrip().startswith(("*** END OF", "***END OF")))
        lines += [t.strip() for t in text[start + 1 : end] if t.strip()]
    expected = [tuple(ids) for ids in Tokenizer.from_pretrained(minilm_dir)(lines, add_special_tokens=False)[
        "input_ids"
    ] if ids]  # fmt: skip
    got = [line for split in SPLITS for doc in read_split(out, split) for line in doc]
    assert m["read"]["files"] == len(files) and m["read"]["lines"] == len(lines)
    assert m["read"]["bytes"] == sum(p.stat().st_size for p in files)
    assert collections.Counter(got) == collections.Counter(expected)
    assert sum(s["tokens"] for s in m["splits"].values()) == sum(map(len, expected))
    assert m["heldout_rule"]["unit"] == "block" and m["splits"]["heldout"]["documents"] >= 1
    assert m["splits"]["train"]["documents"] >= len(files)
    assert os.path.getsize(out / "train-00000.tokens.bin") == 2 * m["splits"]["train"]["tokens"]
    assert json.loads((out / "manifest.json").read_text())["dtype"] == "uint16"
    # iter_text_lines (re-exported by bertkit.tokenization.tokenizer) agrees on the kept text.
    assert [t.strip() for t in iter_text_lines(files) if t.strip()] == lines
