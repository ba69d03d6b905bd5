"""Evaluation metrics: classification (GLUE), regression (STS-B), entities (CoNLL NER), SQuAD v1.1.

Every function returns plain Python floats/ints/lists, so results go straight into metrics.json.

- classification and regression scores come from scikit-learn and scipy, not re-derived here;
- entity scores reproduce seqeval's default mode (= the conlleval script): `get_entities` is a port
  of `seqeval.metrics.sequence_labeling.get_entities`, quirks included. seqeval itself is only
  the test oracle (tests/test_metrics.py), never imported at run time;
- SQuAD EM/F1 follow the official v1.1 evaluate script line for line.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

# -----------------------------------------------------------------------------
# classification and regression


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], positive_label: str | None = None
) -> dict:
    """Accuracy, macro/micro/weighted F1, MCC, per-class P/R/F1, confusion matrix; `f1` of `positive_label`.

    `labels` fixes the order of `per_class` and of the confusion matrix (rows true, columns predicted)
    and must name every label that occurs: an unknown one is a bug upstream, so it raises.
    Precision/recall of a class that is never predicted (or never true) count as 0, not a warning,
    and macro F1 averages over all of `labels`, present or not (scikit-learn with `labels=`).
    """
    labels = list(labels)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no examples to score")
    unknown = (set(y_true) | set(y_pred)) - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(map(str, unknown))} are not in labels={labels}")
    if positive_label is not None and positive_label not in labels:
        raise ValueError(f"positive_label {positive_label!r} is not in labels={labels}")

    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    f1 = lambda average: float(skm.f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0))
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": f1("macro"),
        "micro_f1": f1("micro"),
        "weighted_f1": f1("weighted"),
        "mcc": _mcc(y_true, y_pred),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if positive_label is not None:  # binary tasks (MRPC, QQP) report the positive class's F1
        out["f1"] = out["per_class"][positive_label]["f1"]
    return out


def multilabel_metrics(
    y_true: Sequence[Sequence[str]],
    y_pred: Sequence[Sequence[str]],
    scores: np.ndarray,
    labels: Sequence[str],
) -> dict:
    """Multi-label scores, each scikit-learn's: micro/macro F1, precision and recall, samples F1,
    subset accuracy, Hamming loss, label ranking average precision (from `scores`, (N, L) in
    `labels` order), and per-label P/R/F1/support. A label never true and never predicted scores
    0 (zero_division=0, as for single-label); texts with no true label count in samples F1 as 1 when
    nothing is predicted for them and 0 otherwise (sklearn's zero_division=1 for empty rows), and
    LRAP gives them 1 (sklearn's convention)."""
    labels = list(labels)
    if len(y_true) != len(y_pred) or len(y_true) != len(scores):
        raise ValueError(f"{len(y_true)} true label sets, {len(y_pred)} predicted, {len(scores)} score rows")
    if not y_true:
        raise ValueError("no examples to score")
    index = {name: i for i, name in enumerate(labels)}
    t, p = _indicator(y_true, index), _indicator(y_pred, index)
    prf = lambda avg: skm.precision_recall_fscore_support(t, p, average=avg, zero_division=0)[:3]
    (mip, mir, mif), (map_, mar, maf) = prf("micro"), prf("macro")
    ps, rs, fs, ss = skm.precision_recall_fscore_support(t, p, average=None, zero_division=0)
    return {
        "micro_f1": float(mif),
        "micro_precision": float(mip),
        "micro_recall": float(mir),
        "macro_f1": float(maf),
        "macro_precision": float(map_),
        "macro_recall": float(mar),
        "samples_f1": float(skm.f1_score(t, p, average="samples", zero_division=1)),
        "subset_accuracy": float(skm.accuracy_score(t, p)),
        "hamming_loss": float(skm.hamming_loss(t, p)),
        "lrap": float(skm.label_ranking_average_precision_score(t, np.asarray(scores, dtype=np.float64))),
        "per_label": {
            name: {
                "precision": float(ps[i]),
                "recall": float(rs[i]),
                "f1": float(fs[i]),
                "support": int(ss[i]),
            }
            for i, name in enumerate(labels)
        },
    }


def _indicator(sets: Sequence[Sequence[str]], index: dict[str, int]) -> np.ndarray:
    """(N, L) 0/1 matrix of label sets; a label outside `index` is a bug upstream, so it raises."""
    out = np.zeros((len(sets), len(index)), dtype=np.int64)
    for row, names in enumerate(sets):
        unknown = [x for x in names if x not in index]
        if unknown:
            raise ValueError(f"labels {unknown} are not in labels={list(index)}")
        out[row, [index[x] for x in names]] = 1
    return out


def _mcc(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    # 0.0 when undefined (e.g. constant predictions); sklearn then also warns "A single label was
    # found" if only one class occurs at all, which is no problem here: silence it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.matthews_corrcoef(y_true, y_pred))


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """Pearson and Spearman correlation and mean squared error.

    A correlation is undefined when either side is constant (or has one item); scipy then returns
    nan. We report 0.0 instead: "no correlation shown" is the honest reading, 0.0 is valid JSON, and
    a nan would break model selection (every comparison with nan is False). `mse` is still exact.
    """
    a, b = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d and the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no examples to score")
    constant = a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0
    return {
        "pearson": 0.0 if constant else float(stats.pearsonr(a, b)[0]),
        "spearman": 0.0 if constant else float(stats.spearmanr(a, b)[0]),
        "mse": float(np.mean((a - b) ** 2)),
    }


# -----------------------------------------------------------------------------
# entities (NER): seqeval's default mode, which is conlleval's

# (previous prefix, current prefix) pairs that close / open a chunk, from seqeval's
# end_of_chunk / start_of_chunk; the type-change rule is applied separately below.
_ENDS = {("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")}
_STARTS = {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")}


def _split_tag(tag: str) -> tuple[str, str]:
    # seqeval's parse: the prefix is the first character (whatever it is) and the type is the text
    # after the first '-', or '_' if there is none -- so "O" has type "_", "B" is a B of type "_",
    # "PER" is prefix "P" with type "ER", and "B-I-X" has type "I-X".
    if not tag:
        raise ValueError("empty tag: every token needs a tag such as O, B-PER, I-PER")
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, start, end inclusive) of each chunk, exactly as seqeval's `get_entities` (default mode).

    Lenient like conlleval, so IOB1, IOB2 and BIOES all read right: an I- (or E-) after O or after
    another type opens a chunk instead of being dropped; a type change closes one; E- and S- close
    the chunk after them. Any other prefix opens or closes a chunk only on a change of type, and
    "." never does (seqeval's rules, taken literally).
    """
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0  # "" (not "_"): a bare tag like "X" opens at position 0
    parsed: dict[str, tuple[str, str]] = {}  # few distinct tags: parse each once (speed)
    for i, label in enumerate([*tags, "O"]):  # the trailing O closes the last chunk
        split = parsed.get(label)
        if split is None:
            split = parsed[label] = _split_tag(label)
        tag, type_ = split
        if (
            prev_tag in ("E", "S")
            or (prev_tag, tag) in _ENDS
            or (prev_tag != "O" and prev_tag != "." and prev_type != type_)
        ):
            chunks.append((prev_type, begin, i - 1))
        if (
            tag in ("B", "S")
            or (prev_tag, tag) in _STARTS
            or (tag != "O" and tag != "." and prev_type != type_)
        ):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    # zero denominators give 0, and F1 is computed from P and R in seqeval's operation order,
    # so the floats match it bit for bit (2*tp/(2*tp+fp+fn) can differ in the last place)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def token_accuracy(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> float:
    """Fraction of tokens whose tag is right (seqeval's `accuracy_score`); 0.0 when there are none."""
    _check_lengths(true_seqs, pred_seqs)
    n = sum(len(s) for s in true_seqs)
    correct = sum(
        t == p for ts, ps in zip(true_seqs, pred_seqs, strict=True) for t, p in zip(ts, ps, strict=True)
    )
    return correct / n if n else 0.0


def _check_lengths(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> None:
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(f"{len(true_seqs)} true sequences but {len(pred_seqs)} predicted ones")
    for i, (t, p) in enumerate(zip(true_seqs, pred_seqs, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sequence {i}: {len(t)} true tags but {len(p)} predicted tags")


def entity_metrics(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro precision/recall/F1 and `per_type` scores, as seqeval's default mode.

    An entity counts as correct only when type, start and end all match. `per_type` holds every type
    that is true or predicted (support = number of true entities). Also reports `token_accuracy`.
    """
    _check_lengths(true_seqs, pred_seqs)
    found: list[dict[str, set[tuple[int, int]]]] = []
    for seqs in (true_seqs, pred_seqs):
        # one pass over all sentences, each followed by "O", is what seqeval does with a list of
        # lists: chunks never cross sentences and offsets stay unique
        flat = [tag for seq in seqs for tag in (*seq, "O")]
        by_type: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for type_, start, end in get_entities(flat):
            by_type[type_].add((start, end))
        found.append(by_type)
    true_by_type, pred_by_type = found

    per_type, n_tp, n_pred, n_true = {}, 0, 0, 0
    for type_ in sorted(true_by_type.keys() | pred_by_type.keys()):
        t, p = true_by_type.get(type_, set()), pred_by_type.get(type_, set())
        tp = len(t & p)
        prec, rec, f1 = _prf(tp, len(p), len(t))
        per_type[type_] = {"precision": prec, "recall": rec, "f1": f1, "support": len(t)}
        n_tp, n_pred, n_true = n_tp + tp, n_pred + len(p), n_true + len(t)
    prec, rec, f1 = _prf(n_tp, n_pred, n_true)
    return {
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "per_type": per_type,
        "token_accuracy": token_accuracy(true_seqs, pred_seqs),
    }


# -----------------------------------------------------------------------------
# SQuAD v1.1 (the official evaluate-v1.1.py, same operations in the same order)

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as the script: "«" or "’" stay
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _squad_f1(prediction: str, truth: str) -> float:
    pred_tokens = squad_normalize_answer(prediction).split()
    truth_tokens = squad_normalize_answer(truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if num_same == 0:  # also covers an empty prediction or an answer made only of articles
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_em_f1(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in percent (0-100), each the max over a question's ground truths.

    Questions are those of `references`; one without a prediction scores 0 (the script's
    "Unanswered question" case) and predictions for unknown ids are ignored.
    """
    if not references:
        raise ValueError("no reference questions to score")
    exact_match = f1 = 0.0
    for qid, truths in references.items():
        if not truths:
            raise ValueError(f"question {qid!r} has no ground-truth answer (SQuAD v1.1 always has one)")
        if qid not in predictions:
            continue
        pred = predictions[qid]
        exact_match += max(squad_normalize_answer(pred) == squad_normalize_answer(t) for t in truths)
        f1 += max(_squad_f1(pred, t) for t in truths)
    total = len(references)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
