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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertkit", description="BERT end to end on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        "--limit-alphabet", type=int, default=1000, help="maximum number of initial characters kept"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
