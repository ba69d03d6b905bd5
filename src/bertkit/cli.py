"""The `bertkit` command line. Each subcommand is a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import sys

from bertkit.errors import BertkitError


def _tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import train_tokenizer

    tok = train_tokenizer(
        args.files,
        vocab_size=args.vocab_size,
        output=args.output,
        do_lower_case=not args.cased,
        min_frequency=args.min_frequency,
        limit_alphabet=args.limit_alphabet,
        strip_accents=None if args.strip_accents is None else args.strip_accents == "yes",
    )
    print(f"trained a WordPiece vocabulary of {tok.vocab_size} tokens; saved to {args.output}")


def _shards(args: argparse.Namespace) -> None:
    import time

    from bertkit.data.shards import build_shards

    start = time.perf_counter()
    manifest = build_shards(
        args.corpus,
        args.tokenizer,
        args.output,
        workers=args.workers,
        heldout=args.heldout,
        doc_mode=args.doc_mode,
        strip_gutenberg=not args.no_strip_gutenberg,
        dedupe_lines=args.dedupe_lines,
        shard_tokens=args.shard_tokens,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    for name, split in manifest["splits"].items():
        print(
            f"{name}: {split['documents']:,} documents, {split['lines']:,} lines, "
            f"{split['tokens']:,} tokens in {len(split['shards'])} shard(s)"
        )
    print(
        f"shards in {args.output} ({manifest['dtype']}); built in {manifest['seconds']} s, "
        f"this run {time.perf_counter() - start:.1f} s"
    )


def _init(args: argparse.Namespace) -> None:
    from bertkit.heads import init_model_dir

    overrides = {"max_position_embeddings": args.max_positions}
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    model = init_model_dir(args.config, args.tokenizer, args.output, args.seed, args.overwrite, **overrides)
    n = sum(p.numel() for p in model.parameters())
    print(f"initialised a random {args.config} BERT ({n / 1e6:.1f} M parameters) in {args.output}")


def _pretrain(args: argparse.Namespace) -> None:
    from bertkit.pretrain import PretrainArgs, pretrain

    fields = PretrainArgs.__dataclass_fields__
    kw = {k: v for k, v in vars(args).items() if k in fields}
    kw["bf16"] = False if args.no_bf16 else None
    kw["nonfinite"] = args.on_nonfinite
    kw["progress"] = not args.quiet
    pretrain(PretrainArgs(**kw))


def _engine(args: argparse.Namespace):
    from bertkit.inference import InferenceOptions

    return InferenceOptions.from_env(
        precision=args.precision,
        int8=args.int8 or None,
        compile=args.compile or None,
        threads=args.threads,
        max_tokens=args.max_tokens,
        backend=getattr(args, "backend", None),
        onnx_file=getattr(args, "onnx_file", None),
    )


def _add_engine_flags(p: argparse.ArgumentParser, backend: bool = False) -> None:
    g = p.add_argument_group("inference engine")
    if backend:
        g.add_argument(
            "--backend",
            choices=["torch", "onnx"],
            default=None,
            help="torch (default), or onnx: the task head run by ONNX Runtime from a `bertkit export` file",
        )
        g.add_argument(
            "--onnx-file", default=None, help="graph for --backend onnx (default MODEL/model.onnx)"
        )
    g.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default=None,
        help="auto (default): bf16 weights where the CPU/GPU multiplies bf16 natively, else fp32",
    )
    g.add_argument("--int8", action="store_true", help="int8 dynamic quantization of the Linear layers (CPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the encoder (slow first batches)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    g.add_argument("--max-tokens", type=int, default=None, help="padded tokens per batch (default 8192)")


def _embed(args: argparse.Namespace) -> None:
    from bertkit.embeddings import EmbeddingPipeline, embed_file

    pipe = EmbeddingPipeline(
        args.model, None, args.pooling, args.normalize, args.max_length, options=_engine(args)
    )
    n, dim = embed_file(pipe, args.input, args.output)
    norm = ", normalised" if pipe.normalize else ""
    print(f"{n} embeddings of {dim} ({pipe.pooling} pooling{norm}) written to {args.output}", file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    from bertkit.export import export_onnx

    check = export_onnx(args.model, args.output, int8=args.int8, opset=args.opset)
    diff = check["fp32_max_abs_diff"]
    line = f"ONNX Runtime vs PyTorch on {check['texts']} sentences: fp32 max |diff| {diff:.1e}"
    if args.int8:
        line += f", int8 max |diff| {check['int8_max_abs_diff']:.1e}"
    print(f"{line}\nwrote {args.output} (outputs: {', '.join(check['outputs'])})")


def _serve(args: argparse.Namespace) -> None:
    from bertkit.server import Limits, run

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        max_queue=args.max_queue,
        batch_texts=args.batch_texts,
        max_wait_ms=args.max_wait_ms,
    )
    run(args.model, args.host, args.port, _engine(args), limits)


def _fill_mask(args: argparse.Namespace) -> None:
    import json

    from bertkit.pipelines import FillMaskPipeline

    pipe = FillMaskPipeline(args.model, top_k=args.top_k, options=_engine(args))
    for text in args.text:
        result = pipe(text)
        rows = [result] if result and isinstance(result[0], dict) else result
        if args.json:
            print(json.dumps({"text": text, "fills": rows}, ensure_ascii=False))
            continue
        print(text)
        for i, row in enumerate(rows, 1):
            shown = "  ".join(f"{r['token']} {r['score']:.3f}" for r in row)
            print(f"  [MASK] {i}: {shown}")


def _info(args: argparse.Namespace) -> None:
    from bertkit.heads import load_model

    model = load_model(args.model)
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {type(model).__name__}, {n / 1e6:.1f} M parameters")
    print(
        f"  layers {c.num_hidden_layers}, hidden {c.hidden_size}, heads {c.num_attention_heads}, "
        f"intermediate {c.intermediate_size}, activation {c.hidden_act}"
    )
    print(f"  vocabulary {c.vocab_size}, max positions {c.max_position_embeddings}")
    if c.id2label:
        print(f"  labels: {', '.join(c.id2label[i] for i in sorted(c.id2label))}")


def _data_opts(args: argparse.Namespace) -> dict:
    return {
        "text_column": args.text_column,
        "pair_column": args.pair_column,
        "label_column": args.label_column,
        "token_column": args.token_column,
        "tag_column": args.tag_column,
        "scheme": args.scheme,
        "strip_digit_suffix": args.strip_digit_suffix or None,
        "regression": getattr(args, "regression", None),
    }


def _finetune(args: argparse.Namespace) -> None:
    from pathlib import Path

    from bertkit.finetune import Resumable, build_task, finetune
    from bertkit.report import write_report

    if args.save_every is not None and args.save_every < 1:
        raise BertkitError(f"--save-every must be a positive number of steps, not {args.save_every}")
    task, train, dev, test = build_task(args.task, args, _data_opts(args))
    targs = _train_args(args)
    metrics = finetune(
        task,
        Path(args.model),
        train,
        dev,
        test,
        Path(args.output),
        targs,
        overwrite=args.overwrite,
        write_report=write_report,
        resumable=Resumable.beside(Path(args.output), args.save_every, args.resume),
    )
    for split in ("dev", "test"):
        if split in metrics:
            shown = {k: round(v, 4) for k, v in metrics[split].items() if isinstance(v, float)}
            print(f"{split}: {shown}")
    print(f"trained in {metrics['train']['seconds']} s; model and report in {args.output}")


def _evaluate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from bertkit.finetune import evaluate_dir

    metrics = evaluate_dir(
        Path(args.model),
        Path(args.data),
        args.format,
        _data_opts(args),
        Path(args.output),
        unknown_label=args.unknown_label,
        options=_engine(args),
    )
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    print(f"{shown}\nreport in {args.output}")


def _predict(args: argparse.Namespace) -> None:
    from bertkit.finetune import predict_stream

    predict_stream(args.model, args.input, args.output, args.format, _data_opts(args), options=_engine(args))


def _search(args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from bertkit.finetune import build_task
    from bertkit.search import TASK_KEYS, parse_grid, run_search

    grid = parse_grid(args.grid)
    if args.dev is None and args.folds is None:
        raise BertkitError("give --dev FILE or --folds K")
    task, train, dev, _ = build_task(args.task, args, _data_opts(args))
    bad = [k for k in grid if k in TASK_KEYS and not hasattr(task, k)]
    if bad:
        raise BertkitError(f"--grid {bad[0]}: not a setting of the {args.task} task")

    def make_task(params: dict):
        return dataclasses.replace(task, **{k: v for k, v in params.items() if k in TASK_KEYS})

    base = _train_args(args, progress=False, tensorboard=False)
    best = run_search(
        make_task,
        Path(args.model),
        train,
        None if args.folds else dev,
        grid,
        args.folds or 0,
        base,
        Path(args.output),
    )
    print(f"best: {best}\nresults in {args.output}/results.md")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data format")
    g.add_argument(
        "--format",
        choices=["tsv", "csv", "jsonl", "conll", "spans", "squad", "folders"],
        default=None,
        help="file format (default: from the task and the file extension)",
    )
    g.add_argument("--text-column", help="text column: header name or 0-based index")
    g.add_argument("--pair-column", help="second text column for sentence pairs")
    g.add_argument("--label-column", help="label column: header name or 0-based index")
    g.add_argument("--token-column", type=int, default=None, help="CoNLL: token column index (default 0)")
    g.add_argument(
        "--tag-column", type=int, default=None, help="CoNLL: tag column index (default -1, the last)"
    )
    g.add_argument(
        "--scheme",
        choices=["auto", "iob1", "iob2", "bioes"],
        default=None,
        help="CoNLL tagging scheme of the file (default auto); tags are normalised to IOB2",
    )
    g.add_argument(
        "--strip-digit-suffix",
        action="store_true",
        help="CoNLL: strip a trailing digit from each token (Weibo NER's word-position marks)",
    )


def _add_task_flags(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("task")
    t.add_argument("--regression", action="store_true", help="classify: a numeric target (MSE loss)")
    t.add_argument("--positive-label", help="classify: report F1 of this class and select by it (e.g. 1)")
    t.add_argument(
        "--windows",
        action="store_true",
        help="classify: cover long texts with overlapping windows instead of truncating",
    )
    t.add_argument(
        "--stride",
        type=int,
        default=None,
        help="tokens shared by consecutive windows (classify 64, ner 32, qa doc stride 128)",
    )
    t.add_argument(
        "--head", choices=["softmax", "crf", "bilstm-crf"], default="softmax", help="ner: tag decoder"
    )
    t.add_argument(
        "--decode",
        choices=["constrained", "argmax"],
        default="constrained",
        help="ner, softmax head: each sentence's most probable valid IOB2 tags (Viterbi, default) or "
        "each word's most probable tag on its own (transformers' argmax); saved with the model",
    )
    t.add_argument("--max-length", type=int, default=None, help="tokens per window (default 128; qa 384)")
    t.add_argument(
        "--unknown-label",
        default=None,
        help="map dev/test labels unseen in training to this label instead of failing",
    )


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("training")
    o.add_argument("--epochs", type=float, default=3.0, help="training epochs (default 3)")
    o.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    o.add_argument("--batch-size", type=int, default=32, help="examples per batch (default 32)")
    o.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step (default 1)")
    o.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    o.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    o.add_argument("--warmup", type=float, default=0.1, help="warm-up: share of steps if < 1, else steps")
    o.add_argument("--no-bf16", action="store_true", help="train in fp32 even where bf16 is faster")
    o.add_argument(
        "--eval-every", type=int, default=None, help="evaluate every N steps (default: each epoch)"
    )
    o.add_argument("--patience", type=int, default=None, help="early stopping: evaluations without gain")
    o.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    o.add_argument(
        "--no-group-by-length",
        action="store_true",
        help="plain shuffled batches instead of batches of similar lengths (more padding, slower)",
    )
    o.add_argument(
        "--on-nonfinite",
        choices=["skip", "stop"],
        default="skip",
        help="NaN/inf loss or gradient: skip the step (default) or stop",
    )
    o.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_args(args: argparse.Namespace, **overrides):
    from bertkit.train import TrainArgs

    kw = dict(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        bf16=False if args.no_bf16 else None,
        eval_every=args.eval_every,
        patience=args.patience,
        seed=args.seed,
        progress=not args.quiet,
        nonfinite=args.on_nonfinite,
        group_by_length=not args.no_group_by_length,
    )
    return TrainArgs(**{**kw, **overrides})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertkit", description="BERT end to end on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="load a model directory and describe it",
        description="Load a Hugging Face-format BERT directory and print a summary; "
        "a quick check that a checkpoint is readable.",
    )
    info.add_argument("model", help="model directory (config.json + model.safetensors)")
    info.set_defaults(func=_info)

    ini = sub.add_parser(
        "init",
        help="create a randomly initialised model directory for a tokenizer",
        description="Write a randomly initialised BertForPreTraining of a preset size, with the "
        "vocabulary size of --tokenizer, as a model directory: the start of pretraining, or of "
        "fine-tuning from scratch.",
    )
    ini.add_argument(
        "--config",
        default="mini",
        choices=["tiny", "mini", "small", "medium", "base", "large"],
        help="preset size: tiny L2/H128, mini L4/H256, small L4/H512, medium L8/H512, base, large",
    )
    ini.add_argument("--tokenizer", required=True, help="directory with vocab.txt or tokenizer.json")
    ini.add_argument("--output", required=True, help="model directory to write")
    ini.add_argument("--max-positions", type=int, default=512, help="maximum sequence length (default 512)")
    ini.add_argument("--num-hidden-layers", type=int, help="override the preset's layer count")
    ini.add_argument("--hidden-size", type=int, help="override the preset's hidden size")
    ini.add_argument("--num-attention-heads", type=int, help="override the preset's head count")
    ini.add_argument("--intermediate-size", type=int, help="override the feed-forward size (4 × hidden)")
    ini.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    ini.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    ini.set_defaults(func=_init)

    ft = sub.add_parser(
        "finetune",
        help="fine-tune a model on a task and write a model + report directory",
        description="Fine-tune a BERT directory on text classification/regression, NER or "
        "extractive QA. Writes a loadable model, metrics.json and report/ to --output.",
    )
    ft.add_argument("--task", choices=["classify", "ner", "qa"], required=True, help="what to train")
    ft.add_argument(
        "--model", required=True, help="starting model directory (HF layout with tokenizer files)"
    )
    ft.add_argument("--train", required=True, help="training file")
    ft.add_argument(
        "--dev", required=True, help="development file: evaluated during training, picks the best"
    )
    ft.add_argument("--test", help="test file, evaluated once with the best weights")
    ft.add_argument(
        "--output", required=True, help="output directory (must be new or empty unless --overwrite)"
    )
    ft.add_argument(
        "--overwrite", action="store_true", help="replace an existing output directory at the end"
    )
    _add_data_flags(ft)
    _add_task_flags(ft)
    _add_training_flags(ft)
    ck = ft.add_argument_group("checkpoints")
    ck.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="write a checkpoint every N optimizer steps (and on SIGTERM/Ctrl-C) to OUTPUT-checkpoints/, "
        "removed once the run completes",
    )
    ck.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in OUTPUT-checkpoints/ (same settings; checked)",
    )
    ft.set_defaults(func=_finetune)

    ev = sub.add_parser("evaluate", help="evaluate a fine-tuned model on a labelled file and write a report")
    ev.add_argument("--model", required=True, help="fine-tuned model directory")
    ev.add_argument("--data", required=True, help="labelled file in the task's format")
    ev.add_argument("--output", required=True, help="report directory to write")
    ev.add_argument("--unknown-label", default=None, help="map labels the model does not know to this one")
    _add_data_flags(ev)
    _add_engine_flags(ev, backend=True)
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser(
        "predict",
        help="predict with a fine-tuned model; JSON lines out",
        description="Read texts (one per line, or JSON lines with 'text'/'text_pair', or "
        "'question'/'context' for QA, or a file in the task's format via --format) and write "
        "one JSON line per input: label and probabilities, entities with character offsets, "
        "or answers with scores.",
    )
    pr.add_argument("--model", required=True, help="fine-tuned model directory")
    pr.add_argument("--input", default="-", help="input file, or - for standard input (default)")
    pr.add_argument("--output", default="-", help="output file, or - for standard output (default)")
    _add_data_flags(pr)
    _add_engine_flags(pr, backend=True)
    pr.set_defaults(func=_predict)

    se = sub.add_parser(
        "search",
        help="grid search with k-fold cross-validation or a dev set (resumable)",
        description="Train every point of a hyperparameter grid and rank them by the task's "
        "main metric, averaged over k folds of the training file (--folds) or on --dev. "
        "Re-running the same command resumes an interrupted search. Writes results.md, "
        "results.csv and best.json to --output.",
    )
    se.add_argument("--task", choices=["classify", "ner", "qa"], required=True, help="what to train")
    se.add_argument("--model", required=True, help="starting model directory")
    se.add_argument("--train", required=True, help="training file (split into folds with --folds)")
    se.add_argument("--dev", help="fixed development file (instead of --folds)")
    se.add_argument("--folds", type=int, default=None, help="k-fold cross-validation on --train")
    se.add_argument("--output", required=True, help="search directory (results and the resumable study)")
    se.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="a grid axis, repeatable: lr, batch_size, epochs, warmup, weight_decay, grad_accum, "
        "max_steps, head, max_length",
    )
    _add_data_flags(se)
    _add_task_flags(se)
    _add_training_flags(se)
    se.set_defaults(func=_search, test=None)

    pt = sub.add_parser(
        "pretrain",
        help="pretrain a BERT from raw text (masked-LM, optional next-sentence)",
        description="Pretrain from raw text files (plain or .gz, folders, globs) or a shard "
        "directory: trains a vocabulary unless --tokenizer is given, builds token shards (reused "
        "when unchanged), then trains masked-LM (+ next sentence with --nsp) with checkpoints "
        "every --save-every steps and on SIGTERM/SIGINT. Runs unchanged under torchrun.",
    )
    pt.add_argument("--corpus", nargs="+", required=True, help="text files, folders, globs or a shard dir")
    pt.add_argument("--output", required=True, help="run directory: final model, logs, data/, checkpoints/")
    pt.add_argument("--tokenizer", help="tokenizer directory (default: train one on the corpus)")
    pt.add_argument("--vocab-size", type=int, default=30522, help="trained vocabulary size (default 30522)")
    pt.add_argument("--cased", action="store_true", help="trained vocabulary keeps case")
    pt.add_argument(
        "--config", default="mini", help="preset (tiny, mini, small, medium, base, large) or config.json"
    )
    pt.add_argument("--init-from", help="continue pretraining this model directory")
    pt.add_argument("--max-seq-length", type=int, default=128, help="tokens per sequence (default 128)")
    pt.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="sequences per step, all processes (default 128)",
    )
    pt.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    pt.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    pt.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    pt.add_argument(
        "--warmup", type=float, default=0.05, help="warm-up: share of steps if < 1, else steps (default 0.05)"
    )
    pt.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="hidden and attention dropout while pretraining (default: the config's, 0.1); e.g. 0 for "
        "short runs. The saved config keeps its own values for fine-tuning",
    )
    pt.add_argument(
        "--init-range",
        type=float,
        default=None,
        help="std of the random initial weights of this run (default: the config's initializer_range, "
        "0.02); the saved config keeps its own value, the std of heads fine-tuning adds",
    )
    pt.add_argument("--epochs", type=float, default=1.0, help="passes over the corpus (default 1)")
    pt.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs; sets the schedule)")
    pt.add_argument("--max-minutes", type=float, help="stop (and checkpoint) after this training time")
    pt.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    pt.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept (default 2)")
    pt.add_argument("--eval-every", type=int, default=500, help="held-out evaluation every N steps")
    pt.add_argument("--log-every", type=int, default=20, help="log the training loss every N steps")
    pt.add_argument("--eval-sequences", type=int, default=1024, help="held-out sequences evaluated")
    pt.add_argument("--nsp", action="store_true", help="also train next-sentence prediction")
    pt.add_argument("--whole-word-mask", action="store_true", help="mask whole words (## pieces together)")
    pt.add_argument(
        "--word-list",
        help="--whole-word-mask: a word list (one a line); their characters mask together",
    )
    pt.add_argument("--mlm-probability", type=float, default=0.15, help="share of tokens predicted")
    pt.add_argument(
        "--doc-mode", choices=["file", "blank-line"], default="file", help="what a document is (default file)"
    )
    pt.add_argument("--heldout", type=float, default=0.01, help="share of the corpus held out (default 0.01)")
    pt.add_argument("--workers", type=int, help="tokenizing processes (default: CPU count)")
    pt.add_argument("--no-bf16", action="store_true", help="train in fp32 even where bf16 is faster")
    pt.add_argument(
        "--on-nonfinite",
        choices=["skip", "stop"],
        default="skip",
        help="NaN/inf loss or gradient: skip the step (default) or stop",
    )
    pt.add_argument("--fsdp", action="store_true", help="shard parameters with FSDP (under torchrun)")
    pt.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    pt.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    pt.add_argument("--quiet", action="store_true", help="no progress bars")
    pt.set_defaults(func=_pretrain)

    fm = sub.add_parser(
        "fill-mask",
        help="print the top-k fillers of each [MASK] in a text",
        description="Load a pretrained (masked-LM) directory and print the most likely tokens for "
        "each [MASK] in each TEXT.",
    )
    fm.add_argument("--model", required=True, help="model directory with a masked-LM head")
    fm.add_argument("--top-k", type=int, default=5, help="fillers shown per mask (default 5)")
    fm.add_argument("--json", action="store_true", help="one JSON line per text instead of a table")
    fm.add_argument("text", nargs="+", help="text with one or more [MASK] tokens")
    _add_engine_flags(fm)
    fm.set_defaults(func=_fill_mask)

    sv = sub.add_parser(
        "serve",
        help="serve a model over HTTP (FastAPI + uvicorn) with dynamic batching",
        description="Serve /v1/classify, /v1/ner, /v1/qa (fine-tuned directories), /v1/embed (any "
        "BERT directory) and /v1/fill-mask (masked-LM weights), plus /health, /v1/model, /metrics "
        "and OpenAPI docs at /docs. Requests are batched across clients through the inference engine.",
    )
    sv.add_argument("--model", required=True, help="model directory")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    lim = sv.add_argument_group("limits and batching")
    lim.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body limit (413 above)")
    lim.add_argument("--max-texts", type=int, default=256, help="texts per request (413 above)")
    lim.add_argument("--max-chars", type=int, default=20_000, help="characters per text (413 above)")
    lim.add_argument("--max-queue", type=int, default=4096, help="texts queued per endpoint (503 above)")
    lim.add_argument("--batch-texts", type=int, default=256, help="texts per engine batch (default 256)")
    lim.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests (default 5)"
    )
    _add_engine_flags(sv, backend=True)
    sv.set_defaults(func=_serve)

    ex = sub.add_parser(
        "export",
        help="export a model directory to ONNX, checked against PyTorch with ONNX Runtime",
        description="Export to ONNX (dynamic batch and sequence axes). ONNX Runtime's outputs are "
        "compared with PyTorch's on real sentences before the file is written: fp32 must agree to "
        "1e-4. A classifier/NER/QA directory exports its head's logits, any other its hidden states.",
    )
    ex.add_argument("--model", required=True, help="model directory")
    ex.add_argument("--output", required=True, help=".onnx file to write (+ a .json check beside it)")
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    ex.add_argument("--int8", action="store_true", help="ONNX Runtime dynamic int8 quantization, per channel")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ex.set_defaults(func=_export)

    em = sub.add_parser(
        "embed",
        help="sentence embeddings of texts, to a .npy file",
        description="Embed each text (one per line, every line a row; or JSON lines with a 'text' "
        "field) with a BERT or sentence-transformers directory: mean or [CLS] pooling of the last "
        "hidden states, optionally L2-normalised. Writes a float32 (N, hidden) .npy file.",
    )
    em.add_argument("--model", required=True, help="model directory")
    em.add_argument("--input", default="-", help="text file, or - for standard input (default)")
    em.add_argument("--output", required=True, help=".npy file to write")
    em.add_argument(
        "--pooling",
        choices=["mean", "cls"],
        default=None,
        help="default: what a sentence-transformers directory declares, else mean",
    )
    em.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise (default: what a sentence-transformers directory declares, else off)",
    )
    em.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="truncate texts to this many tokens (default: the directory's setting, else the model's limit)",
    )
    _add_engine_flags(em)
    em.set_defaults(func=_embed)

    sh = sub.add_parser(
        "shards",
        help="tokenize a raw text corpus into memory-mapped token shards for pretraining",
        description="Tokenize text files (plain or .gz, folders, globs) in parallel into token "
        "shards (tokens, line and document offsets as flat binary arrays) plus manifest.json, "
        "with a deterministic held-out split. Re-running with the same inputs, tokenizer and "
        "options reuses the output; anything else needs --overwrite.",
    )
    sh.add_argument("--corpus", nargs="+", required=True, help="text files (plain or .gz), folders or globs")
    sh.add_argument("--tokenizer", required=True, help="tokenizer directory (tokenizer.json or vocab.txt)")
    sh.add_argument("--output", required=True, help="shard directory to write (written whole at the end)")
    sh.add_argument(
        "--workers", type=int, help="tokenizing processes (default: CPU count; 1: in this process)"
    )
    sh.add_argument("--heldout", type=float, default=0.01, help="share of the text held out (default 0.01)")
    sh.add_argument(
        "--doc-mode",
        choices=["file", "blank-line"],
        default="file",
        help="what a document is: a whole file, or text between blank lines (default file)",
    )
    sh.add_argument(
        "--no-strip-gutenberg",
        action="store_true",
        help="keep Project Gutenberg licence headers and footers (default: drop them)",
    )
    sh.add_argument(
        "--dedupe-lines", action="store_true", help="drop exact repeats of a line across the corpus"
    )
    sh.add_argument(
        "--shard-tokens",
        type=int,
        default=50_000_000,
        help="start a new shard after this many tokens, at a document end (default 50000000)",
    )
    sh.add_argument(
        "--overwrite", action="store_true", help="rebuild an output built from other inputs or options"
    )
    sh.add_argument("--quiet", action="store_true", help="no progress bar")
    sh.set_defaults(func=_shards)

    tok = sub.add_parser("tokenizer", help="WordPiece tokenizer tools")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    train = tok_sub.add_parser(
        "train",
        help="train a WordPiece vocabulary from text files",
        description="Train a BERT WordPiece vocabulary; writes vocab.txt, tokenizer.json and "
        "tokenizer_config.json to --output. Files may be plain text or .gz.",
    )
    train.add_argument("files", nargs="+", help="text files (plain or .gz), folders or glob patterns")
    train.add_argument("--vocab-size", type=int, default=30522, help="target vocabulary size (default 30522)")
    train.add_argument("--output", required=True, help="directory to write the tokenizer files to")
    train.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    train.add_argument(
        "--strip-accents",
        choices=["yes", "no"],
        default=None,
        help="strip accents (default: follow lower-casing, as BERT does)",
    )
    train.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency to merge")
    train.add_argument(
        "--limit-alphabet",
        type=int,
        default=1000,
        help="characters kept (default 1000; Chinese: e.g. 6000)",
    )
    train.set_defaults(func=_tokenizer_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BertkitError as e:
        print(f"bertkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the system refused a read or write: a full disk, no permission...
        print(f"bertkit: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    return 0


def describe_os_error(e: OSError) -> str:
    """One line: the file, what the system said, and what to do for the usual causes."""
    import errno

    where = f"{e.filename}: " if e.filename else ""
    hint = {
        errno.ENOSPC: "; free some space (nothing complete was replaced)",
        errno.EFBIG: "; the file size limit (ulimit -f) was reached (nothing complete was replaced)",
        errno.EROFS: "; choose a writable output location",
        errno.EACCES: "; check the permissions",
    }.get(e.errno, "")
    return f"{where}{e.strerror or e}{hint}"


if __name__ == "__main__":
    sys.exit(main())
