"""`bertkit tokenizer train` and `bertkit shards`: vocabularies and token shards from raw text."""

from __future__ import annotations

import argparse

from bertkit.cli import flags


def add_parser(sub) -> None:
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
    flags.add_segmenter(sh)
    sh.add_argument(
        "--overwrite", action="store_true", help="rebuild an output built from other inputs or options"
    )
    sh.add_argument("--quiet", action="store_true", help="no progress bar")
    sh.set_defaults(func=shards)

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
        "--limit-alphabet", type=int, default=1000, help="characters kept (default 1000; Chinese: e.g. 6000)"
    )
    train.add_argument(
        "--initial-alphabet",
        nargs="+",
        default=[],
        metavar="FILE",
        help="keep every character of these text files (e.g. the fine-tuning sets' training files), "
        "so that the text the model will meet has no [UNK] for characters the corpus lacks; they "
        "count towards --limit-alphabet",
    )
    train.set_defaults(func=tokenizer_train)


def tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenization.vocab import train_tokenizer

    tok = train_tokenizer(
        args.files,
        vocab_size=args.vocab_size,
        output=args.output,
        do_lower_case=not args.cased,
        min_frequency=args.min_frequency,
        limit_alphabet=args.limit_alphabet,
        strip_accents=None if args.strip_accents is None else args.strip_accents == "yes",
        alphabet_files=args.initial_alphabet,
    )
    print(f"trained a WordPiece vocabulary of {tok.vocab_size} tokens; saved to {args.output}")


def shards(args: argparse.Namespace) -> None:
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
        segmenter=args.segmenter,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    for name, split in manifest["splits"].items():
        print(
            f"{name}: {split['documents']:,} documents, {split['lines']:,} lines, "
            f"{split['tokens']:,} tokens in {len(split['shards'])} shard(s)"
        )
    if args.segmenter:
        print(f"word boundaries from {args.segmenter} beside the tokens (for --whole-word-mask)")
    print(
        f"shards in {args.output} ({manifest['dtype']}); built in {manifest['seconds']} s, "
        f"this run {time.perf_counter() - start:.1f} s"
    )
