"""Metrics against their references: seqeval (entities), scikit-learn/scipy, the official SQuAD v1.1 logic."""

from __future__ import annotations

import json
import math
import random
import re
import string
import time
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm

from bertkit.evaluation.metrics import (
    classification_metrics,
    entity_metrics,
    get_entities,
    regression_metrics,
    squad_em_f1,
    squad_normalize_answer,
    token_accuracy,
)

seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval (the test oracle) is not installed")
from seqeval.metrics.sequence_labeling import get_entities as seqeval_get_entities  # noqa: E402


def fast(n: int) -> settings:
    # no example database: tests must not leave a .hypothesis folder in the checkout
    return settings(max_examples=n, deadline=None, database=None)


TYPES = ["PER", "LOC", "MISC", "ORG"]
ALPHABETS = {
    "iob": ["O"] + [f"{p}-{t}" for p in "BI" for t in TYPES],  # IOB1 and IOB2 share the alphabet
    "bioes": ["O"] + [f"{p}-{t}" for p in "BIES" for t in TYPES],
}
# tags seqeval parses in odd ways: bare prefixes, unknown prefixes, "." and "O" with a type
ODD = ALPHABETS["bioes"] + ["B", "I", "E", "S", ".", "O-PER", "X-PER", "PER", ".-LOC", "B-I-PER", "BPER"]


def tags_of(alphabet: list[str], max_size: int = 30):
    return st.lists(st.sampled_from(alphabet), max_size=max_size)


def seqeval_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about the odd tags
        return seqeval_get_entities(list(tags))


# -----------------------------------------------------------------------------
# get_entities


@fast(1000)
@given(st.sampled_from(sorted(ALPHABETS)).flatmap(lambda name: tags_of(ALPHABETS[name])))
def test_get_entities_equals_seqeval(tags):
    assert get_entities(tags) == seqeval_entities(tags)


@fast(500)
@given(tags_of(ODD))
def test_get_entities_equals_seqeval_on_odd_tags(tags):
    assert get_entities(tags) == seqeval_entities(tags)


def test_get_entities_bulk_random():
    rng = random.Random(0)
    for _ in range(3000):
        alphabet = rng.choice([ALPHABETS["iob"], ALPHABETS["bioes"], ODD])
        tags = rng.choices(alphabet, k=rng.randint(0, 40))
        assert get_entities(tags) == seqeval_entities(tags)


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
        (["I-PER", "I-PER"], [("PER", 0, 1)]),  # I- without B- opens a chunk (IOB1)
        (["O", "I-PER", "B-PER"], [("PER", 1, 1), ("PER", 2, 2)]),
        (["B-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),  # a type change splits
        (["S-PER", "B-LOC", "E-LOC", "E-LOC"], [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]),
        (["B", "I", "O"], [("_", 0, 1)]),  # bare prefixes: type "_"
        ([], []),
    ],
)
def test_get_entities_known_cases(tags, expected):
    assert get_entities(tags) == expected == seqeval_entities(tags)


# -----------------------------------------------------------------------------
# entity_metrics


def read_conll_tags(path) -> list[list[str]]:
    sents, cur = [], []
    for line in path.read_text().splitlines():
        cols = line.split()
        if not cols:
            if cur:
                sents.append(cur)
            cur = []
        elif cols[0] != "-DOCSTART-":
            cur.append(cols[-1])
    return sents + ([cur] if cur else [])


@pytest.fixture(scope="module")
def conll_test(shared_data) -> list[list[str]]:
    path = shared_data / "en" / "conll2003" / "test.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return read_conll_tags(path)


def assert_same_as_seqeval(true_seqs, pred_seqs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning for types never predicted
        ref = {
            "precision": seqeval.precision_score(true_seqs, pred_seqs),
            "recall": seqeval.recall_score(true_seqs, pred_seqs),
            "f1": seqeval.f1_score(true_seqs, pred_seqs),
            "token_accuracy": seqeval.accuracy_score(true_seqs, pred_seqs) if any(true_seqs) else 0.0,
        }
        report = seqeval.classification_report(true_seqs, pred_seqs, output_dict=True)
    ours = entity_metrics(true_seqs, pred_seqs)
    for key, value in ref.items():
        assert ours[key] == value, key  # bit for bit, not approximately
        assert type(ours[key]) is float
    types = {k for k in report if not k.endswith(" avg")}
    assert set(ours["per_type"]) == types
    for name in types:
        got, want = ours["per_type"][name], report[name]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == (
            want["precision"],
            want["recall"],
            want["f1-score"],
            want["support"],
        ), name
    json.dumps(ours)
    return ours


def perturb(sents: list[list[str]], rate: float, alphabet: list[str], seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(alphabet) if rng.random() < rate else t for t in s] for s in sents]


def test_get_entities_on_conll_test(conll_test, shared_data):
    flat = [t for s in conll_test for t in s]
    assert sum(len(s) for s in conll_test) == len(flat) > 40_000
    assert get_entities(flat) == seqeval_entities(flat)
    for sent in conll_test:
        assert get_entities(sent) == seqeval_entities(sent)
    iob1 = shared_data / "en" / "conll2003" / "iob1" / "eng.testb"  # the original IOB1 tags
    if iob1.is_file():
        # IOB1 needs the sentence breaks: a sentence ending in I-MISC followed by one starting with
        # I-MISC would read as one entity, so join sentences with an "O" (as entity_metrics does)
        sents1 = read_conll_tags(iob1)
        joined1 = [t for s in sents1 for t in (*s, "O")]
        assert get_entities(joined1) == seqeval_entities(joined1)
        assert get_entities(joined1) == get_entities([t for s in conll_test for t in (*s, "O")])


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.2])
def test_entity_metrics_on_perturbed_conll(conll_test, rate):
    alphabet = ALPHABETS["iob"] if rate < 0.1 else ALPHABETS["bioes"]
    pred = perturb(conll_test, rate, alphabet, seed=int(rate * 100))
    ours = assert_same_as_seqeval(conll_test, pred)
    if rate == 0.0:
        assert ours["f1"] == ours["token_accuracy"] == 1.0


def test_entity_metrics_is_fast(conll_test):
    pred = perturb(conll_test, 0.1, ALPHABETS["iob"], seed=1)
    t0 = time.perf_counter()
    entity_metrics(conll_test, pred)
    assert time.perf_counter() - t0 < 1.0  # ~0.1 s for CoNLL test's 46k tokens


def sentence_pairs(alphabet: list[str]):
    # (true, pred) sentences of equal length; pred is true with random tags edited in (None = keep)
    def pair(n: int):
        tags = st.lists(st.sampled_from(alphabet), min_size=n, max_size=n)
        edits = st.lists(st.none() | st.sampled_from(alphabet), min_size=n, max_size=n)
        return st.tuples(tags, edits).map(
            lambda te: (te[0], [t if e is None else e for t, e in zip(*te, strict=True)])
        )

    return st.lists(st.integers(0, 12).flatmap(pair), min_size=1, max_size=8)  # seqeval rejects []


@fast(200)
@given(st.sampled_from(sorted(ALPHABETS)).flatmap(lambda name: sentence_pairs(ALPHABETS[name])))
def test_entity_metrics_equals_seqeval_random(pairs):
    true_seqs, pred_seqs = [list(t) for t, _ in pairs], [list(p) for _, p in pairs]
    assert_same_as_seqeval(true_seqs, pred_seqs)
    assert_same_as_seqeval(true_seqs, true_seqs)


def test_entity_metrics_edge_cases():
    none = entity_metrics([["O", "O"], []], [["O", "O"], []])
    assert (none["precision"], none["recall"], none["f1"], none["per_type"]) == (0.0, 0.0, 0.0, {})
    only_pred = assert_same_as_seqeval([["O", "O"]], [["B-PER", "O"]])
    assert only_pred["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # a chunk at the end of one sentence and an I- at the start of the next stay two entities
    split = assert_same_as_seqeval([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])
    assert split["per_type"]["PER"]["support"] == 2
    assert entity_metrics([], [])["token_accuracy"] == token_accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="sequence 1"):
        entity_metrics([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError):
        entity_metrics([["O"]], [])


# -----------------------------------------------------------------------------
# classification and regression


LABELS = ["neg", "neu", "pos"]


@fast(40)
@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn's own MCC, called below
@given(st.lists(st.tuples(st.sampled_from(LABELS), st.sampled_from(LABELS)), min_size=1, max_size=60))
def test_classification_metrics_equal_sklearn(pairs):
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    m = classification_metrics(y_true, y_pred, LABELS, positive_label="pos")
    assert m["accuracy"] == skm.accuracy_score(y_true, y_pred)
    for avg in ("macro", "micro", "weighted"):
        want = skm.f1_score(y_true, y_pred, labels=LABELS, average=avg, zero_division=0)
        assert m[f"{avg}_f1"] == pytest.approx(want, abs=1e-12)
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred), abs=1e-12)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=LABELS, zero_division=0)
    for i, name in enumerate(LABELS):
        assert m["per_class"][name] == {
            "precision": pytest.approx(p[i]),
            "recall": pytest.approx(r[i]),
            "f1": pytest.approx(f[i]),
            "support": s[i],
        }
    assert m["f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=["pos"], average=None, zero_division=0)[0]
    )
    # confusion matrix by hand: rows true, columns predicted, in LABELS order
    counts = Counter(pairs)
    assert m["confusion_matrix"] == [[counts[(t, q)] for q in LABELS] for t in LABELS]
    assert m["micro_f1"] == pytest.approx(m["accuracy"])  # every label listed: micro-F1 = accuracy
    json.dumps(m, allow_nan=False)  # plain Python numbers only


def test_classification_binary_and_errors():
    y_true = ["1", "0", "1", "1", "0", "0"]
    y_pred = ["1", "1", "1", "0", "0", "0"]
    m = classification_metrics(y_true, y_pred, ["0", "1"], positive_label="1")
    assert m["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, pos_label="1"))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert "f1" not in classification_metrics(y_true, y_pred, ["0", "1"])
    constant = classification_metrics(y_true, ["0"] * 6, ["0", "1"], positive_label="1")
    assert (constant["mcc"], constant["f1"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="not in labels"):
        classification_metrics(["0", "2"], ["0", "1"], ["0", "1"])
    with pytest.raises(ValueError, match="positive_label"):
        classification_metrics(y_true, y_pred, ["0", "1"], positive_label="yes")
    with pytest.raises(ValueError):
        classification_metrics(["0"], [], ["0", "1"])


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.uniform(0, 5, size=50).round(1)  # rounding makes ties, which Spearman must rank
    y_pred = (y_true + rng.normal(0, 1, size=50)).tolist()
    m = regression_metrics(y_true.tolist(), y_pred)
    assert m["pearson"] == pytest.approx(stats.pearsonr(y_true, y_pred)[0], abs=1e-12)
    assert m["spearman"] == pytest.approx(stats.spearmanr(y_true, y_pred)[0], abs=1e-12)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y_true, y_pred), abs=1e-12)
    json.dumps(m, allow_nan=False)


def test_regression_constant_inputs_give_zero():
    m = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert (m["pearson"], m["spearman"]) == (0.0, 0.0)
    assert m["mse"] == pytest.approx(2 / 3)
    assert regression_metrics([1.0], [1.5])["pearson"] == 0.0
    with pytest.raises(ValueError):
        regression_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        regression_metrics([], [])


# -----------------------------------------------------------------------------
# SQuAD v1.1: the official evaluate-v1.1.py, copied as the oracle


def official_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def official_exact_match_score(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def official_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue  # the script prints "Unanswered question ... will receive score 0."
                ground_truths = list(map(lambda x: x["text"], qa["answers"]))
                prediction = predictions[qa["id"]]
                exact_match += official_metric_max_over_ground_truths(
                    official_exact_match_score, prediction, ground_truths
                )
                f1 += official_metric_max_over_ground_truths(official_f1_score, prediction, ground_truths)
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


SQUAD_CASES = [  # (prediction or None for unanswered, ground truths)
    ("the Eiffel Tower", ["Eiffel Tower", "The Eiffel Tower."]),
    ("An apple a day", ["apple day"]),  # articles only removed as whole words
    ("Theory of an anthem", ["theory anthem", "the theory"]),  # "an" inside "anthem" stays
    ("", ["Denver Broncos"]),  # empty prediction
    ("the", ["a"]),  # both normalise to "": EM 1, F1 0 (no tokens in common)
    ("Denver Broncos", ["Broncos", "Denver", "Denver Broncos!!"]),  # max over ground truths
    ("1,000 dollars", ["1000 dollars"]),  # punctuation inside numbers disappears
    ("«Café» — naïve", ["café naïve"]),  # non-ASCII punctuation is kept, accents are not stripped
    ("ÉCOLE Normale", ["école normale"]),  # unicode lower-casing
    ("Straße", ["strasse"]),
    ("red red red", ["red blue"]),  # Counter intersection: repeated tokens count once per match
    ("  New\tYork\n City ", ["new york city"]),  # whitespace of any kind collapses
    ("O'Neil's", ["ONeils"]),
    ("the the the", ["the cat"]),
    ("Saint-Denis", ["saintdenis", "Saint Denis"]),
    (None, ["never answered"]),
]


WORDS = [
    "the",
    "The",
    "a",
    "an",
    "An",
    "cat",
    "Cat.",
    "dog's",
    "thé",
    "anthem",
    "«x»",
    "!",
    ",",
    "1,000",
    "Ünï",
]
answers = st.lists(st.sampled_from(WORDS), max_size=6).flatmap(
    lambda ws: st.lists(st.sampled_from([" ", "", "\t", "-", "  "]), min_size=len(ws), max_size=len(ws)).map(
        lambda seps: "".join(w + sep for w, sep in zip(ws, seps, strict=True))
    )
)


@fast(200)
@given(
    st.lists(
        st.tuples(st.none() | answers, st.lists(answers, min_size=1, max_size=3)), min_size=1, max_size=5
    )
)
def test_squad_em_f1_matches_official_random(cases):
    references = {f"q{i}": truths for i, (_, truths) in enumerate(cases)}
    predictions = {f"q{i}": p for i, (p, _) in enumerate(cases) if p is not None}
    qas = [{"id": q, "answers": [{"text": t} for t in ts]} for q, ts in references.items()]
    assert squad_em_f1(predictions, references) == official_evaluate(
        [{"paragraphs": [{"qas": qas}]}], predictions
    )


def test_squad_normalize_answer_matches_official():
    texts = [p for p, _ in SQUAD_CASES if p is not None] + [t for _, ts in SQUAD_CASES for t in ts]
    for text in texts + ["A an THE aN", "", "...", "the_end", "the-end"]:
        assert squad_normalize_answer(text) == official_normalize_answer(text)


def test_squad_em_f1_matches_official():
    references = {f"q{i}": truths for i, (_, truths) in enumerate(SQUAD_CASES)}
    predictions = {f"q{i}": p for i, (p, _) in enumerate(SQUAD_CASES) if p is not None}
    predictions["unknown"] = "ignored"
    dataset = [
        {
            "paragraphs": [
                {"qas": [{"id": q, "answers": [{"text": t} for t in ts]}]} for q, ts in references.items()
            ]
        }
    ]
    ours = squad_em_f1(predictions, references)
    assert ours == official_evaluate(dataset, predictions)  # exactly: same operations, same order
    assert 0 < ours["exact_match"] < ours["f1"] < 100
    # and one case at a time, so a wrong score points at its case
    for qid in predictions.keys() & references.keys():
        one = squad_em_f1({qid: predictions[qid]}, {qid: references[qid]})
        dataset = [
            {"paragraphs": [{"qas": [{"id": qid, "answers": [{"text": t} for t in references[qid]]}]}]}
        ]
        assert one == official_evaluate(dataset, predictions), qid
    perfect = squad_em_f1({"a": "x"}, {"a": ["X."]})
    assert perfect == {"exact_match": 100.0, "f1": 100.0}
    assert not math.isnan(squad_em_f1({}, {"a": ["x"]})["f1"])
    with pytest.raises(ValueError):
        squad_em_f1({}, {})
    with pytest.raises(ValueError):
        squad_em_f1({"a": "x"}, {"a": []})
