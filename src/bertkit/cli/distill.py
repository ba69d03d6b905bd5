"""`bertkit distill`: a fine-tuned directory (the teacher) trains a smaller one (the student)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertkit.cli import flags
from bertkit.cli.options import add_options, build
from bertkit.options import options_of
from bertkit.tasks.registry import FORMATS
from bertkit.training.distill_student import DistillArgs
from bertkit.training.loop import TrainArgs


def add_parser(sub) -> None:
    from bertkit.tasks.registry import distillable

    p = sub.add_parser(
        "distill",
        help="distil a fine-tuned model into a smaller one (knowledge distillation)",
        description="Train a student on the soft targets of a fine-tuned classification or NER model "
        "(the teacher) and the gold labels. The student is a copy of the teacher with fewer layers, or "
        "a preset / model directory of the teacher's vocabulary; the output is an ordinary fine-tuned "
        "directory (model, tokenizer, metrics.json with the teacher's scores, report/).",
    )
    p.add_argument("--task", choices=distillable(), required=True, help="the teacher's task (checked)")
    flags.add_model(p, "the fine-tuned model to distil", "--teacher")
    p.add_argument("--train", required=True, help="labelled training file (the teacher's labels)")
    p.add_argument("--dev", required=True, help="development file: evaluated during training, picks the best")
    p.add_argument("--test", help="test file, evaluated once with the best weights (the teacher's too)")
    p.add_argument(
        "--unlabeled",
        help="in-domain texts without labels, taught by the teacher's soft targets alone: one text a "
        'line, or JSON lines with "text" (as bertkit predict reads them)',
    )
    p.add_argument(
        "--unlabeled-format",
        choices=FORMATS,
        default=None,
        help="read --unlabeled with the task's reader in this format instead (its labels are not used)",
    )
    flags.add_run_output(p)
    add_options(p.add_argument_group("distillation"), DistillArgs(), options_of(DistillArgs))
    flags.add_data(p)
    flags.add_training(p, TrainArgs())
    flags.add_runtime(p)
    flags.add_checkpoints(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bertkit.cli.finetune import show
    from bertkit.errors import BertkitError
    from bertkit.evaluation.report import write_report
    from bertkit.tasks import registry
    from bertkit.training.distill import Data, distill, read_labelled, read_unlabeled
    from bertkit.training.run import Resumable

    output = Path(args.output)
    resumable = Resumable.beside(output, args.save_every, args.resume)
    rt = flags.runtime(args, distributed=True)
    try:
        task = registry.from_dir(args.teacher)
        if task.name != args.task:
            raise BertkitError(
                f"--task {args.task}, but the teacher was fine-tuned for {task.name}", args.teacher
            )
        opts = flags.data_opts(args)
        data = Data(
            read_labelled(task, args.train, args.format, opts),
            read_labelled(task, args.dev, args.format, opts),
            read_labelled(task, args.test, args.format, opts) if args.test else None,
            read_unlabeled(task, args.unlabeled, args.unlabeled_format, opts) if args.unlabeled else [],
        )
        settings = build(args, DistillArgs())
        targs = flags.train_args(args, TrainArgs(**task.train_overrides))
        if rt.main:
            print(f"distilling on {rt.describe()}")
        metrics = distill(
            task,
            Path(args.teacher),
            data,
            output,
            targs,
            settings,
            args.overwrite,
            write_report,
            resumable,
            rt,
        )
    finally:
        rt.close()
    if rt.main:
        d = metrics["distill"]
        print(f"student: {d['student_layers']} layers ({d['student']}), {d['compression']}x fewer parameters")
        print(f"teacher: { {s: m.get(task.main_metric) for s, m in metrics['teacher'].items()} }")
        show(metrics, args.output)
