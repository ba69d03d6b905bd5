"""Readers: counts on the real datasets, IOB1 -> IOB2 on CoNLL-2003, round trips of random
well-formed files, and one-line errors naming file and line for malformed ones."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertkit.data.conll import read_conll
from bertkit.data.examples import QAExample, TextExample, TokenExample
from bertkit.data.labels import check_labels, label_vocab
from bertkit.data.readers import read_text_classification
from bertkit.data.schemes import detect as detect_scheme
from bertkit.data.spans import read_span_jsonl
from bertkit.data.squad import read_squad
from bertkit.errors import BertkitError

# --------------------------------------------------------------------------- helpers


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end inclusive) of each IOB2 entity."""
    out, start = set(), None
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == tags[start][2:]):
            out.add((tags[start][2:], start, i - 1))
            start = None
        if tag.startswith("B-"):
            start = i
    return out


def check_tokens(examples: list[TokenExample]) -> None:
    """Offsets point at the tokens in the text; tags are IOB2 (no I- begins an entity)."""
    for ex in examples:
        assert [ex.text[s:e] for s, e in ex.offsets] == ex.tokens
        if ex.tags is not None:
            assert len(ex.tags) == len(ex.tokens)
            for prev, tag in zip(["O", *ex.tags], ex.tags, strict=False):
                assert not tag.startswith("I-") or prev[2:] == tag[2:], ex.line


def error(call, *args, **kwargs) -> str:
    with pytest.raises(BertkitError) as e:
        call(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# --------------------------------------------------------------------------- real data: classification


@pytest.fixture(scope="module")
def glue(shared_data) -> Path:
    return shared_data / "en" / "glue"


def test_sst2(glue):
    train = read_text_classification(glue / "SST-2" / "train.tsv")
    dev = read_text_classification(glue / "SST-2" / "dev.tsv")
    assert (len(train), len(dev)) == (67_349, 872)
    assert label_vocab(train) == label_vocab(dev) == ["0", "1"]
    assert train[0] == TextExample("hide new secretions from the parental units ", None, "0", 2)
    assert train[-1].line == 67_350
    check_labels(dev, {"0": 0, "1": 1}, glue / "SST-2" / "dev.tsv")
    test = read_text_classification(glue / "SST-2" / "test.tsv")  # index, sentence: no labels
    assert len(test) == 1_821 and {ex.label for ex in test} == {None}
    assert test[0].text == "uneasy mishmash of styles and genres ."
    # A requested label column that is not there is an error, not None.
    assert "label column 'label' not in the header (index, sentence)" in error(
        read_text_classification, glue / "SST-2" / "test.tsv", text_column="sentence", label_column="label"
    )


def test_cola_without_header(glue):
    train = read_text_classification(glue / "CoLA" / "train.tsv", text_column=3, label_column="1")
    dev = read_text_classification(glue / "CoLA" / "dev.tsv", text_column=3, label_column=1)
    assert (len(train), len(dev)) == (8_551, 1_043)  # dev has no final newline
    assert train[0].text.startswith("Our friends won't buy this analysis") and train[0].line == 1
    assert label_vocab(train) == ["0", "1"]
    assert len(read_text_classification(glue / "CoLA" / "test.tsv")) == 1_063
    assert "no header row" in error(read_text_classification, glue / "CoLA" / "train.tsv")


def test_mrpc_bom_and_pairs(glue):
    train = read_text_classification(glue / "MRPC" / "train.tsv")  # starts with a BOM
    dev = read_text_classification(glue / "MRPC" / "dev.tsv")
    assert (len(train), len(dev)) == (3_667, 408)
    assert train[0].text.startswith('Amrozi accused his brother , whom he called " the witness "')
    assert train[0].pair.startswith('Referring to him as only " the witness "')
    assert label_vocab(train) == ["0", "1"]  # the Quality column
    test = read_text_classification(glue / "MRPC" / "test.tsv")
    assert len(test) == 1_725 and test[0].pair and test[0].label is None


def test_rte_and_stsb(glue):
    rte = read_text_classification(glue / "RTE" / "train.tsv")
    assert len(rte) == 2_490 and label_vocab(rte) == ["entailment", "not_entailment"]
    assert len(read_text_classification(glue / "RTE" / "dev.tsv")) == 277
    assert {ex.label for ex in read_text_classification(glue / "RTE" / "test.tsv")} == {None}
    sts = read_text_classification(glue / "STS-B" / "train.tsv", regression=True)
    dev = read_text_classification(glue / "STS-B" / "dev.tsv", regression=True)
    assert (len(sts), len(dev)) == (5_749, 1_500)
    assert sts[0] == TextExample("A plane is taking off.", "An air plane is taking off.", 5.0, 2)
    assert all(isinstance(ex.label, float) and 0 <= ex.label <= 5 for ex in sts + dev)
    assert len(read_text_classification(glue / "STS-B" / "test.tsv", regression=True)) == 1_379


def test_chinese_classification(shared_data):
    zh = shared_data / "zh"
    senti = [read_text_classification(zh / "chnsenticorp" / f"{s}.tsv") for s in ("train", "dev", "test")]
    assert [len(x) for x in senti] == [9_600, 1_200, 1_200]
    assert label_vocab(senti[0]) == ["0", "1"] and senti[0][0].line == 2
    afqmc = [
        read_text_classification(zh / "afqmc" / f"{s}.txt", text_column=0, pair_column=1, label_column=2)
        for s in ("train", "dev")
    ]
    assert [len(x) for x in afqmc] == [34_334, 4_316] and label_vocab(afqmc[0]) == ["0", "1"]
    test = read_text_classification(zh / "afqmc" / "test.txt", text_column=0, pair_column=1)
    assert len(test) == 3_861 and test[0].pair and test[0].label is None
    tnews = [
        read_text_classification(zh / "tnews" / f"{s}.tsv", text_column=0, label_column=1)
        for s in ("train", "dev")
    ]
    assert [len(x) for x in tnews] == [53_360, 10_000]
    names = (zh / "tnews" / "labels.txt").read_text(encoding="utf-8").split()
    assert label_vocab(tnews[0]) == sorted(names)
    label2id = {name: i for i, name in enumerate(label_vocab(tnews[0]))}
    assert check_labels(tnews[1], label2id, zh / "tnews" / "dev.tsv") == tnews[1]


# --------------------------------------------------------------------------- real data: tagging


@pytest.fixture(scope="module")
def conll(shared_data) -> dict[str, list[TokenExample]]:
    root = shared_data / "en" / "conll2003"
    files = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
    out = {k: read_conll(root / v) for k, v in files.items()}
    iob1 = {"train": "eng.train", "valid": "eng.testa", "test": "eng.testb"}
    out |= {f"iob1-{k}": read_conll(root / "iob1" / v, scheme="iob1") for k, v in iob1.items()}
    return out


def test_conll2003_counts(conll):
    sizes = {k: (len(v), sum(len(ex.tokens) for ex in v)) for k, v in conll.items() if "-" not in k}
    assert sizes == {"train": (14_041, 203_621), "valid": (3_250, 51_362), "test": (3_453, 46_435)}
    first = conll["train"][0]
    assert first.tokens[:3] == ["EU", "rejects", "German"] and first.line == 3
    assert first.tags[:3] == ["B-ORG", "O", "B-MISC"] and first.text.startswith("EU rejects German call")
    assert first.offsets[:3] == [(0, 2), (3, 10), (11, 17)]
    assert label_vocab(conll["train"]) == [
        f"{p}-{t}" for p in "BI" for t in ("LOC", "MISC", "ORG", "PER")
    ] + ["O"]
    for split in conll.values():
        check_tokens(split)
    label2id = {t: i for i, t in enumerate(label_vocab(conll["train"]))}
    check_labels(conll["test"], label2id, "test.txt")


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_conll2003_iob1_reads_as_the_iob2_file(conll, split):
    iob2, iob1 = conll[split], conll[f"iob1-{split}"]
    assert [ex.tokens for ex in iob1] == [ex.tokens for ex in iob2]
    assert [ex.tags for ex in iob1] == [ex.tags for ex in iob2]
    assert [ex.line for ex in iob1] == [ex.line for ex in iob2]


def test_scheme_detection_on_conll2003(shared_data, conll):
    root = shared_data / "en" / "conll2003"
    raw = {
        name: [s.split("\n") for s in (root / name).read_text().split("\n\n")]
        for name in ("train.txt", "iob1/eng.train")
    }
    tags = {
        k: [[line.split()[-1] for line in s if line and not line.startswith("-DOCSTART-")] for s in v]
        for k, v in raw.items()
    }
    assert detect_scheme(tags["train.txt"]) == "iob2"
    assert detect_scheme(tags["iob1/eng.train"]) == "iob1"  # though 2 of its entities begin with B-
    assert detect_scheme([["B-PER", "E-PER"]]) == "bioes"
    # Auto mode finds IOB1 by itself and gives the same tags; the IOB2 file's tags are unchanged.
    auto = read_conll(root / "iob1" / "eng.testb")
    assert [ex.tags for ex in auto] == [ex.tags for ex in conll["test"]]
    assert sum(t.startswith("B-") for ex in conll["train"] for t in ex.tags) == 23_499
    # Read strictly as IOB2, the IOB1 file fails at its first entity.
    msg = error(read_conll, root / "iob1" / "eng.train", scheme="iob2")
    assert msg.endswith("eng.train: line 3: tag I-ORG begins a sentence (IOB2 requires B-ORG first)")


def test_msra(shared_data):
    train = read_conll(shared_data / "zh" / "msra_ner" / "train.bio")
    test = read_conll(shared_data / "zh" / "msra_ner" / "test.bio")
    assert (len(train), len(test)) == (45_000, 3_442)
    assert sum(len(ex.tokens) for ex in test) == 172_601
    assert all(ex.text == "".join(ex.tokens) for ex in test)  # character level: no spaces
    assert label_vocab(train) == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
    check_tokens(test)
    spaced = read_conll(shared_data / "zh" / "msra_ner" / "test.bio", join="space")
    assert spaced[0].text == " ".join(test[0].tokens) and spaced[0].text.startswith("中 共 中 央")


def test_weibo(shared_data, caplog):
    root = shared_data / "zh" / "weibo_ner"
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        splits = [
            read_conll(root / f"weiboNER_2nd_conll.{s}", strip_digit_suffix=True)
            for s in ("train", "dev", "test")
        ]
    assert [len(s) for s in splits] == [1_350, 270, 270]
    assert splits[0][0].tokens[:4] == ["科", "技", "全", "方"] and splits[0][0].text.startswith("科技全方位")
    assert "10 entities begin with I-/E- (first at line 1266)" in caplog.text  # repaired, not fatal
    assert {t[2:] for t in label_vocab(splits[0]) if t != "O"} == {
        f"{k}.{n}" for k in ("PER", "LOC", "ORG", "GPE") for n in ("NAM", "NOM")
    }
    for s in splits:
        check_tokens(s)
    assert (
        read_conll(root / "weiboNER_2nd_conll.dev")[0].tokens[0].endswith("0")
    )  # digit kept without the option
    msg = error(read_conll, root / "weiboNER_2nd_conll.train", strip_digit_suffix=True, scheme="iob2")
    assert msg.endswith("line 1266: tag I-PER.NOM follows I-PER.NAM (IOB2 requires B-PER.NOM first)")
    msg = error(read_conll, root / "weiboNER.conll.train")  # the older release: not UTF-8
    assert msg.startswith(f"{root / 'weiboNER.conll.train'}: line 5873: not valid UTF-8 (byte 0xed")


def test_cluener(shared_data):
    root = shared_data / "zh" / "cluener2020"
    train, dev = read_span_jsonl(root / "train.json"), read_span_jsonl(root / "dev.json")
    assert (len(train), len(dev)) == (10_748, 1_343)
    first = train[0]
    assert first.text == "".join(first.tokens) and first.line == 1
    assert entities(first.tags) == {("company", 0, 3), ("name", 9, 11), ("name", 32, 34)}
    # Every span of dev comes back from the tags.
    for ex, line in zip(dev, (root / "dev.json").read_text(encoding="utf-8").splitlines(), strict=True):
        spans = json.loads(line)["label"]
        want = {(k, s, e) for k, v in spans.items() for places in v.values() for s, e in places}
        assert entities(ex.tags) == want
    check_tokens(train)
    # Train line 1507 nests two companies inside a book title: the outer span is kept, or it is an error.
    assert entities(train[1506].tags) == {("book", 15, 34)}
    msg = error(read_span_jsonl, root / "train.json", nested="error")
    assert "train.json: line 1507: span [16, 19] (company) overlaps [15, 34] (book)" in msg


# --------------------------------------------------------------------------- accepted quirks


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_bytes(b'\xef\xbb\xbfsentence\tlabel\r\nsay "hi\t1\r\n\r\nb\t0\r\n\r\n\r\n')
    assert read_text_classification(p) == [
        TextExample('say "hi', None, "1", 2),
        TextExample("b", None, "0", 4),
    ]
    c = tmp_path / "a.conll"
    c.write_bytes(
        b"\xef\xbb\xbf-DOCSTART- O\r\n\r\nEU B-ORG\r\nrejects O\r\n\r\n\r\nPeter B-PER\r\nBlackburn I-PER"
    )
    got = read_conll(c)
    assert [(ex.tokens, ex.tags, ex.line) for ex in got] == [
        (["EU", "rejects"], ["B-ORG", "O"], 3),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], 7),
    ]


def test_csv_quoting_and_jsonl(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('text,label\n"a, b",x\n"two\nlines",y\n\nc,x\n', encoding="utf-8")
    got = read_text_classification(p)
    assert [(e.text, e.label, e.line) for e in got] == [
        ("a, b", "x", 2),
        ("two\nlines", "y", 3),
        ("c", "x", 6),
    ]
    j = tmp_path / "a.jsonl"
    j.write_text('{"text": "a", "pair": "b", "label": 1}\n\n{"text": "c", "pair": "d", "label": 0}\n')
    assert read_text_classification(j) == [TextExample("a", "b", "1", 1), TextExample("c", "d", "0", 3)]


def test_untagged_conll_bioes_and_check_labels_mapping(tmp_path):
    p = tmp_path / "predict.txt"
    p.write_text("东\n京\n\nHello\n", encoding="utf-8")
    got = read_conll(p, tag_column=None)
    assert [(ex.tokens, ex.tags, ex.text) for ex in got] == [
        (["东", "京"], None, "东京"),
        (["Hello"], None, "Hello"),
    ]
    b = tmp_path / "bioes.txt"
    b.write_text("New B-LOC\nYork E-LOC\nis O\nJohn S-PER\nSmith S-PER\n")
    for scheme in ("auto", "bioes"):
        assert read_conll(b, scheme=scheme)[0].tags == ["B-LOC", "I-LOC", "O", "B-PER", "B-PER"]
    dev = read_conll(b)
    mapped = check_labels(dev, {"O": 0, "B-LOC": 1, "I-LOC": 2}, b, map_unknown_to="O")
    assert mapped[0].tags == ["B-LOC", "I-LOC", "O", "O", "O"] and dev[0].tags[3] == "B-PER"


def test_squad(tmp_path):
    doc = {
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "Paris is in France.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Where?",
                                "answers": [{"text": "France", "answer_start": 12}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(doc))
    assert read_squad(p) == [
        QAExample("q1", "Where?", "Paris is in France.", [{"text": "France", "answer_start": 12}], "T")
    ]


# --------------------------------------------------------------------------- malformed files

SQUAD_OK = {
    "context": "abc",
    "qas": [{"id": "q0", "question": "?", "answers": [{"text": "b", "answer_start": 1}]}],
}
SQUAD_NO_QUESTION = {
    "data": [{"paragraphs": [SQUAD_OK, {"context": "x", "qas": [{"id": "q1", "answers": []}]}]}]
}
SQUAD_NOT_THERE = {
    "data": [
        {
            "paragraphs": [
                {
                    "context": "abc",
                    "qas": [{"id": "q7", "question": "?", "answers": [{"text": "c", "answer_start": 1}]}],
                }
            ]
        }
    ]
}

tc, conll_, spans, squad = read_text_classification, read_conll, read_span_jsonl, read_squad
MALFORMED = [
    # (file name, content, reader, keyword arguments, expected message after "<path>: ")
    (
        "cols.tsv",
        b"sentence\tlabel\na\t1\nb\n",
        tc,
        {},
        "line 3: expected 2 columns (sentence, label), found 1",
    ),
    (
        "enc.tsv",
        b"sentence\tlabel\nok\t1\n\xff bad\t0\n",
        tc,
        {},
        "line 3: not valid UTF-8 (byte 0xff at byte 1 of the line); re-save the file as UTF-8",
    ),
    (
        "enc.conll",
        b"a O\n\nb O\nc\xc3 O\n",
        conll_,
        {},
        "line 4: not valid UTF-8 (byte 0xc3 at byte 2 of the line); re-save the file as UTF-8",
    ),
    (
        "stray.conll",
        b"EU B-ORG\nis O\nJohn I-PER\n",
        conll_,
        {"scheme": "iob2"},
        "line 3: tag I-PER follows O (IOB2 requires B-PER first)",
    ),
    ("empty.tsv", b"", tc, {}, "file is empty"),
    ("blank.conll", b"\n  \n\r\n", conll_, {}, "file is empty"),
    ("header_only.tsv", b"sentence\tlabel\n", tc, {}, "no examples: the file holds only a header row"),
    (
        "tagless.conll",
        b"EU NNP B-ORG\nrejects VBZ\n",
        conll_,
        {},
        "line 2: expected 3 columns like line 1, found 2",
    ),
    (
        "no_tags.conll",
        b"EU\nrejects\n",
        conll_,
        {},
        "line 1: no tag column (1 columns); tag_column=None: no tags",
    ),
    (
        "bad_tag.conll",
        b"EU B-ORG\n\nx O\ny X-PER\n",
        conll_,
        {},
        "line 4: tag 'X-PER' is not O, B-X, I-X, E-X or S-X",
    ),
    (
        "bioes.conll",
        b"a B-PER\nb O\n",
        conll_,
        {"scheme": "bioes"},
        "line 1: entity B-PER is not closed with E-PER",
    ),
    (
        "e_in_iob1.conll",
        b"a O\nb E-PER\n",
        conll_,
        {"scheme": "iob1"},
        "line 2: tag 'E-PER' is BIOES, not IOB1",
    ),
    (
        "digits.conll",
        b"\xe7\xa7\x910\tO\n\xe6\x8a\x80\tO\n",
        conll_,
        {"strip_digit_suffix": True},
        "line 2: no digit to strip from '技'",
    ),
    (
        "sts.tsv",
        b"sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\thigh\n",
        tc,
        {"regression": True},
        "line 3: regression label 'high' is not a finite number",
    ),
    ("text.tsv", b"sentence\tlabel\na\t1\n  \t0\n", tc, {}, "line 3: empty text"),
    (
        "name.tsv",
        b"sentence\tlabel\na\t1\n",
        tc,
        {"text_column": "text"},
        "line 1: text column 'text' not in the header (sentence, label)",
    ),
    (
        "index.tsv",
        b"a\t1\n",
        tc,
        {"text_column": 0, "label_column": 5},
        "line 1: label column 5 out of range: 2 columns",
    ),
    (
        "bad.jsonl",
        b'{"text": "a", "label": "x"}\n{"text": "b", "label": }\n',
        tc,
        {},
        "line 2: invalid JSON (Expecting value at column 24); expected one JSON object per line",
    ),
    (
        "list.jsonl",
        b'{"text": "a", "label": "x"}\n\n["b", "y"]\n',
        tc,
        {},
        "line 3: expected a JSON object, found an array",
    ),
    (
        "nolabel.jsonl",
        b'{"text": "a", "label": "x"}\n{"text": "b"}\n',
        tc,
        {},
        "line 2: missing field 'label'",
    ),
    (
        "span.json",
        '{"text": "叶老桂说", "label": {"name": {"叶老": [[0, 2]]}}}\n'.encode(),
        spans,
        {},
        "line 1: span '叶老' (name) at [0, 2] does not match the text there ('叶老桂'); ends are inclusive",
    ),
    (
        "cross.json",
        b'{"text": "abcdef", "label": {}}\n'
        b'{"text": "abcdef", "label": {"x": {"abc": [[0, 2]]}, "y": {"cd": [[2, 3]]}}}\n',
        spans,
        {"label_field": "label"},
        "line 2: span [2, 3] (y) overlaps [0, 2] (x)",
    ),
    (
        "squad1.json",
        json.dumps(SQUAD_NO_QUESTION).encode(),
        squad,
        {},
        "data[0].paragraphs[1].qas[0]: missing field 'question'",
    ),
    (
        "squad2.json",
        json.dumps(SQUAD_NOT_THERE).encode(),
        squad,
        {},
        "data[0].paragraphs[0].qas[0].answers[0]: answer 'c' of question 'q7' is not in the context "
        "at answer_start 1 (found 'b')",
    ),
    (
        "squad3.json",
        b'{"data": [\n  {"paragraphs": 3}\n]}',
        squad,
        {},
        "data[0].paragraphs: expected an array, found a number",
    ),
    (
        "squad4.json",
        b'{"data": [\n  {"paragraphs": []},\n]}',
        squad,
        {},
        "line 3: invalid JSON (Expecting value at column 1)",
    ),
]


@pytest.mark.parametrize("name,content,reader,kwargs,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file(tmp_path, name, content, reader, kwargs, expected):
    p = tmp_path / name
    p.write_bytes(content)
    assert error(reader, p, **kwargs) == f"{p}: {expected}"


def test_span_file_without_labels(tmp_path):
    # The first record has no label field, so the file is read as unlabelled: tags are None.
    p = tmp_path / "test.json"
    p.write_text('{"text": "a b"}\n{"text": "cd", "label": {"x": {"cd": [[0, 1]]}}}\n')
    got = read_span_jsonl(p)
    assert [(ex.tokens, ex.tags, ex.offsets) for ex in got] == [
        (["a", "b"], None, [(0, 1), (2, 3)]),
        (["c", "d"], None, [(0, 1), (1, 2)]),
    ]


@pytest.mark.parametrize("reader", [read_text_classification, read_conll, read_span_jsonl, read_squad])
def test_missing_file_and_directory(tmp_path, reader):
    assert error(reader, tmp_path / "nope.tsv") == f"{tmp_path / 'nope.tsv'}: file not found"
    assert error(reader, tmp_path) == f"{tmp_path}: is a directory, not a file"


def test_unknown_label_in_dev(tmp_path):
    train = tmp_path / "train.tsv"
    dev = tmp_path / "dev.tsv"
    train.write_text("sentence\tlabel\na\tyes\nb\tno\n")
    dev.write_text("sentence\tlabel\na\tyes\nb\tmaybe\n")
    label2id = {name: i for i, name in enumerate(label_vocab(read_text_classification(train)))}
    msg = error(check_labels, read_text_classification(dev), label2id, dev)
    assert msg == f"{dev}: line 3: label 'maybe' never occurs in the training data (training labels: no, yes)"
    conll = tmp_path / "dev.conll"
    conll.write_text("a O\n\nb O\nc B-XYZ\n")
    msg = error(check_labels, read_conll(conll), {"O": 0}, conll)
    assert msg == f"{conll}: line 3: tag 'B-XYZ' (token 2, 'c') never occurs in the training data " + (
        "(training labels: O)"
    )


# --------------------------------------------------------------------------- round trips

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Cell text: anything but tab and line ends (including U+2028, \x0b, \x1c: not line ends here).
cell = st.text(st.characters(exclude_characters="\t\n\r", exclude_categories=["Cs"]), min_size=1).filter(
    lambda s: s.strip() and not s.startswith("\ufeff")
)
label = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=5)


@FAST
@given(
    rows=st.lists(st.tuples(cell, cell, label), min_size=1, max_size=8), crlf=st.booleans(), bom=st.booleans()
)
def test_tsv_round_trip(tmp_path, rows, crlf, bom):
    end = "\r\n" if crlf else "\n"
    text = end.join(["sentence1\tsentence2\tlabel", *("\t".join(r) for r in rows)]) + end
    p = tmp_path / "rt.tsv"
    p.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    got = read_text_classification(p)
    assert [(e.text, e.pair, e.label) for e in got] == rows
    assert [e.line for e in got] == list(range(2, len(rows) + 2))


# (A BOM that begins a line is dropped by the readers, as joined files leave one: no token starts so.)
token = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=6).filter(
    lambda s: not any(c.isspace() for c in s) and s != "-DOCSTART-" and not s.startswith("\ufeff")
)
chunk = st.one_of(st.just([]), st.tuples(st.sampled_from(["PER", "LOC", "MISC"]), st.integers(1, 3)))


def iob2(chunks) -> list[str]:
    return [t for c in chunks for t in (["O"] if not c else [f"B-{c[0]}"] + [f"I-{c[0]}"] * (c[1] - 1))]


sentence = (
    st.lists(chunk, min_size=1, max_size=6)
    .map(iob2)
    .flatmap(lambda tags: st.tuples(st.lists(token, min_size=len(tags), max_size=len(tags)), st.just(tags)))
)


@FAST
@given(
    sentences=st.lists(sentence, min_size=1, max_size=5), sep=st.sampled_from([" ", "\t"]), crlf=st.booleans()
)
def test_conll_round_trip(tmp_path, sentences, sep, crlf):
    end = "\r\n" if crlf else "\n"
    blocks = [end.join(f"{tok}{sep}X{sep}{tag}" for tok, tag in zip(*s, strict=True)) for s in sentences]
    p = tmp_path / "rt.conll"
    p.write_bytes((f"-DOCSTART-{sep}X{sep}O{end}{end}" + (end * 2).join(blocks) + end).encode("utf-8"))
    got = read_conll(p, scheme="iob2")
    assert [(ex.tokens, ex.tags) for ex in got] == [(list(t), list(g)) for t, g in sentences]
    check_tokens(got)
    assert [ex.tokens for ex in read_conll(p, tag_column=None)] == [list(t) for t, _ in sentences]


@FAST
@given(
    pieces=st.lists(
        st.tuples(st.text("甲乙丙 丁", min_size=1, max_size=4), st.booleans()), min_size=1, max_size=6
    )
)
def test_span_jsonl_round_trip(tmp_path, pieces):
    text, want, spans = "", set(), {}
    for piece, is_entity in pieces:
        if is_entity and piece.strip():
            s, e = len(text), len(text) + len(piece) - 1
            spans.setdefault(piece, []).append([s, e])
            want.add((s, e))
        text += piece + "。"
    p = tmp_path / "rt.json"
    p.write_text(
        json.dumps({"text": text, "label": {"x": spans}}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (ex,) = read_span_jsonl(p)
    assert ex.tokens == [c for c in text if not c.isspace()]
    check_tokens([ex])
    # Spans come back, trimmed of the spaces that are not tokens.
    got = {(ex.offsets[s][0], ex.offsets[e][1] - 1) for _, s, e in entities(ex.tags)}
    trimmed = {
        (
            s + len(text[s : e + 1]) - len(text[s : e + 1].lstrip()),
            e - len(text[s : e + 1]) + len(text[s : e + 1].rstrip()),
        )
        for s, e in want
    }
    assert got == trimmed


# --------------------------------------------------------------------------- the same through the CLI

FLAGS = {
    "scheme": "--scheme",
    "strip_digit_suffix": "--strip-digit-suffix",
    "regression": "--regression",
    "text_column": "--text-column",
    "label_column": "--label-column",
}
CLI_CASES = [m for m in MALFORMED if set(m[3]) <= set(FLAGS)]


def _cli_args(reader, kwargs) -> list[str]:
    task = {tc: "classify", conll_: "ner", spans: "ner", squad: "qa"}[reader]
    fmt = {tc: [], conll_: ["--format", "conll"], spans: ["--format", "spans"], squad: ["--format", "squad"]}
    args = ["finetune", "--task", task, *fmt[reader]]
    for k, v in kwargs.items():
        args += [FLAGS[k]] if v is True else [FLAGS[k], str(v)]
    return args


@pytest.mark.parametrize("name,content,reader,kwargs,expected", CLI_CASES, ids=[m[0] for m in CLI_CASES])
def test_malformed_file_through_the_cli(tmp_path, capsys, name, content, reader, kwargs, expected):
    """`bertkit finetune` on each malformed training file: one line naming the file and line,
    exit status 2, no traceback, no output directory."""
    from bertkit.cli import main

    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "out"
    args = [*_cli_args(reader, kwargs), "--model", str(tmp_path / "no-model"), "--train", str(bad)]
    assert main([*args, "--dev", str(bad), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"bertkit: error: {bad}: {expected}\n"
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_real_bad_files_through_the_cli(shared_data, tmp_path, capsys):
    """The old Weibo NER release (not UTF-8) and a dev label training never saw."""
    from bertkit.cli import main

    old = shared_data / "zh/weibo_ner/weiboNER.conll.train"
    args = [
        "finetune",
        "--task",
        "ner",
        "--format",
        "conll",
        "--model",
        str(tmp_path),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--train", str(old), "--dev", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bertkit: error: {old}: line 5873: not valid UTF-8") and "Traceback" not in err
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("sentence\tlabel\na\tyes\nb\tno\n")
    dev.write_text("sentence\tlabel\na\tyes\nb\tmaybe\n")
    args = ["finetune", "--task", "classify", "--model", str(tmp_path), "--output", str(tmp_path / "o")]
    assert main([*args, "--train", str(train), "--dev", str(dev)]) == 2
    assert "line 3: label 'maybe' never occurs in the training data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
