"""`bertkit pretrain`: a BERT from raw text (masked-LM, optional next-sentence)."""

from __future__ import annotations

import argparse

from bertkit.cli import flags
from bertkit.cli.options import add_options, build, given
from bertkit.data.shards import ShardOptions
from bertkit.options import options_of
from bertkit.tokenization.vocab import VocabOptions

RUN: tuple[str, ...] = (
    "config",
    "init_from",
    "max_seq_length",
    "dropout",
    "init_range",
    "max_minutes",
    "save_every",
)
RUN += ("keep_checkpoints", "eval_sequences", "nsp", "whole_word_mask", "word_list", "mlm_probability")
SHARDS = ("doc_mode", "heldout", "workers", "strip_gutenberg", "dedupe_lines", "shard_tokens", "segmenter")


def add_parser(sub) -> None:
    from bertkit.training.pretrain_args import PretrainArgs, pretrain_defaults

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
    d = PretrainArgs(corpus=[], output="")
    add_options(pt, d, ("tokenizer",))
    vocab = pt.add_argument_group("vocabulary (trained on the corpus when no --tokenizer is given)")
    add_options(vocab, VocabOptions(), options_of(VocabOptions))
    add_options(pt, d, RUN)
    add_options(pt.add_argument_group("token shards (raw text)"), ShardOptions(), SHARDS)
    add_options(pt, d, ("fsdp", "resume"))
    flags.add_training(pt, pretrain_defaults(), fine_tuning=False)
    flags.add_runtime(pt)
    pt.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bertkit.training.pretrain import pretrain
    from bertkit.training.pretrain_args import PretrainArgs, pretrain_defaults

    rt = flags.runtime(args, distributed=True)
    try:
        settings = PretrainArgs(
            corpus=args.corpus,
            output=args.output,
            train=flags.train_args(args, pretrain_defaults()),
            vocab=build(args, VocabOptions()),
            shards=build(args, ShardOptions()),
            **given(args, PretrainArgs),
        )
        pretrain(settings, rt)
    finally:
        rt.close()
