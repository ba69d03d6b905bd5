"""`bertkit evaluate` and `bertkit predict`: a fine-tuned model on a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertkit.cli import flags


def add_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a fine-tuned model on a labelled file and write a report")
    flags.add_model(ev, "the fine-tuned model")
    ev.add_argument("--data", required=True, help="labelled file in the task's format")
    ev.add_argument("--output", required=True, help="report directory to write")
    ev.add_argument("--unknown-label", default=None, help="map labels the model does not know to this one")
    flags.add_data(ev)
    flags.add_output(ev)
    flags.add_decision(ev)
    flags.add_engine(ev, flags.BACKENDS)
    flags.add_runtime(ev)
    ev.set_defaults(func=evaluate)

    pr = sub.add_parser(
        "predict",
        help="predict with a fine-tuned model; JSON lines out",
        description="Read texts (one per line, or JSON lines with 'text'/'text_pair', or "
        "'question'/'context' for QA, or a file in the task's format via --format) and write "
        "one JSON line per input: label and probabilities, entities with character offsets, "
        "or answers with scores.",
    )
    flags.add_model(pr, "the fine-tuned model")
    pr.add_argument("--input", default="-", help="input file, or - for standard input (default)")
    pr.add_argument("--output", default="-", help="output file, or - for standard output (default)")
    flags.add_data(pr)
    flags.add_output(pr)
    flags.add_decision(pr)
    flags.add_engine(pr, flags.BACKENDS)
    flags.add_runtime(pr)
    pr.set_defaults(func=predict)


def evaluate(args: argparse.Namespace) -> None:
    from bertkit.inference.pipelines import evaluate_dir

    metrics = evaluate_dir(
        Path(args.model),
        Path(args.data),
        args.format,
        flags.data_opts(args),
        Path(args.output),
        unknown_label=args.unknown_label,
        decision=flags.decision_opts(args),
        options=flags.engine(args),
        runtime=flags.runtime(args),
        output_scheme=args.output_scheme,
    )
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    print(f"{shown}\nreport in {args.output}")


def predict(args: argparse.Namespace) -> None:
    from bertkit.inference.pipelines import predict_stream

    opts, engine, rt = flags.data_opts(args), flags.engine(args), flags.runtime(args)
    decision = flags.decision_opts(args)
    predict_stream(
        args.model,
        args.input,
        args.output,
        args.format,
        opts,
        options=engine,
        runtime=rt,
        decision=decision,
        output_scheme=args.output_scheme,
    )
