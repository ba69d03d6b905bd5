"""Readers forgive what a person cannot see (invisible-only lines, BOMs inside a file, spaces or a
stray \\r after a tag) and say so: one warning per kind and file, naming the first line and the
count. Real errors stay errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bertkit.data.conll import read_conll
from bertkit.data.readers import read_text_classification
from bertkit.data.spans import read_span_jsonl
from bertkit.errors import BertkitError

CLEAN = "EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n\nBRUSSELS B-LOC\n\nto O\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))  # bytes: no newline translation
    return path


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bertkit" and r.levelno == logging.WARNING]


def sentences(examples) -> list[tuple[list[str], list[str] | None, int]]:
    return [(ex.tokens, ex.tags, ex.line) for ex in examples]


def test_invisible_only_lines_are_sentence_breaks(tmp_path, caplog):
    dirty = (
        CLEAN.replace("\n\n", "\n\ufeff\n", 1).replace("\n\n", "\n\u200b  \n", 1).replace("\n\n", "\n\xa0\n")
    )
    path = write(tmp_path, "dirty.conll", dirty)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_conll(path)
    assert sentences(got) == sentences(read_conll(write(tmp_path, "clean.conll", CLEAN)))
    assert [ex.tokens for ex in got] == [["EU", "rejects"], ["Peter", "Blackburn"], ["BRUSSELS"], ["to"]]
    assert warnings(caplog) == [
        f"{path}: line 3: 3 lines held only invisible characters (U+00A0 (no-break space), "
        "U+200B (zero-width space), U+FEFF (BOM)); read as blank lines"
    ]


def test_lone_bom_line_was_a_column_error_and_is_now_blank(tmp_path, caplog):
    path = write(tmp_path, "bom.conll", "EU B-ORG\n\ufeff\nPeter B-PER\n")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_conll(path)
    assert sentences(got) == [(["EU"], ["B-ORG"], 1), (["Peter"], ["B-PER"], 3)]
    assert warnings(caplog) == [
        f"{path}: line 2: 1 line held only invisible characters (U+FEFF (BOM)); read as blank lines"
    ]


def test_bom_in_the_middle_is_removed(tmp_path, caplog):
    # Two files joined: the second one's BOM now begins line 4; another begins line 6.
    path = write(tmp_path, "joined.conll", "\ufeffEU B-ORG\nrejects O\n\n\ufeffEU B-ORG\nx O\n\ufeffy O\n")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_conll(path)
    assert sentences(got) == [
        (["EU", "rejects"], ["B-ORG", "O"], 1),
        (["EU", "x", "y"], ["B-ORG", "O", "O"], 4),
    ]
    assert got[1].text == "EU x y"
    assert warnings(caplog) == [
        f"{path}: line 4: 2 lines began with a BOM (U+FEFF), as joined files leave; removed"
    ]


def test_tag_ends_spaces_and_stray_cr(tmp_path, caplog):
    # Tabs: trailing spaces on lines 1 and 4 (4 is CRLF), \r\r\n (mixed line ends) on line 2.
    path = write(tmp_path, "ends.conll", "EU\tB-ORG  \nrejects\tO\r\r\n\nPeter\tB-PER \r\nx \tO\n")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_conll(path)
    # Tokens are never changed: "x " keeps its space (a token column, not the tag).
    assert sentences(got) == [(["EU", "rejects"], ["B-ORG", "O"], 1), (["Peter", "x "], ["B-PER", "O"], 4)]
    assert warnings(caplog) == [
        f"{path}: line 1: 2 tags ended in spaces; removed",
        f"{path}: line 2: 1 tag ended in a stray \\r (mixed line ends); removed",
    ]


def test_tag_ends_in_a_middle_column(tmp_path, caplog):
    path = write(tmp_path, "mid.conll", "EU\tB-ORG \tNNP\nrejects\tO\r\tVBZ\nx\tO\tNN\n")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_conll(path, tag_column=1)
    assert sentences(got) == [(["EU", "rejects", "x"], ["B-ORG", "O", "O"], 1)]
    assert warnings(caplog) == [
        f"{path}: line 1: 1 tag ended in spaces; removed",
        f"{path}: line 2: 1 tag ended in a stray \\r (mixed line ends); removed",
    ]


def test_clean_files_warn_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        read_conll(write(tmp_path, "clean.conll", CLEAN))
        read_conll(write(tmp_path, "crlf.conll", CLEAN.replace(" ", "\t").replace("\n", "\r\n")))
    assert warnings(caplog) == []


def test_zero_width_inside_a_token_is_kept(tmp_path, caplog):
    path = write(tmp_path, "zw.conll", "Ab\u200bc O\n\u200bEU B-ORG\n")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_conll(path)
    assert got[0].tokens == ["Ab\u200bc", "\u200bEU"]
    assert warnings(caplog) == []


def test_wrong_column_count_is_still_an_error(tmp_path):
    path = write(tmp_path, "bad.conll", "EU B-ORG\n\ufeff\nrejects O x\n")
    with pytest.raises(BertkitError) as e:
        read_conll(path)
    assert str(e.value) == f"{path}: line 3: expected 2 columns like line 1, found 3"
    assert e.value.path == str(path)


def test_tsv_invisible_only_lines_and_bom(tmp_path, caplog):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nhello\t1\n\u200b \t\n\ufeffbye\t0\n\xa0\n")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_text_classification(path)
    assert [(ex.text, ex.label, ex.line) for ex in got] == [("hello", "1", 2), ("bye", "0", 4)]
    assert warnings(caplog) == [
        f"{path}: line 3: 2 lines held only invisible characters (U+00A0 (no-break space), "
        "U+200B (zero-width space)); read as blank lines",
        f"{path}: line 4: 1 line began with a BOM (U+FEFF), as joined files leave; removed",
    ]


def test_csv_and_jsonl_invisible_only_lines_and_bom(tmp_path, caplog):
    csv_path = write(tmp_path, "train.csv", 'text,label\n"a",1\n\ufeff\n\ufeff"b, c",0\n')
    jsonl_path = write(
        tmp_path, "train.jsonl", '{"text": "a", "label": 1}\n\u2060\n\ufeff{"text": "b", "label": 0}\n'
    )
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        csv_rows = read_text_classification(csv_path)
        jsonl_rows = read_text_classification(jsonl_path)
    assert [(ex.text, ex.label, ex.line) for ex in csv_rows] == [("a", "1", 2), ("b, c", "0", 4)]
    assert [(ex.text, ex.label, ex.line) for ex in jsonl_rows] == [("a", "1", 1), ("b", "0", 3)]
    assert warnings(caplog) == [
        f"{csv_path}: line 3: 1 line held only invisible characters (U+FEFF (BOM)); read as blank lines",
        f"{csv_path}: line 4: 1 line began with a BOM (U+FEFF), as joined files leave; removed",
        f"{jsonl_path}: line 2: 1 line held only invisible characters (U+2060 (word joiner)); "
        "read as blank lines",
        f"{jsonl_path}: line 3: 1 line began with a BOM (U+FEFF), as joined files leave; removed",
    ]


def test_tsv_wrong_column_count_is_still_an_error(tmp_path):
    path = write(tmp_path, "bad.tsv", "sentence\tlabel\n\ufeff\nhello\t1\textra\n")
    with pytest.raises(BertkitError) as e:
        read_text_classification(path)
    assert str(e.value) == f"{path}: line 3: expected 2 columns (sentence, label), found 3"


def test_span_jsonl_bom_line(tmp_path, caplog):
    path = write(tmp_path, "spans.jsonl", '{"text": "ab"}\n\ufeff{"text": "cd"}\n')
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_span_jsonl(path)
    assert [ex.tokens for ex in got] == [["a", "b"], ["c", "d"]]
    assert warnings(caplog) == [
        f"{path}: line 2: 1 line began with a BOM (U+FEFF), as joined files leave; removed"
    ]


@pytest.mark.parametrize("name", ["empty.tsv", "empty.conll"])
def test_a_file_of_invisible_characters_is_empty(tmp_path, name):
    path = write(tmp_path, name, "\u200b\n\ufeff \n")
    read = read_conll if name.endswith(".conll") else read_text_classification
    with pytest.raises(BertkitError) as e:
        read(path)
    assert str(e.value) == f"{path}: file is empty (it holds only whitespace and invisible characters)"


def test_csv_quoted_tsv_texts_are_unquoted_and_plain_quotes_kept(tmp_path, caplog):
    rows = [
        '"Three words. ""Dude. Stop."" "\t3\tid1',  # GoEmotions: a CSV writer's quoting in a TSV file
        '"the movie" is "fine\t1\tid2',  # GLUE: plain, unbalanced quotes stay
        '"a"" lone " quote"\t2\tid3',  # a lone quote inside: not CSV quoting, kept as is
        '"""Hello"""\t0\tid4',
    ]
    path = write(tmp_path, "q.tsv", "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = read_text_classification(path, text_column=0, label_column=1)
    assert [e.text for e in got] == [
        'Three words. "Dude. Stop." ',
        '"the movie" is "fine',
        rows[2].split("\t")[0],
        '"Hello"',
    ]
    assert warnings(caplog) == [
        f'{path}: line 1: 2 texts came CSV-quoted ("..." with "" inside) in a TSV file; unquoted'
    ]


def test_a_dirty_file_trains_and_warns_once_per_kind(tiny_dir, tmp_path, caplog):
    from bertkit.cli import main

    sentences = [  # tab-separated: a space split would drop the tags' trailing spaces unseen
        "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO",
        "Peter\tB-PER\nBlackburn\tI-PER",
        "BRUSSELS\tB-LOC\n1996\tO",
    ]
    clean = "\n\n".join(sentences * 6) + "\n"
    dirty = clean.replace("\n\n", "\n\ufeff\n", 3).replace("\n\n", "\n\u200b \n", 2)  # invisible-only lines
    dirty = dirty.replace("\nPeter", "\n\ufeffPeter", 2)  # BOMs in the middle, as joined files leave
    dirty = dirty.replace("B-PER\n", "B-PER  \n").replace("\n", "\r\n")  # trailing tag spaces, CRLF
    path = write(tmp_path, "dirty.conll", dirty)
    out = tmp_path / "out"
    argv = f"finetune --task ner --model {tiny_dir} --train {path} --dev {path} --output {out} --max-steps 1"
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        assert main([*argv.split(), "--quiet"]) == 0
    mine = [w for w in warnings(caplog) if w.startswith(str(path))]
    kinds = ["held only invisible characters", "began with a BOM", "ended in spaces"]
    for kind in kinds:  # train and dev are the same file: each kind once per reading
        assert sum(kind in w for w in mine) == 2, mine
    assert len(mine) == 2 * len(kinds), mine
    assert json.loads((out / "metrics.json").read_text())["dev"]["f1"] >= 0.0
