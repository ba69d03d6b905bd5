"""`bertkit tokenizer train` and `bertkit shards`: vocabularies and token shards from raw text."""

from __future__ import annotations

import argparse

from bertkit.cli.options import add_options, build
from bertkit.data.shards import ShardOptions
from bertkit.tokenization.vocab import VocabOptions


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
    d = ShardOptions()
    add_options(sh, d, ("workers", "heldout", "doc_mode", "strip_gutenberg", "dedupe_lines", "shard_tokens"))
    add_options(sh, d, ("segmenter",))
    sh.add_argument(
        "--overwrite", action="store_true", help="rebuild an output built from other inputs or options"
    )
    add_options(sh, d, ("progress",))
    sh.set_defaults(func=shards)

    tok = sub.add_parser("tokenizer", help="tokenizer tools")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    train = tok_sub.add_parser(
        "train",
        help="train a WordPiece, BPE or Unigram vocabulary from text files",
        description="Train a vocabulary: BERT's WordPiece, RoBERTa's byte-level BPE or XLM-R's "
        "SentencePiece Unigram (--model-type); writes tokenizer.json, tokenizer_config.json (and "
        "WordPiece's vocab.txt) to --output. Files may be plain text or .gz.",
    )
    train.add_argument("files", nargs="+", help="text files (plain or .gz), folders or glob patterns")
    v = VocabOptions()
    add_options(train, v, ("vocab_size", "model_type"))
    train.add_argument("--output", required=True, help="directory to write the tokenizer files to")
    add_options(train, v, ("lowercase",))
    train.add_argument(
        "--strip-accents",
        choices=["yes", "no"],
        default=None,
        help="strip accents (default: follow lower-casing, as BERT does)",
    )
    add_options(train, v, ("min_frequency", "limit_alphabet", "alphabet_files"))
    train.set_defaults(func=tokenizer_train)


def tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenization.vocab import train_tokenizer

    o = build(args, VocabOptions())
    tok = train_tokenizer(
        args.files,
        vocab_size=o.vocab_size,
        output=args.output,
        do_lower_case=o.lowercase,
        min_frequency=o.min_frequency,
        limit_alphabet=o.limit_alphabet,
        strip_accents=None if args.strip_accents is None else args.strip_accents == "yes",
        alphabet_files=o.alphabet_files,
        model_type=o.model_type,
    )
    print(f"trained a {o.model_type} vocabulary of {tok.vocab_size} tokens; saved to {args.output}")


def shards(args: argparse.Namespace) -> None:
    import time

    from bertkit.data.shards import build_shards

    start = time.perf_counter()
    manifest = build_shards(
        args.corpus, args.tokenizer, args.output, build(args, ShardOptions()), overwrite=args.overwrite
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
