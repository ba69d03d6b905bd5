"""Multi-label classification: reading label lists, the loss, thresholds, metrics against brute
force, and a trained directory that transformers, predict, the pipeline, the server and the ONNX
backend all answer alike."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import bertkit
from bertkit.cli import main
from bertkit.data.labels import LabelSets
from bertkit.errors import BertkitError
from bertkit.evaluation.metrics import multilabel_metrics
from bertkit.tasks import registry
from bertkit.tasks.multilabel import (
    SHRINK,
    MultiLabelTask,
    constant_loss,
    global_threshold,
    label_losses,
    per_label_thresholds,
    tuned_thresholds,
)

LABELS = ["animal", "food", "weather"]
WORDS = {
    "animal": ["cat", "dog", "horse"],
    "food": ["bread", "apple", "cheese"],
    "weather": ["rain", "snow", "wind"],
}
FILLER = ["the", "a", "was", "on", "and", "very", "today", "we", "saw", "some"]


def _texts(n: int, seed: int) -> list[tuple[str, list[str]]]:
    """Texts whose labels are the kinds of keyword they hold (none, one or several)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        labels = [x for x in LABELS if rng.random() < 0.35]
        words = [rng.choice(WORDS[x]) for x in labels] + rng.sample(FILLER, 4)
        rng.shuffle(words)
        out.append((" ".join(words), labels))
    return out


def _jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": t, "labels": ls}) + "\n" for t, ls in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- reading


def test_label_lists_read_from_every_format(tmp_path):
    names = tmp_path / "emotions.txt"
    names.write_text("joy\nanger\n\nfear\n", encoding="utf-8")
    tsv = tmp_path / "ids.tsv"
    tsv.write_text("happy day\t0\tc1\nso mad\t1,0\tc2\nnothing\t\tc3\n", encoding="utf-8")
    opts = {"multi_label": True, "text_column": "0", "label_column": "1", "labels_file": str(names)}
    got = registry.load_examples("classify", tsv, **opts)
    assert [e.label for e in got] == [("joy",), ("anger", "joy"), ()]
    csv = tmp_path / "n.csv"
    csv.write_text('text,tags\n"a, b",fear|joy\nc,\n', encoding="utf-8")
    opts = {"multi_label": True, "text_column": "text", "label_column": "tags", "label_separator": "|"}
    got = registry.load_examples("classify", csv, **opts)
    assert [(e.text, e.label) for e in got] == [("a, b", ("fear", "joy")), ("c", ())]
    js = _jsonl(tmp_path / "x.jsonl", [("one", ["b", "a"]), ("two", [])])
    assert [e.label for e in registry.load_examples("classify", js, multi_label=True)] == [("b", "a"), ()]
    cell = tmp_path / "j.tsv"
    cell.write_text('text\tlabel\nx\t["a", "b"]\n', encoding="utf-8")
    assert registry.load_examples("classify", cell, multi_label=True)[0].label == ("a", "b")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("x\t7\n", "line 1: label id 7 out of range: {names} has 2 labels (ids 0-1)"),
        ("x\t0\ny\tsad\n", "line 2: label 'sad' is not in {names} (joy, anger)"),
        ('x\t["joy", \n', "line 1: malformed JSON list of labels (Expecting value at column 9)"),
    ],
)
def test_bad_labels_name_file_and_line(tmp_path, content, message):
    names = tmp_path / "names.txt"
    names.write_text("joy\nanger\n", encoding="utf-8")
    data = tmp_path / "d.tsv"
    data.write_text(content, encoding="utf-8")
    opts = {"multi_label": True, "text_column": "0", "label_column": "1", "labels_file": str(names)}
    with pytest.raises(BertkitError) as e:
        registry.load_examples("classify", data, **opts)
    assert str(e.value) == f"{data}: " + message.format(names=names)


def test_label_set_edge_cases():
    sets = LabelSets(";", ("0", "a"), "the model's labels")
    assert sets.parse("0;1", 1, "f") == ("0", "a")  # a name that is a number stays a name
    assert sets.parse(" a ; a ;", 1, "f") == ("a",)  # trimmed, once each, empty parts dropped
    with pytest.raises(BertkitError, match=r"line 4: labels must be a list of names or ids, found an object"):
        sets.parse({"a": 1}, 4, "f")
    with pytest.raises(BertkitError, match=r"line 2: a label must be a name or an id, found null"):
        sets.parse(["a", None], 2, "f")


def _cli_err(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_cli_bad_multilabel_input_is_one_line(tiny_dir, tmp_path, capsys):
    train = _jsonl(tmp_path / "t.jsonl", _texts(20, 0))
    base = f"finetune --task classify --multi-label --model {tiny_dir} --train {train} --dev {train} --quiet"
    out = f"--output {tmp_path / 'o'}"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    assert _cli_err(capsys, f"{base} {out} --labels {empty}".split()).endswith(f"{empty}: file is empty")
    err = _cli_err(capsys, f"{base} {out} --regression".split())
    assert err.endswith("--multi-label and --regression exclude each other")
    scores = tmp_path / "scores.tsv"
    scores.write_text("text\tlabel\ngood\t0.75\nbad\t0.1\n", encoding="utf-8")
    err = _cli_err(capsys, f"{base.replace(str(train), str(scores))} {out}".split())
    assert err.endswith(f"{scores}: line 2: the label column holds numbers like 0.1: a regression target, "
                        "not labels (drop --multi-label; pass --regression)")  # fmt: skip
    th = tmp_path / "th.tsv"
    th.write_text("animal\t0.3\nfood\t0.4\nplants\t0.2\n", encoding="utf-8")
    err = _cli_err(capsys, f"{base} {out} --thresholds {th}".split())
    assert err.endswith(f"{th}: line 3: 'plants' is not one of the model's labels (animal, food, weather)")
    th.write_text("animal\t0.3\nfood\t0.4\n", encoding="utf-8")
    assert _cli_err(capsys, f"{base} {out} --thresholds {th}".split()).endswith(
        f"{th}: no threshold for labels weather"
    )
    th.write_text("animal\t0.3\nfood\t1.5\nweather\t0.5\n", encoding="utf-8")
    err = _cli_err(capsys, f"{base} {out} --thresholds {th}".split())
    assert err.endswith(f"{th}: line 2: threshold of 'food' must be between 0 and 1, found '1.5'")
    err = _cli_err(capsys, f"finetune --task classify --multi-label --model {tiny_dir} --train {tmp_path} "
                           f"--dev {train} {out} --quiet".split())  # fmt: skip
    assert "a folder per label gives each text one label" in err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- loss, thresholds, metrics


def test_loss_is_transformers_bce_and_pos_weight_weighs_positives():
    logits, labels = torch.randn(5, 3), (torch.rand(5, 3) > 0.5).float()

    class Fixed(torch.nn.Module):
        def forward(self, *args):
            return type("Out", (), {"logits": logits})

    task = MultiLabelTask(LABELS, pos_weight=None, label_loss="bce")  # plain BCE
    batch = {"input_ids": None, "attention_mask": None, "token_type_ids": None, "labels": labels}
    want = torch.nn.BCEWithLogitsLoss()(logits, labels)  # transformers' multi-label loss
    assert task.loss(Fixed(), batch) == pytest.approx(float(want), rel=1e-6)
    task.pos_weight = [2.0, 1.0, 3.0]
    w = torch.tensor(task.pos_weight)
    by_hand = -(w * labels * logits.sigmoid().log() + (1 - labels) * (1 - logits.sigmoid()).log()).mean()
    assert task.loss(Fixed(), batch) == pytest.approx(float(by_hand), rel=1e-5)


@pytest.mark.parametrize("kind", ["focal", "asymmetric"])
def test_focal_and_asymmetric_losses_by_their_papers_formulas(kind):
    logits = torch.randn(6, 4, dtype=torch.float64) * 4
    target = torch.tensor([[1, 0, 0, 1], [0, 0, 1, 0]] * 3, dtype=torch.float64)
    target[5] = torch.tensor([0.3, 0.9, 0.0, 1.0])  # soft targets (distillation) too
    w = torch.tensor([1.0, 30.0, 2.0, 1.0], dtype=torch.float64)
    p = 1 / (1 + np.exp(-logits.numpy()))
    t = target.numpy()
    if kind == "focal":  # Lin et al. 2017, gamma 2, no alpha
        pos, neg = (1 - p) ** 2 * np.log(p), p**2 * np.log(1 - p)
    else:  # Ridnik et al. 2021: gamma+ 0, gamma- 4, probability shifted by m = 0.05 on negatives
        pm = np.maximum(p - 0.05, 0)
        pos, neg = np.log(p), pm**4 * np.log(1 - pm)
    want = -(t * w.numpy() * pos + (1 - t) * neg)
    np.testing.assert_allclose(label_losses(logits, target, w, kind).numpy(), want, rtol=1e-9, atol=1e-12)
    bce = label_losses(logits, target, w, "bce")
    assert torch.allclose(bce, torch.nn.BCEWithLogitsLoss(pos_weight=w, reduction="none")(logits, target))
    task = MultiLabelTask(LABELS + ["x"], pos_weight=w.tolist(), label_loss=kind)
    batch = {"labels": target}
    assert float(task.loss_from(None, logits, batch)) == pytest.approx(want.mean(-1).mean(), rel=1e-6)
    with pytest.raises(BertkitError, match="label loss must be one of bce, focal, asymmetric"):
        MultiLabelTask(LABELS, label_loss="hinge")


def test_pos_weight_auto_is_negatives_over_positives_clipped():
    task = MultiLabelTask(LABELS, pos_weight="auto", label_loss="bce")
    hot = [(1.0, 0.0, 0.0)] * 2 + [(0.0, 0.0, 1.0)] * 98
    task.prepare([{"labels": h} for h in hot], 8)
    assert task.pos_weight == [30.0, 30.0, 1.0]  # 98/2 clipped to 30; no positive: 100/1 clipped; 2/98 -> 1
    for loss in ("asymmetric", "focal"):  # they focus on hard examples themselves: auto is no weight
        task = MultiLabelTask(LABELS, label_loss=loss)
        task.prepare([{"labels": h} for h in hot], 8)
        assert task.pos_weight is None
    task = MultiLabelTask(LABELS, pos_weight="sqrt")
    task.prepare([{"labels": h} for h in [(1.0, 0.0, 0.0)] * 4 + [(0.0, 0.0, 1.0)] * 96], 8)
    assert task.pos_weight == [pytest.approx(24**0.5, abs=1e-4), 10.0, 1.0]  # sqrt(96/4); sqrt(100/1); 1


def _f1(p: np.ndarray, t: np.ndarray) -> float:
    return float(skm.f1_score(t, p, zero_division=0))


def test_per_label_thresholds_reach_the_brute_force_best_f1():
    rng = np.random.default_rng(0)
    truth = (rng.random((60, 4)) < [0.5, 0.2, 0.05, 0.0]).astype(np.int64)
    probs = np.clip(truth * 0.3 + rng.random((60, 4)) * 0.7, 0, 1).round(2)  # ties included
    got = per_label_thresholds(probs, truth)
    for j in range(4):
        if truth[:, j].sum() == 0:
            assert got[j] == 0.5
            continue
        best = max(_f1((probs[:, j] >= c).astype(int), truth[:, j]) for c in np.unique(probs[:, j]))
        assert _f1((probs[:, j] >= got[j]).astype(int), truth[:, j]) == pytest.approx(best)
    (x,) = set(global_threshold(probs, truth))
    macro = lambda c: skm.f1_score(truth, (probs >= c).astype(int), average="macro", zero_division=0)  # noqa: E731
    assert macro(x) == pytest.approx(max(macro(c) for c in np.round(np.arange(0.01, 1.0, 0.01), 2)))


def test_multilabel_metrics_by_brute_force():
    rng = random.Random(3)
    true = [tuple(x for x in LABELS if rng.random() < 0.4) for _ in range(40)]
    pred = [tuple(x for x in LABELS if rng.random() < 0.4) for _ in range(40)]
    scores = np.array([[rng.random() for _ in LABELS] for _ in range(40)])
    m = multilabel_metrics(true, pred, scores, LABELS)
    pairs = [(x in t, x in p) for t, p in zip(true, pred, strict=True) for x in LABELS]
    tp, fp, fn = (
        sum(a and b for a, b in pairs),
        sum(b and not a for a, b in pairs),
        sum(a and not b for a, b in pairs),
    )
    assert m["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["hamming_loss"] == pytest.approx((fp + fn) / len(pairs))
    assert m["subset_accuracy"] == pytest.approx(
        np.mean([set(t) == set(p) for t, p in zip(true, pred, strict=True)])
    )
    per = []
    for x in LABELS:
        a = sum(x in t and x in p for t, p in zip(true, pred, strict=True))
        b = sum(x in p for p in pred) + sum(x in t for t in true)
        per.append(2 * a / b if b else 0.0)
        assert m["per_label"][x]["f1"] == pytest.approx(per[-1])
        assert m["per_label"][x]["support"] == sum(x in t for t in true)
    assert m["macro_f1"] == pytest.approx(np.mean(per))

    def samples_f1(t, p):
        return 1.0 if not t and not p else 2 * len(set(t) & set(p)) / (len(t) + len(p))

    assert m["samples_f1"] == pytest.approx(
        np.mean([samples_f1(t, p) for t, p in zip(true, pred, strict=True)])
    )

    def lrap(t, s):  # the definition, rank by rank
        if not t:
            return 1.0
        idx = [LABELS.index(x) for x in t]
        return np.mean([sum(s[k] >= s[j] for k in idx) / sum(s >= s[j]) for j in idx])

    assert m["lrap"] == pytest.approx(np.mean([lrap(t, s) for t, s in zip(true, scores, strict=True)]))


def test_shrunk_thresholds_lean_on_the_global_one_by_dev_support():
    rng = np.random.default_rng(1)
    n = 400
    truth = np.zeros((n, 2), dtype=np.int64)
    truth[:200, 0] = 1  # a frequent label
    truth[rng.integers(n), 1] = 1  # a label with one dev positive
    probs = np.clip(0.35 * truth + rng.random((n, 2)) * 0.6, 0, 1)
    own, overall = np.array(per_label_thresholds(probs, truth)), global_threshold(probs, truth)[0]
    got, fallback = tuned_thresholds(probs, truth, "shrunk")
    assert fallback == []
    # the frequent label keeps (nearly) its own threshold, the rare one (nearly) the global one
    assert abs(got[0] - own[0]) <= abs(own[0] - overall) * SHRINK / (200 + SHRINK) + 1e-12
    assert abs(got[1] - overall) <= abs(own[1] - overall) * 1 / (1 + SHRINK) + 1e-12
    assert tuned_thresholds(probs, truth, "per-label")[0] == pytest.approx(own.tolist())
    assert tuned_thresholds(probs, truth, "global")[0] == [overall, overall]


def test_a_threshold_firing_on_every_dev_text_falls_back_to_the_global_one():
    rng = np.random.default_rng(2)
    truth = np.zeros((100, 2), dtype=np.int64)
    truth[:50, 0], truth[[3, 70], 1] = 1, 1
    probs = np.column_stack([0.6 * truth[:, 0] + 0.3 * rng.random(100), 0.91 + 0.05 * rng.random(100)])
    probs[[3, 70], 1] = 0.9, 0.9001  # the lowest: only "fire on every text" catches the positives
    own = per_label_thresholds(probs, truth)
    assert (probs[:, 1] >= own[1]).mean() == 1.0  # the label's F1-best threshold fires on everything
    got, fallback = tuned_thresholds(probs, truth, "per-label")
    assert fallback == [1] and got[1] == global_threshold(probs, truth)[0] and got[0] == own[0]
    task = MultiLabelTask(["a", "b"], threshold_mode="per-label")
    task.thresholds, task.fallback_labels = got, ["b"]
    preds = task.decide(probs)
    examples = [
        type("E", (), {"label": tuple(x for x, t in zip("ab", row, strict=True) if t)}) for row in truth
    ]
    assert task.metrics(examples, preds)["fallback_labels"] == ["b"]


def test_constant_loss_is_the_best_constant_predictions_loss():
    rate, weight = np.array([0.02, 0.3, 0.5]), np.array([30.0, 2.0, 1.0])
    q = np.linspace(1e-4, 1 - 1e-4, 200_001)[:, None]
    brute = -(weight * rate * np.log(q) + (1 - rate) * np.log(1 - q))
    assert constant_loss(rate, weight) == pytest.approx(float(brute.min(0).mean()), rel=1e-6)
    pm = np.maximum(q - 0.05, 0)  # the asymmetric loss's best constant, by its formula
    brute = -(weight * rate * np.log(q) + (1 - rate) * pm**4 * np.log(1 - pm))
    assert constant_loss(rate, weight, "asymmetric") == pytest.approx(float(brute.min(0).mean()), rel=1e-5)


def test_collapse_guard_names_base_rate_loss_and_constant_predictions():
    task = MultiLabelTask(LABELS, pos_weight=None, label_loss="bce")
    task.prepare([{"labels": h} for h in [(1.0, 0.0, 0.0)] * 3 + [(0.0, 1.0, 0.0)] * 7], 4)
    base = constant_loss(np.array([0.3, 0.7, 0.0]), np.ones(3))
    learned = [{"loss": base * 0.4, "lr": 1e-4}] * 3 + [{"dev_macro_f1": 0.9}]
    assert task.diagnose({"same_prediction_share": 0.4}, learned) is None
    stuck = [{"loss": base * 1.01, "lr": 1e-4}] * 3
    line = task.diagnose({"same_prediction_share": 0.4}, stuck)
    assert line.startswith("the model collapsed (training loss") and "--pos-weight auto" in line
    assert "\n" not in line
    assert task.diagnose({"same_prediction_share": 0.4}, stuck[:2]) is None  # too few losses to tell
    line = task.diagnose({"same_prediction_share": 0.97}, learned)
    assert "97% of dev texts got the same labels" in line


def test_top_label_when_every_training_text_has_one():
    settings = {"labels_file": None, "pos_weight": None, "threshold": None, "thresholds": None}
    every = [type("E", (), {"label": ("food",)}), type("E", (), {"label": ("animal", "rain")})]
    some = [*every, type("E", (), {"label": ()})]
    assert MultiLabelTask.from_settings(settings, every, "t").top_label
    task = MultiLabelTask.from_settings(settings, some, "t")
    assert not task.top_label and task.pos_weight == "auto" and task.threshold_mode == "shrunk"
    task.thresholds = [0.9, 0.9, 0.9]
    probs = np.array([[0.2, 0.6, 0.1], [0.95, 0.1, 0.92]])
    assert task.labels == ["animal", "food", "rain"]
    assert [p["labels"] for p in task.decide(probs)] == [[], ["animal", "rain"]]
    task.top_label = True
    assert [p["labels"] for p in task.decide(probs)] == [["food"], ["animal", "rain"]]


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("ml")
    train, dev = _jsonl(d / "train.jsonl", _texts(240, 1)), _jsonl(d / "dev.jsonl", _texts(60, 2))
    out = d / "out"
    argv = (f"finetune --task classify --multi-label --model {tiny_dir} --train {train} --dev {dev} "
            f"--test {dev} --format jsonl --text-column text --label-column labels --pos-weight auto "
            f"--output {out} --epochs 10 --batch-size 16 --lr 1e-3 --quiet --precision fp32")  # fmt: skip
    assert main(argv.split()) == 0
    return out, dev


def test_trained_directory_scores_saves_and_loads_in_transformers(trained, hf):
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("dev", "test"):
        assert {"micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "per_label"} <= set(
            metrics[split]
        )
    assert metrics["test"]["macro_f1"] > 0.8, metrics["test"]  # keywords decide the labels: it learns them
    assert "warning" not in metrics["dev"]  # the collapse guard stays quiet on a run that learned
    for name in ("report.md", "per_label_f1.png", "errors.jsonl"):
        assert (out / "report/test" / name).is_file()
    errors = [json.loads(x) for x in (out / "report/test/errors.jsonl").read_text().splitlines()]
    for e in errors:
        assert set(e["missed"]) == set(e["labels"]) - set(e["predicted"])
        assert set(e["spurious"]) == set(e["predicted"]) - set(e["labels"])
    config = json.loads((out / "config.json").read_text())
    assert (
        config["problem_type"] == "multi_label_classification" and len(config["bertkit"]["thresholds"]) == 3
    )
    ref = hf.BertForSequenceClassification.from_pretrained(out).eval()
    assert ref.config.problem_type == "multi_label_classification"
    assert ref.config.id2label == dict(enumerate(LABELS))
    ours = bertkit.BertForSequenceClassification.from_pretrained(out)
    enc = bertkit.Tokenizer.from_pretrained(out)(
        ["a cat in the rain", "bread"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        assert torch.allclose(ours(**enc).logits, ref(**enc).logits, atol=1e-5)


def test_every_predicting_path_gives_the_same_label_sets(trained, tmp_path):
    out, dev = trained
    texts = [json.loads(x)["text"] for x in dev.read_text().splitlines()]
    clf = bertkit.pipeline("text-classification", model=out, precision="fp32")
    want = clf(texts)
    config = json.loads((out / "config.json").read_text())
    for p in want:
        over = [
            x for x, t in zip(LABELS, config["bertkit"]["thresholds"], strict=True) if p["scores"][x] >= t
        ]
        assert sorted(p["labels"]) == sorted(over)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    dest = tmp_path / "p.jsonl"
    assert (
        main(
            [
                "predict",
                "--model",
                str(out),
                "--input",
                str(src),
                "--output",
                str(dest),
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    assert [r["labels"] for r in rows] == [p["labels"] for p in want]
    from fastapi.testclient import TestClient

    from bertkit.runtime import RuntimeArgs, compute_init
    from bertkit.serve.app import create_app

    with TestClient(create_app(out, runtime=compute_init(RuntimeArgs(precision="fp32")))) as c:
        r = c.post("/v1/classify", json={"texts": texts})
        assert r.status_code == 200 and [p["labels"] for p in r.json()["predictions"]] == [
            p["labels"] for p in want
        ]
    from bertkit.inference.export import export_onnx

    export_onnx(out, out / "model.onnx")
    onnx = bertkit.pipeline("text-classification", model=out, backend="onnx")(texts)
    assert [p["labels"] for p in onnx] == [p["labels"] for p in want]
    # one threshold given at prediction time replaces the tuned ones
    half = bertkit.pipeline("text-classification", model=out, precision="fp32", threshold=0.5)(texts)
    assert [sorted(p["labels"]) for p in half] == [
        sorted(x for x in LABELS if p["scores"][x] >= 0.5) for p in want
    ]


def test_evaluate_reproduces_test_metrics(trained, tmp_path):
    out, dev = trained
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out),
                "--data",
                str(dev),
                "--output",
                str(tmp_path / "ev"),
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "ev/metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert again["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=0.02)


def test_search_kfold_on_multilabel(tiny_dir, tmp_path):
    train = _jsonl(tmp_path / "t.jsonl", _texts(48, 5))
    out = tmp_path / "search"
    argv = (f"search --task classify --multi-label --model {tiny_dir} --train {train} --folds 2 "
            f"--output {out} --max-steps 2 --batch-size 8 --grid lr=1e-4,1e-3 --quiet")  # fmt: skip
    assert main(argv.split()) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["grid_points"] == 2 and best["folds"] == 2 and 0.0 <= best["mean_macro_f1"] <= 1.0


def test_pos_weight_file_and_its_errors(tmp_path):
    from bertkit.tasks.multilabel import _pos_weight_arg

    f = tmp_path / "pw.json"
    f.write_text('{"weather": 4, "animal": 2.5, "food": 1}', encoding="utf-8")
    assert _pos_weight_arg(str(f), LABELS) == [2.5, 1.0, 4.0]  # in label order
    assert _pos_weight_arg("auto", LABELS) == "auto" and _pos_weight_arg("none", LABELS) is None
    f.write_text('{"weather": 4, "animal": -1, "food": 1}', encoding="utf-8")
    with pytest.raises(BertkitError, match=r"pos_weight of 'animal' must be a positive number, found -1"):
        _pos_weight_arg(str(f), LABELS)
    f.write_text('{"weather": 4, "animal": 1, "food": 1,', encoding="utf-8")
    with pytest.raises(BertkitError, match=r"line 1: not a JSON object of pos_weights per label"):
        _pos_weight_arg(str(f), LABELS)


def test_a_collapsed_run_is_named_in_one_line(tiny_dir, tmp_path, capsys):
    train, dev = _jsonl(tmp_path / "t.jsonl", _texts(64, 3)), _jsonl(tmp_path / "d.jsonl", _texts(32, 4))
    argv = (f"finetune --task classify --multi-label --model {tiny_dir} --train {train} --dev {dev} "
            "--format jsonl --text-column text --label-column labels "
            f"--output {tmp_path / 'o'} --pos-weight none --lr 1e-9 --epochs 1 --batch-size 16 --log-every 1 "
            "--quiet --precision fp32")  # fmt: skip
    assert main(argv.split()) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "the model collapsed (training loss" in warnings[0]
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["dev"]["warning"] == warnings[0].removeprefix("warning: ")
    assert "**Warning:** the model collapsed" in (tmp_path / "o" / "report" / "dev" / "report.md").read_text()


def test_long_texts_take_each_labels_highest_window():
    """Multi-label pools a text's windows by the max (a label any window finds); single-label
    classification keeps the mean of the windows' logits."""
    from bertkit.tasks.classify import ClassifyTask

    class ByToken(torch.nn.Module):  # window logits: 1 where the window holds token 7, else -1
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask, token_type_ids):
            found = (input_ids == 7).any(1, keepdim=True).float() * 2 - 1
            return type("Out", (), {"logits": found.expand(-1, 3).contiguous()})

    rows = [[1, 7, 2], [1, 5, 2], [1, 5, 2], [1, 5, 2]]  # text 0: four windows, one holding 7
    rows.append([1, 5, 2])  # text 1: one window without it
    owners = [0, 0, 0, 0, 1]
    feats = [
        {"input_ids": r, "attention_mask": [1] * 3, "token_type_ids": [0] * 3, "example": e}
        for r, e in zip(rows, owners, strict=True)
    ]
    got = MultiLabelTask(LABELS).logits(ByToken(), feats, 2, pad_id=0)
    assert got.tolist() == [[1.0] * 3, [-1.0] * 3]
    mean = ClassifyTask(LABELS).logits(ByToken(), feats, 2, pad_id=0)
    assert mean.tolist() == [[-0.5] * 3, [-1.0] * 3]
