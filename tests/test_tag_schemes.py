"""NER tag schemes: every scheme read back to the same IOB2 tags and seqeval scores, detection,
one-line errors for inconsistent and mixed files, and `--output-scheme` writing predictions and
reports in the training file's scheme."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report
from seqeval.scheme import BILOU, IOB2, IOBES, IOE2

from bertkit.cli import main
from bertkit.data import schemes
from bertkit.data.conll import read_conll
from bertkit.data.schemes import detect as detect_scheme
from bertkit.errors import BertkitError

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TYPES = ("PER", "LOC", "ORG")


def write_conll(path, sentences: list[tuple[list[str], list[str]]]) -> None:
    path.write_text("\n\n".join("\n".join(map(" ".join, zip(*s, strict=True))) for s in sentences) + "\n")


def error(call, *args, **kwargs) -> str:
    with pytest.raises(BertkitError) as e:
        call(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def report(gold: list[list[str]], pred: list[list[str]], **kw) -> str:
    """seqeval's report as JSON text (so that NaN, for no entities at all, equals NaN)."""
    scores = classification_report(gold, pred, output_dict=True, zero_division=0, **kw)
    return json.dumps(scores, sort_keys=True, default=int)


# --------------------------------------------------------------------------- round trips

# An entity (type, length) or None for an O token; consecutive entities may share a type.
piece = st.one_of(st.none(), st.tuples(st.sampled_from(TYPES), st.integers(1, 4)))


def iob2_of(pieces) -> list[str]:
    return [t for p in pieces for t in (["O"] if p is None else [f"B-{p[0]}"] + [f"I-{p[0]}"] * (p[1] - 1))]


def variant(tags: list[str], rng: random.Random) -> list[str]:
    """A prediction-like IOB2 variant: some entities retyped, some dropped, some split."""
    out = list(tags)
    for i, t in enumerate(out):
        r = rng.random()
        if t[0] == "B" and r < 0.2:
            out[i] = "B-" + rng.choice(TYPES)
            j = i + 1
            while j < len(out) and out[j][0] == "I" and out[j][2:] == t[2:]:
                out[j] = "I-" + out[i][2:]
                j += 1
        elif t[0] == "I" and r < 0.2:
            out[i] = "B" + t[1:]
        elif t == "O" and r < 0.1:
            out[i] = "B-" + rng.choice(TYPES)
    return out


@FAST
@given(
    sentences=st.lists(st.lists(piece, min_size=1, max_size=7).map(iob2_of), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_every_scheme_reads_back_the_same_tags_and_scores(tmp_path, sentences, seed):
    rng = random.Random(seed)
    preds = [variant(s, rng) for s in sentences]
    want = report(sentences, preds)
    for name in schemes.NAMES:
        written = [schemes.from_iob2(s, name) for s in sentences]
        path = tmp_path / f"{name}.conll"
        write_conll(path, [([f"w{i}" for i in range(len(s))], s) for s in written])
        for scheme in ("auto", name):
            got = [ex.tags for ex in read_conll(path, scheme=scheme)]
            assert got == sentences, (name, scheme, written)
            assert report(got, preds) == want
        # The written tags are valid in the scheme by seqeval's own reading too (strict mode).
        if name in ("iob2", "ioe", "bioes", "bilou"):
            scheme_cls = {"iob2": IOB2, "ioe": IOE2, "bioes": IOBES, "bilou": BILOU}[name]
            pred_written = [schemes.from_iob2(p, name) for p in preds]
            strict = report(written, pred_written, mode="strict", scheme=scheme_cls)
            assert strict == report(sentences, preds, mode="strict", scheme=IOB2)
    # Aliases name the same conversion.
    for alias, name in schemes.ALIASES.items():
        assert [schemes.from_iob2(s, alias) for s in sentences] == [
            schemes.from_iob2(s, name) for s in sentences
        ]


def test_known_conversions():
    tags = ["B-PER", "I-PER", "I-PER", "B-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]
    assert schemes.from_iob2(tags, "bmes") == [
        "B-PER", "M-PER", "E-PER", "S-PER", "O", "S-LOC", "B-LOC", "E-LOC", "S-ORG",
    ]  # fmt: skip
    assert schemes.from_iob2(tags, "bilou") == [
        "B-PER", "I-PER", "L-PER", "U-PER", "O", "U-LOC", "B-LOC", "L-LOC", "U-ORG",
    ]  # fmt: skip
    assert schemes.from_iob2(tags, "iob1") == [
        "I-PER", "I-PER", "I-PER", "B-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG",
    ]  # fmt: skip
    assert schemes.from_iob2(tags, "ioe") == [
        "I-PER", "I-PER", "E-PER", "E-PER", "O", "E-LOC", "I-LOC", "E-LOC", "E-ORG",
    ]  # fmt: skip
    # An I- that cannot continue (an unconstrained decoder's) begins an entity, as seqeval reads it.
    assert schemes.from_iob2(["O", "I-PER", "I-LOC"], "bioes") == ["O", "S-PER", "S-LOC"]
    # IOE1 (E- only before an adjacent entity of the same type) reads as well as IOE2.
    ioe1 = ["I-PER", "E-PER", "I-PER", "O", "I-LOC"]
    assert schemes.to_iob2([(1, ioe1)], "ioe", "f") == "ioe"
    assert ioe1 == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert error(schemes.canonical, "bieos").startswith("unknown tag scheme 'bieos'; expected auto, iob1")


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "tags,scheme",
    [
        (["B-X", "M-X", "E-X", "O", "S-Y"], "bmes"),
        (["B-X", "E-X", "S-Y"], "bioes"),  # BMES with no entity over two tokens: the same tags
        (["S-Y", "O"], "bioes"),
        (["B-X", "I-X", "L-X", "O"], "bilou"),
        (["U-X", "O"], "bilou"),
        (["I-X", "E-X", "E-Y"], "ioe"),
        (["E-X"], "ioe"),
        (["I-X", "I-X", "B-X", "O", "I-Y"], "iob1"),
        (["B-X", "I-X", "O", "B-Y"], "iob2"),
        (["O", "O"], "iob2"),
    ],
)
def test_detection(tags, scheme):
    assert detect_scheme([tags]) == scheme


@pytest.mark.parametrize(
    "tags,scheme",
    [
        ("B-PER M-PER E-PER O S-LOC", "bmes"),
        ("B-PER I-PER L-PER O U-LOC", "bilou"),
        ("I-PER I-PER E-PER O E-LOC", "ioe"),
        ("B-PER I-PER E-PER O S-LOC", "bioes"),
    ],
)
def test_read_as_detected_and_logged(tmp_path, caplog, tags, scheme):
    path = tmp_path / "train.txt"
    write_conll(path, [([f"w{i}" for i in range(5)], tags.split())])
    with caplog.at_level(logging.INFO, logger="bertkit"):
        (ex,) = read_conll(path)
    assert ex.scheme == scheme and ex.tags == ["B-PER", "I-PER", "I-PER", "O", "B-LOC"]
    infos = [r.getMessage() for r in caplog.records if r.name == "bertkit" and r.levelno == logging.INFO]
    assert infos == [f"{path}: tags read as {scheme.upper()} (detected; --tag-scheme forces one)"]
    assert read_conll(path, scheme=scheme)[0].scheme == scheme


# --------------------------------------------------------------------------- bad files

BAD = [
    # (tags of one sentence from line 1, scheme, message after "<path>: ")
    ("O M-NAME E-NAME", "bmes", "line 2: tag M-NAME follows O (BMES requires B-NAME)"),
    ("B-NAME M-NAME O", "bmeos", "line 2: entity M-NAME is not closed with E-NAME"),
    ("O L-PER", "bilou", "line 2: tag L-PER follows O (BILOU requires B-PER)"),
    ("B-PER L-LOC", "biluo", "line 1: entity B-PER is not closed with L-PER"),
    ("B-PER I-PER O", "bilou", "line 2: entity I-PER is not closed with L-PER"),
    ("B-PER M-PER E-PER", "bioes", "line 2: tag 'M-PER' is BMES, not BIOES"),
    ("B-PER I-PER E-PER", "bmes", "line 2: tag 'I-PER' is not BMES (its tags are B-X, M-X, E-X, S-X and O)"),
    ("U-PER O", "iob2", "line 1: tag 'U-PER' is BILOU, not IOB2"),
    ("B-PER E-PER", "ioe", "line 1: tag 'B-PER' is not IOE (its tags are I-X, E-X and O)"),
    ("S-PER O", "bilou", "line 1: tag 'S-PER' is BIOES, not BILOU"),
    # auto: mixed schemes ("~" for "mixes tag schemes: ")
    ("B-A M-A L-A", "auto", "line 3: tag 'L-A' ~M- tags (first at line 2) are BMES, which has no L- tags"),
    ("U-A O S-B", "auto", "line 3: tag 'S-B' ~U- tags (first at line 1) are BILOU, which has no S- tags"),
    (
        "B-A I-A E-A O B-B M-B",
        "auto",
        "line 2: tag 'I-A' ~M- tags (first at line 6) are BMES, which has no I- tags",
    ),
    (
        "B-A E-A O B-B L-B",
        "auto",
        "line 2: tag 'E-A' ~L- tags (first at line 5) are BILOU, which has no E- tags",
    ),
]


@pytest.mark.parametrize("tags,scheme,expected", BAD, ids=[f"{b[1]}:{b[0]}" for b in BAD])
def test_inconsistent_files_name_file_and_line(tmp_path, tags, scheme, expected):
    path = tmp_path / "bad.conll"
    tags = tags.split()
    write_conll(path, [([f"w{i}" for i in range(len(tags))], tags)])
    assert error(read_conll, path, scheme=scheme) == f"{path}: {expected.replace('~', 'mixes tag schemes: ')}"


def test_auto_forgives_entities_begun_inside_with_one_warning(tmp_path, caplog):
    path = tmp_path / "stray.conll"
    write_conll(path, [(["a", "b", "c"], ["O", "M-X", "E-X"]), (["d", "e"], ["M-Y", "S-X"])])
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        got = [ex.tags for ex in read_conll(path)]
    assert got == [["O", "B-X", "I-X"], ["B-Y", "B-X"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path}: 2 entities begin with M-/E- (first at line 2); read as B- "
        "(scheme='bmes' makes this an error)"
    ]


def test_bmes_file_through_the_cli_and_both_flag_names(tmp_path, capsys):
    """The issue's file: finetune stopped at line 2 of a BMES file; now a forced wrong scheme
    and a mixed file are each one line naming the file and line, exit 2, via either flag."""
    bad = tmp_path / "train.bmes"
    write_conll(bad, [(["张", "三", "丰"], ["B-NAME", "M-NAME", "E-NAME"])])
    mixed = tmp_path / "mixed.bmes"
    write_conll(mixed, [(["张", "三", "丰", "李"], ["B-NAME", "M-NAME", "E-NAME", "U-NAME"])])
    base = [
        "finetune",
        "--task",
        "ner",
        "--model",
        str(tmp_path / "no-model"),
        "--output",
        str(tmp_path / "o"),
    ]
    for flag in ("--tag-scheme", "--scheme"):
        assert main([*base, "--train", str(bad), "--dev", str(bad), flag, "bioes"]) == 2
        assert capsys.readouterr().err == f"bertkit: error: {bad}: line 2: tag 'M-NAME' is BMES, not BIOES\n"
    assert main([*base, "--train", str(mixed), "--dev", str(mixed)]) == 2
    assert capsys.readouterr().err == (
        f"bertkit: error: {mixed}: line 4: tag 'U-NAME' mixes tag schemes: M- tags (first at line 2) are "
        "BMES, which has no U- tags\n"
    )
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "--tag-scheme SCHEME, --scheme SCHEME" in out and "--output-scheme SCHEME" in out


# --------------------------------------------------------------------------- --output-scheme

ENTITIES = {
    "PER": [["peter", "smith", "jones"], ["john", "smith"], ["david"]],
    "LOC": [["new", "york", "city"], ["paris"]],
    "ORG": [["reuters"], ["union", "bank"]],
}
FILLERS = ["visited", "met", "in", "said", "the", "today", "and"]


def bmes_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Sentences of filler words and entities (up to three tokens, some adjacent), in BMES."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(2, 5)):
            if rng.random() < 0.5:
                words.append(rng.choice(FILLERS))
                tags.append("O")
                continue
            kind = rng.choice(list(ENTITIES))
            ws = rng.choice(ENTITIES[kind])
            words += ws
            tags += schemes.from_iob2([f"B-{kind}"] + [f"I-{kind}"] * (len(ws) - 1), "bmes")
        out.append((words, tags))
    return out


@pytest.fixture(scope="module")
def bmes_model(tiny_dir, tmp_path_factory):
    """A tiny NER model trained (to fit) on a BMES file, and that file."""
    d = tmp_path_factory.mktemp("bmes")
    train = d / "train.bmes"
    write_conll(train, bmes_sentences(48, 0))
    out = d / "model"
    args = f"finetune --task ner --model {tiny_dir} --train {train} --dev {train} --output {out} --lr 2e-3 "
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*args.split(), "--epochs", "15", "--batch-size", "16", "--quiet", "--seed", "0"]) == 0
    # the scheme read is named as the run starts
    assert f"{train}: tags read as BMES (trained as IOB2" in printed.getvalue()
    return out, train


def _predict(model, src, dest, *extra) -> list[dict]:
    assert main(["predict", "--model", str(model), "--input", str(src), "--output", str(dest), *extra]) == 0
    return [json.loads(x) for x in dest.read_text().splitlines()]


def test_predict_writes_the_training_files_scheme(bmes_model, tmp_path):
    model, train = bmes_model
    assert json.loads((model / "config.json").read_text())["bertkit"]["tag_scheme"] == "bmes"
    src = tmp_path / "in.txt"
    src.write_text("".join(" ".join(w) + "\n" for w, _ in bmes_sentences(12, 1)))
    iob2 = _predict(model, src, tmp_path / "iob2.jsonl")
    assert _predict(model, src, tmp_path / "given.jsonl", "--output-scheme", "iob2") == iob2
    auto = _predict(model, src, tmp_path / "auto.jsonl", "--output-scheme", "auto")
    bilou = _predict(model, src, tmp_path / "bilou.jsonl", "--output-scheme", "biluo")
    written = [t for row in auto for t in row["tags"]]
    assert any(t.startswith("M-") for t in written), written  # the model tags three-word entities
    assert {t[0] for t in written} <= set("BMESO")
    for a, b, c in zip(iob2, auto, bilou, strict=True):
        assert (a["entities"], a["text"]) == (b["entities"], b["text"]) == (c["entities"], c["text"])
        assert {x[0] for x in a["tags"]} <= set("BIO")  # by default IOB2, as before
        # read back strictly, each scheme's tags are the IOB2 predictions
        for row, scheme in ((b, "bmes"), (c, "bilou")):
            tags = list(row["tags"])
            schemes.to_iob2([(1, tags)], scheme, "predictions")
            assert tags == a["tags"]


def test_evaluate_reports_in_the_chosen_scheme(bmes_model, tmp_path):
    model, train = bmes_model
    # Dev: the training sentences with PER and LOC swapped, so that predictions are "wrong".
    swap = {"PER": "LOC", "LOC": "PER", "ORG": "ORG"}
    sentences = bmes_sentences(48, 0)[:16]
    dev_bmes = [(w, [t if t == "O" else t[:2] + swap[t[2:]] for t in ts]) for w, ts in sentences]
    write_conll(bmes := tmp_path / "dev.bmes", dev_bmes)
    dev_iob2 = [(w, [ex.tags for ex in read_conll(bmes)][i]) for i, (w, _) in enumerate(dev_bmes)]
    write_conll(iob2 := tmp_path / "dev.iob2", dev_iob2)
    for path, name, extra in ((bmes, "b", ["--output-scheme", "auto"]), (iob2, "i", [])):
        args = ["evaluate", "--model", str(model), "--data", str(path), "--output", str(tmp_path / name)]
        assert main([*args, *extra]) == 0
    metrics_b, metrics_i = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "bi")
    assert metrics_b == metrics_i and metrics_b["f1"] < 1
    rows_b, rows_i = (
        [json.loads(x) for x in (tmp_path / n / "errors.jsonl").read_text().splitlines()] for n in "bi"
    )
    assert rows_b and len(rows_b) == len(rows_i)
    lines = {ex.line: i for i, ex in enumerate(read_conll(bmes))}
    for b, i in zip(rows_b, rows_i, strict=True):
        assert b["tags"] == dev_bmes[lines[b["line"]]][1]  # the file's own gold tags, written back
        assert i["tags"] == dev_iob2[lines[b["line"]]][1]  # by default, IOB2 as before
        assert b["predicted"] == schemes.from_iob2(i["predicted"], "bmes")


def test_output_scheme_is_for_ner_models(head_dir, tmp_path, capsys):
    import bertkit

    model = head_dir(tmp_path / "clf", bertkit.BertForSequenceClassification, "classify", ["no", "yes"])
    src = tmp_path / "in.txt"
    src.write_text("a fine film\n")
    args = ["predict", "--model", str(model), "--input", str(src), "--output", str(tmp_path / "p.jsonl")]
    assert main([*args, "--output-scheme", "bmes"]) == 2
    assert (
        capsys.readouterr().err
        == "bertkit: error: --output-scheme applies to NER models, not classify ones\n"
    )
