"""The Chinese results table: every set in ../shared/data/zh against the baseline a user would try
first, beside the pretrained and random-init rows of `bench/pretrain_gain.py`.

    python bench/pretrain_gain.py --lang zh ...          # first: the pretrained and random rows
    python bench/zh_baselines.py --gain runs/bench/pretrain_gain_zh_wwm_jieba.json \
        --gain runs/bench/pretrain_gain_zh.json --json runs/bench/zh_baselines.json

Baselines: for the classification sets, scikit-learn TF-IDF over character 1-3-grams and a
logistic regression (AFQMC's pairs: each sentence's vector and their elementwise product, so the
model sees what the two share, with balanced class weights and the F1 of "similar" as the BERT
rows have them); for the NER sets, the CRF head over the randomly initialised
encoder (`bertkit finetune --head crf`, the same budget as the softmax rows). Files are read with
bertkit's own readers, so every row sees the same examples. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bertkit.data.readers import read_text_classification
from bertkit.runtime import cpu_description

ROOT = Path(__file__).resolve().parent


def _gain_module():
    spec = importlib.util.spec_from_file_location("pretrain_gain", ROOT / "pretrain_gain.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def classification_sets(d: Path) -> dict[str, dict]:
    """name -> (train file, scored file, split name, reader options)."""
    return {
        "ChnSentiCorp": {
            "train": d / "zh/chnsenticorp/train.tsv",
            "score": d / "zh/chnsenticorp/test.tsv",
            "split": "test",
            "opts": {},
        },
        "TNEWS": {
            "train": d / "zh/tnews/train.tsv",
            "score": d / "zh/tnews/dev.tsv",
            "split": "dev",
            "opts": {"text_column": 0, "label_column": 1},
        },
        "AFQMC": {
            "train": d / "zh/afqmc/train.txt",
            "score": d / "zh/afqmc/dev.txt",
            "split": "dev",
            "opts": {"text_column": 0, "pair_column": 1, "label_column": 2},
            # as the BERT rows (--class-weights auto --positive-label 1): 69 % of dev is "0"
            "class_weight": "balanced",
            "positive": "1",
        },
    }


def tfidf(train_file: Path, score_file: Path, opts: dict, c: float, class_weight=None, positive=None) -> dict:
    """Accuracy, macro F1 and MCC (and the positive label's F1, given one) of TF-IDF char
    1-3-grams + logistic regression."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    start = time.perf_counter()
    train = read_text_classification(train_file, **opts)
    score = read_text_classification(score_file, **opts)
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
    pairs = train[0].pair is not None
    if pairs:
        vec.fit([x.text for x in train] + [x.pair or "" for x in train])

        def features(rows):
            a, b = vec.transform([x.text for x in rows]), vec.transform([x.pair or "" for x in rows])
            return hstack([a, b, a.multiply(b)]).tocsr()
    else:
        vec.fit([x.text for x in train])

        def features(rows):
            return vec.transform([x.text for x in rows])

    clf = LogisticRegression(C=c, max_iter=2000, class_weight=class_weight)
    clf.fit(features(train), [str(x.label) for x in train])
    gold = [str(x.label) for x in score]
    pred = clf.predict(features(score))
    majority = max(np.unique(gold, return_counts=True)[1]) / len(gold)
    scores = {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, average="macro")),
        "mcc": float(matthews_corrcoef(gold, pred)),
        "majority_class": float(majority),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if positive is not None:
        scores["f1"] = float(f1_score(gold, pred, pos_label=positive))
    return scores


def crf_floor(gain, work: Path, task: dict, lr: float, seed: int) -> dict:
    """The CRF head over the random encoder, with the softmax rows' data and budget."""
    out = work / f"ft-{task['name'].replace(' ', '_')}-random-crf"
    if not (out / "metrics.json").is_file():
        opts = ["--head", "crf", "--lr", lr, "--seed", seed, "--output", out, "--overwrite", "--quiet"]
        gain.bertkit("finetune", "--model", work / "random", *task["args"], *opts)
    metrics = json.loads((out / "metrics.json").read_text())
    split, key = task["metric"]
    return {"score": metrics[split][key], "seconds": metrics["train"]["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--gain",
        action="append",
        default=[],
        help="a --json of bench/pretrain_gain.py --lang zh (repeat: one per pretraining recipe)",
    )
    p.add_argument("--work", default="out/pretrain-gain/zh", help="pretrain_gain's zh folder (random model)")
    p.add_argument("--c", type=float, default=4.0, help="logistic regression's C (default 4)")
    p.add_argument("--lr", type=float, default=2e-4, help="CRF floor's fine-tuning lr (default 2e-4)")
    p.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    p.add_argument("--skip-crf", action="store_true", help="TF-IDF rows only")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    gain = _gain_module()
    d = gain.data_dir()
    results: dict = {"cpu": cpu_description(), "threads": os.cpu_count(), "tfidf": {}, "crf_floor": {}}
    for name, s in classification_sets(d).items():
        found = tfidf(s["train"], s["score"], s["opts"], args.c, s.get("class_weight"), s.get("positive"))
        results["tfidf"][name] = found | {"split": s["split"]}
        print(f"{name}: TF-IDF {results['tfidf'][name]}", flush=True)
    if not args.skip_crf:
        for task in (t for t in gain.tasks("zh", d) if t["args"][1] == "ner"):
            floor = crf_floor(gain, Path(args.work), task, args.lr, args.seed)
            results["crf_floor"][task["name"]] = floor
            print(f"{task['name']}: random + CRF {floor}", flush=True)
    recipes = {Path(g).stem: json.loads(Path(g).read_text()) for g in args.gain}
    results["recipes"] = {k: v["pretraining"] for k, v in recipes.items()}
    print(f"\n{results['cpu']}\n")
    print(f"| set | metric | {' | '.join(f'pretrained ({k})' for k in recipes)} | random init | baseline |")
    print("|---|---|" + "---|" * (len(recipes) + 2))
    for task in gain.tasks("zh", d):
        name = task["name"]
        found = [r["tasks"].get(name) for r in recipes.values()]
        known = [f for f in found if f]
        if not known:
            continue
        cells = [f"{f['pretrained']['score']:.4f}" if f else "—" for f in found]
        base = results["tfidf"].get(name, {}).get(task["metric"][1])  # the BERT rows' metric
        base = base if base is not None else results["crf_floor"].get(name, {}).get("score")
        kind = "TF-IDF + LR" if name in results["tfidf"] else "random + CRF"
        base_cell = "—" if base is None else f"{base:.4f} ({kind})"
        row = [name, known[0]["metric"], *cells, f"{known[0]['random']['score']:.4f}", base_cell]
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
