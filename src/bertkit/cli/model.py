"""`bertkit info` (describe a model directory) and `bertkit init` (a random model directory)."""

from __future__ import annotations

import argparse

from bertkit.cli import flags
from bertkit.models.config import DEFAULT_PRESET, BertConfig, preset_names


def add_parser(sub) -> None:
    info = sub.add_parser(
        "info",
        help="load a model directory and describe it",
        description="Load a Hugging Face-format BERT directory and print a summary; "
        "a quick check that a checkpoint is readable.",
    )
    flags.add_model(info, "the model (config.json + model.safetensors)", "model")
    info.set_defaults(func=describe)

    ini = sub.add_parser(
        "init",
        help="create a randomly initialised model directory for a tokenizer",
        description="Write a randomly initialised BertForPreTraining of a preset size, with the "
        "vocabulary size of --tokenizer, as a model directory: the start of pretraining, or of "
        "fine-tuning from scratch.",
    )
    ini.add_argument(
        "--config",
        default=DEFAULT_PRESET,
        choices=preset_names(),
        help="preset size: tiny L2/H128, mini L4/H256, small L4/H512, medium L8/H512, base, large "
        "(a BERT; roberta-SIZE: a RoBERTa, for a BPE tokenizer)",
    )
    ini.add_argument("--tokenizer", required=True, help="directory with vocab.txt or tokenizer.json")
    ini.add_argument("--output", required=True, help="model directory to write")
    positions = BertConfig.max_position_embeddings
    ini.add_argument(
        "--max-positions", type=int, default=positions, help=f"maximum sequence length (default {positions})"
    )
    ini.add_argument("--num-hidden-layers", type=int, help="override the preset's layer count")
    ini.add_argument("--hidden-size", type=int, help="override the preset's hidden size")
    ini.add_argument("--num-attention-heads", type=int, help="override the preset's head count")
    ini.add_argument("--intermediate-size", type=int, help="override the feed-forward size (4 × hidden)")
    ini.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    ini.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    ini.set_defaults(func=init)


def describe(args: argparse.Namespace) -> None:
    from bertkit.models.heads import load_model

    model = load_model(args.model)
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    kind = c.family.architecture(type(model).__name__.removeprefix("Bert"))
    print(f"{args.model}: {kind} ({c.model_type}), {n / 1e6:.1f} M parameters")
    print(
        f"  layers {c.num_hidden_layers}, hidden {c.hidden_size}, heads {c.num_attention_heads}, "
        f"intermediate {c.intermediate_size}, activation {c.hidden_act}"
    )
    print(f"  vocabulary {c.vocab_size}, max positions {c.max_position_embeddings}")
    if c.id2label:
        print(f"  labels: {', '.join(c.id2label[i] for i in sorted(c.id2label))}")


def init(args: argparse.Namespace) -> None:
    from bertkit.models.heads import init_model_dir

    overrides = {"max_position_embeddings": args.max_positions}
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    model = init_model_dir(args.config, args.tokenizer, args.output, args.seed, args.overwrite, **overrides)
    n = sum(p.numel() for p in model.parameters())
    kind = model.config.family.architecture(type(model).__name__.removeprefix("Bert"))
    print(f"initialised a random {args.config} {kind} ({n / 1e6:.1f} M parameters) in {args.output}")
