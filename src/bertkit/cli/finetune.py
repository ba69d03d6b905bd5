"""`bertkit finetune`: train a model on a task and write a model + report directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertkit.cli import flags
from bertkit.training.loop import TrainArgs


def add_parser(sub) -> None:
    ft = sub.add_parser(
        "finetune",
        help="fine-tune a model on a task and write a model + report directory",
        description="Fine-tune a BERT directory on text classification/regression, NER or "
        "extractive QA. Writes a loadable model, metrics.json and report/ to --output. Runs on a GPU "
        "when there is one, and under torchrun (DDP: --batch-size is the global batch).",
    )
    flags.add_model(ft, "the starting model (with its tokenizer files)")
    ft.add_argument("--train", required=True, help="training file")
    ft.add_argument(
        "--dev", required=True, help="development file: evaluated during training, picks the best"
    )
    ft.add_argument("--test", help="test file, evaluated once with the best weights")
    flags.add_run_output(ft)
    flags.add_task(ft)
    flags.add_data(ft)
    flags.add_decision(ft)
    flags.add_training(ft, TrainArgs())
    flags.add_runtime(ft)
    flags.add_checkpoints(ft)
    ft.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bertkit.evaluation.report import write_report
    from bertkit.tasks import registry
    from bertkit.training.finetune import finetune
    from bertkit.training.run import Resumable

    output = Path(args.output)
    resumable = Resumable.beside(output, args.save_every, args.resume)
    rt = flags.runtime(args, distributed=True)
    try:
        task, train, dev, test = registry.build(args.task, vars(args), flags.data_opts(args))
        assert dev is not None  # --dev is required
        targs = flags.train_args(args, TrainArgs(**task.train_overrides))
        if rt.main:
            print(f"fine-tuning on {rt.describe()}")
            if (read_as := task.read_as()) is not None:
                print(f"{args.train}: {read_as}")
        metrics = finetune(
            task,
            Path(args.model),
            train,
            dev,
            test,
            output,
            targs,
            args.overwrite,
            write_report,
            resumable,
            rt,
        )
    finally:
        rt.close()
    if rt.main:
        show(metrics, args.output)


def show(metrics: dict, output: str) -> None:
    """The run's dev/test scores and time, as the command ends."""
    for split in ("dev", "test"):
        if split in metrics:
            shown = {k: round(v, 4) for k, v in metrics[split].items() if isinstance(v, float)}
            print(f"{split}: {shown}")
    print(f"trained in {metrics['train']['seconds']} s; model and report in {output}")
