"""Does pretraining pay? Pretrain a small BERT from raw text with bertkit, then fine-tune it and the
same architecture from random initialisation with the same budget, and compare.

    python bench/pretrain_gain.py --lang en --minutes 60      # Gutenberg → SST-2, CoNLL-2003
    python bench/pretrain_gain.py --lang en --cased            # the same with a cased vocabulary
    python bench/pretrain_gain.py --lang en --cased --vocab-size 8192 --steps 3750 \
        --pretrain-dropout 0 --run pretrained-nodrop --finetune-seeds 42 1   # the hour's best recipe
    python bench/pretrain_gain.py --lang zh --minutes 60      # zh/pretrain → ChnSentiCorp, MSRA NER
    python bench/pretrain_gain.py --lang en --model-type bpe   # RoBERTa's recipe: byte-level BPE,
                                                               # a roberta-mini, masked-LM alone

Every step is a `bertkit` command (printed before it runs), so the run can be repeated by hand:
tokenizer train → shards → pretrain (stopped by --minutes, resumable) → init (random, same
config, tokenizer and seed) → finetune both on each task. Prints a Markdown table and writes
JSON with --json. Data from $BERTKIT_DATA or ../shared/data; outputs under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

FINETUNE_LR = 2e-4  # results of another lr go to folders named -lrX
ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def bertkit(*args: str) -> None:
    cmd = [sys.executable, "-m", "bertkit", *map(str, args)]
    print("$ bertkit " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    subprocess.run(cmd, check=True)


def tasks(lang: str, d: Path) -> list[dict]:
    """(name, (split, metric), finetune arguments) for each downstream task."""
    if lang == "en":
        sst, conll = d / "en/glue/SST-2", d / "en/conll2003"
        sst_args = [
            "--task",
            "classify",
            "--train",
            sst / "train.tsv",
            "--dev",
            sst / "dev.tsv",
            "--epochs",
            "1",
        ]
        conll_args = ["--task", "ner", "--train", conll / "train.txt", "--dev", conll / "valid.txt"]
        conll_args += ["--test", conll / "test.txt", "--epochs", "3"]
        return [
            {"name": "SST-2", "metric": ("dev", "accuracy"), "args": sst_args},
            {"name": "CoNLL-2003", "metric": ("test", "f1"), "args": conll_args},
        ]
    chn, msra = d / "zh/chnsenticorp", d / "zh/msra_ner"
    chn_args = ["--task", "classify", "--train", chn / "train.tsv", "--dev", chn / "dev.tsv"]
    chn_args += ["--test", chn / "test.tsv", "--epochs", "2", "--max-length", "256"]
    msra_args = ["--task", "ner", "--format", "conll", "--train", msra / "train.bio"]
    # MSRA has no dev split: test doubles as dev. One epoch keeps the two fine-tunes to ~15 min.
    msra_args += ["--dev", msra / "test.bio", "--test", msra / "test.bio", "--epochs", "1"]
    tnews, afqmc, weibo, clue = d / "zh/tnews", d / "zh/afqmc", d / "zh/weibo_ner", d / "zh/cluener2020"
    # TNEWS and AFQMC publish no test labels and CLUENER no test set: their dev set is the score.
    # Both get the CLUE baselines' 3 epochs: after one, AFQMC was the majority class for both models.
    tnews_args = ["--task", "classify", "--train", tnews / "train.tsv", "--dev", tnews / "dev.tsv"]
    tnews_args += ["--text-column", "0", "--label-column", "1", "--epochs", "3", "--max-length", "64"]
    afqmc_args = ["--task", "classify", "--train", afqmc / "train.txt", "--dev", afqmc / "dev.txt"]
    afqmc_args += ["--text-column", "0", "--pair-column", "1", "--label-column", "2", "--epochs", "3"]
    # 69 % of AFQMC's pairs are "not similar": unweighted, both models predict that class only, and
    # kept by accuracy, the best epoch is the one nearest the majority class: weigh, keep by "similar"'s F1
    afqmc_args += ["--max-length", "128", "--class-weights", "auto", "--positive-label", "1"]
    weibo_args = ["--task", "ner", "--format", "conll", "--strip-digit-suffix"]
    weibo_args += ["--train", weibo / "weiboNER_2nd_conll.train", "--dev", weibo / "weiboNER_2nd_conll.dev"]
    weibo_args += ["--test", weibo / "weiboNER_2nd_conll.test", "--epochs", "5"]
    clue_args = ["--task", "ner", "--format", "spans", "--train", clue / "train.json"]
    clue_args += ["--dev", clue / "dev.json", "--epochs", "2"]
    return [
        {"name": "ChnSentiCorp", "metric": ("test", "accuracy"), "args": chn_args},
        {"name": "MSRA NER", "metric": ("test", "f1"), "args": msra_args},
        {"name": "TNEWS", "metric": ("dev", "accuracy"), "args": tnews_args, "extra": True},
        {"name": "AFQMC", "metric": ("dev", "f1"), "args": afqmc_args, "extra": True},
        {"name": "Weibo NER", "metric": ("test", "f1"), "args": weibo_args, "extra": True},
        {"name": "CLUENER", "metric": ("dev", "f1"), "args": clue_args, "extra": True},
    ]


def train_file(task: dict) -> Path:
    return task["args"][task["args"].index("--train") + 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lang", choices=["en", "zh"], required=True, help="English (Gutenberg) or Chinese")
    p.add_argument(
        "--work", default="out/pretrain-gain", help="working directory (default out/pretrain-gain)"
    )
    p.add_argument("--config", default="mini", help="model preset (default mini)")
    p.add_argument(
        "--model-type",
        choices=["wordpiece", "bpe"],
        default="wordpiece",
        help="wordpiece (a BERT, the default) or bpe: RoBERTa's recipe (a byte-level BPE vocabulary, "
        "the roberta- preset of --config, no next sentence); works in WORK/<lang>-bpe...",
    )
    p.add_argument("--minutes", type=float, default=60, help="pretraining time budget (default 60)")
    p.add_argument(
        "--steps", type=int, default=2000, help="pretraining schedule length in steps (default 2000)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="pretraining batch (default 64)")
    p.add_argument("--pretrain-lr", type=float, default=5e-4, help="pretraining peak lr (default 5e-4)")
    p.add_argument(
        "--pretrain-warmup", type=float, default=0.1, help="warm-up fraction of --steps (default 0.1)"
    )
    p.add_argument(
        "--finetune-lr", type=float, default=FINETUNE_LR, help="fine-tuning lr for both models (default 2e-4)"
    )
    p.add_argument(
        "--cased",
        action="store_true",
        help="English: a cased vocabulary (capitals are NER's strongest cue); works in WORK/en-cased",
    )
    p.add_argument(
        "--pretrain-dropout",
        type=float,
        default=None,
        help="dropout while pretraining (default: the config's 0.1; try 0 for a short budget)",
    )
    p.add_argument(
        "--pretrain-init-range",
        type=float,
        help="std of the pretrained model's initial weights (default: the config's 0.02); the "
        "random baseline keeps the config's",
    )
    p.add_argument(
        "--whole-word-mask",
        action="store_true",
        help="pretrain with whole-word masking (default run name gets -wwm)",
    )
    p.add_argument(
        "--segmenter",
        choices=["jieba", "rjieba"],
        help="with --whole-word-mask: mask the words of this segmenter (Chinese-BERT-wwm); shards in "
        "WORK/shards-SEGMENTER, run name gets -SEGMENTER",
    )
    p.add_argument(
        "--nsp",
        action="store_true",
        help="pretrain with next-sentence prediction too (default run name gets -nsp)",
    )
    p.add_argument(
        "--run",
        help="name of the pretrained model's folder in WORK (default pretrained, plus -wwm / -nsp / "
        "-dropP / -initS for those options): another recipe on the same tokenizer, shards and random "
        "baseline",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        help="WordPiece vocabulary size (default 30522 for en, 10000 for zh); another size works in "
        "WORK/<lang>[-cased]-vN with its own tokenizer, shards and random baseline",
    )
    p.add_argument(
        "--alphabet-from-tasks",
        action="store_true",
        help="train the tokenizer with every character of the tasks' training files kept (its "
        "--initial-alphabet; Chinese: --limit-alphabet 7500), so that digits and product names the "
        "corpus lacks are not [UNK]; works in WORK/<lang>-alpha with its own tokenizer, shards and "
        "random baseline",
    )
    p.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=["SST-2", "CoNLL-2003", "ChnSentiCorp", "MSRA NER", "TNEWS", "AFQMC", "Weibo NER", "CLUENER"],
        help="fine-tune on these tasks only (default: SST-2 and CoNLL-2003, or ChnSentiCorp and MSRA NER; "
        "the other Chinese sets on request)",
    )
    p.add_argument(
        "--finetune-seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="fine-tune each model once per seed and compare the means (default: --seed only)",
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    d = data_dir()
    chosen = [t for t in tasks(args.lang, d) if t["name"] in args.tasks] if args.tasks else None
    chosen = chosen if chosen is not None else [t for t in tasks(args.lang, d) if not t.get("extra")]
    if not chosen:
        p.error(f"--tasks: none of {args.tasks} is a task of --lang {args.lang}")
    default_vocab = 30522 if args.lang == "en" else 10000
    vocab = args.vocab_size or default_vocab
    bpe = args.model_type == "bpe"
    config = f"roberta-{args.config}" if bpe else args.config
    suffix = ("-bpe" if bpe else "") + ("-cased" if args.cased and not bpe else "")
    suffix += "" if vocab == default_vocab else f"-v{vocab}"
    suffix += "-alpha" if args.alphabet_from_tasks else ""
    work = Path(args.work) / (args.lang + suffix)
    # a recipe option must never reuse (or --resume) another recipe's model folder
    recipe = [
        "-wwm" if args.whole_word_mask else "",
        f"-{args.segmenter}" if args.segmenter else "",
        "-nsp" if args.nsp else "",
        "" if args.pretrain_dropout is None else f"-drop{args.pretrain_dropout:g}",
        "" if args.pretrain_init_range is None else f"-init{args.pretrain_init_range:g}",
    ]
    run = args.run or "pretrained" + "".join(recipe)
    if args.segmenter and not args.whole_word_mask:
        p.error("--segmenter is for --whole-word-mask")
    shards = work / ("shards" + (f"-{args.segmenter}" if args.segmenter else ""))
    tok, pre, rnd = work / "tokenizer", work / run, work / "random"
    corpus = d / ("en/gutenberg/books" if args.lang == "en" else "zh/pretrain")
    if not (tok / "tokenizer.json").is_file():
        limit = "7500" if args.alphabet_from_tasks else "6000"
        size = (
            ["--vocab-size", str(vocab), *(["--cased"] if args.cased else [])]
            if args.lang == "en"
            else ["--vocab-size", str(vocab), "--limit-alphabet", limit]
        )
        size += ["--model-type", "bpe"] if bpe else []
        if args.alphabet_from_tasks:  # every task's training file, whichever --tasks this run has
            size += ["--initial-alphabet", *(train_file(t) for t in tasks(args.lang, d))]
        bertkit("tokenizer", "train", corpus, *size, "--output", tok)
    segment = ["--segmenter", args.segmenter] if args.segmenter else []
    bertkit("shards", "--corpus", corpus, "--tokenizer", tok, "--output", shards, *segment)
    if not (pre / "model.safetensors").is_file():
        bertkit("pretrain", "--corpus", shards, "--tokenizer", tok, "--output", pre, "--config", config,
                "--batch-size", args.batch_size, "--max-steps", args.steps, "--max-minutes", args.minutes,
                "--lr", args.pretrain_lr, "--warmup", args.pretrain_warmup, "--save-every", 250,
                "--eval-every", 250, "--seed", args.seed, "--resume",
                *([] if args.pretrain_dropout is None else ["--dropout", args.pretrain_dropout]),
                *([] if args.pretrain_init_range is None else ["--init-range", args.pretrain_init_range]),
                *(["--whole-word-mask"] if args.whole_word_mask else []),
                *(["--nsp"] if args.nsp else []))  # fmt: skip
    if not (rnd / "model.safetensors").is_file():
        bertkit("init", "--config", config, "--tokenizer", tok, "--output", rnd, "--seed", args.seed)

    results = {"pretraining": json.loads((pre / "pretrain_metrics.json").read_text()), "tasks": {}}
    seeds = args.finetune_seeds or [args.seed]
    lr_tag = "" if args.finetune_lr == FINETUNE_LR else f"-lr{args.finetune_lr:g}"
    for task in chosen:
        row: dict = {}
        for start, model in (("pretrained", pre), ("random", rnd)):
            runs = []
            name = f"ft-{task['name'].replace(' ', '_')}-{run if start == 'pretrained' else start}"
            for seed in seeds:
                out = work / (name + lr_tag + ("" if seed == args.seed else f"-s{seed}"))
                if not (out / "metrics.json").is_file():
                    opts = ["--lr", args.finetune_lr, "--seed", seed, "--output", out, "--overwrite"]
                    bertkit("finetune", "--model", model, *task["args"], *opts, "--quiet")
                split, key = task["metric"]
                metrics = json.loads((out / "metrics.json").read_text())
                score, seconds = metrics[split][key], metrics["train"]["seconds"]
                runs.append({"seed": seed, "score": score, "seconds": seconds})
            scores = [r["score"] for r in runs]
            row[start] = {"score": statistics.mean(scores), "runs": runs}
            if len(scores) > 1:
                row[start]["stdev"] = statistics.stdev(scores)
        results["tasks"][task["name"]] = {"metric": f"{split} {key}", **row}

    pt = results["pretraining"]
    acc = pt.get("mlm_accuracy", float("nan"))
    print(f"\npretraining ({args.lang}, {config}): {pt['steps']} steps in {pt['train_seconds']} s, ")
    print(f"{pt['tokens_per_second']:,} tokens/s; held-out masked-LM accuracy {acc:.4f}\n")
    mean = "mean of seeds " + ", ".join(map(str, seeds)) if len(seeds) > 1 else f"seed {seeds[0]}"
    print(f"fine-tuning: {mean}\n")
    print("| task | metric | pretrained | random init | gain | per seed (pretrained / random) |")
    print("|---|---|---|---|---|---|")
    for name, r in results["tasks"].items():
        a, b = r["pretrained"]["score"], r["random"]["score"]
        pairs = zip(r["pretrained"]["runs"], r["random"]["runs"], strict=True)
        each = "; ".join(f"{x['seed']}: {x['score']:.4f} / {y['score']:.4f}" for x, y in pairs)
        print(f"| {name} | {r['metric']} | {a:.4f} | {b:.4f} | {a - b:+.4f} | {each} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
