"""`bertkit pretrain`: a BERT from raw text (masked-LM, optional next-sentence)."""

from __future__ import annotations

import argparse

from bertkit.cli import flags


def add_parser(sub) -> None:
    from bertkit.training.pretrain import PretrainArgs, pretrain_defaults

    d = PretrainArgs(corpus=[], output="")
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
    pt.add_argument(
        "--vocab-size", type=int, default=d.vocab_size, help=f"trained vocabulary size ({d.vocab_size})"
    )
    pt.add_argument("--cased", action="store_true", help="trained vocabulary keeps case")
    pt.add_argument(
        "--config", default=d.config, help="preset (tiny, mini, small, medium, base, large) or config.json"
    )
    pt.add_argument("--init-from", help="continue pretraining this model directory")
    pt.add_argument(
        "--max-seq-length", type=int, default=d.max_seq_length, help="tokens per sequence (default 128)"
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
    pt.add_argument("--max-minutes", type=float, help="stop (and checkpoint) after this training time")
    pt.add_argument(
        "--save-every", type=int, default=d.save_every, help=f"checkpoint every N steps ({d.save_every})"
    )
    pt.add_argument(
        "--keep-checkpoints", type=int, default=d.keep_checkpoints, help="checkpoints kept (default 2)"
    )
    pt.add_argument(
        "--eval-sequences", type=int, default=d.eval_sequences, help="held-out sequences evaluated"
    )
    pt.add_argument("--nsp", action="store_true", help="also train next-sentence prediction")
    pt.add_argument("--whole-word-mask", action="store_true", help="mask whole words (## pieces together)")
    pt.add_argument(
        "--word-list", help="--whole-word-mask: a word list (one a line); their characters mask together"
    )
    pt.add_argument(
        "--mlm-probability", type=float, default=d.mlm_probability, help="share of tokens predicted"
    )
    pt.add_argument(
        "--doc-mode",
        choices=["file", "blank-line"],
        default=d.doc_mode,
        help="what a document is (default file)",
    )
    pt.add_argument(
        "--heldout", type=float, default=d.heldout, help="share of the corpus held out (default 0.01)"
    )
    pt.add_argument("--workers", type=int, help="tokenizing processes (default: CPU count)")
    flags.add_segmenter(pt)
    pt.add_argument("--fsdp", action="store_true", help="shard parameters with FSDP (under torchrun)")
    pt.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    flags.add_training(pt, pretrain_defaults(), fine_tuning=False)
    flags.add_runtime(pt)
    pt.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bertkit.training.pretrain import PretrainArgs, pretrain, pretrain_defaults

    fields = PretrainArgs.__dataclass_fields__
    kw = {k: v for k, v in vars(args).items() if k in fields and k != "train"}
    rt = flags.runtime(args, distributed=True)
    try:
        pretrain(PretrainArgs(**kw, train=flags.train_args(args, pretrain_defaults())), rt)
    finally:
        rt.close()
