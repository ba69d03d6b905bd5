"""`bertkit search`: grid search with k-fold cross-validation or a dev set (resumable)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path
from typing import Any, cast

from bertkit.cli import flags
from bertkit.errors import BertkitError
from bertkit.training.loop import TrainArgs


def add_parser(sub) -> None:
    se = sub.add_parser(
        "search",
        help="grid search with k-fold cross-validation or a dev set (resumable)",
        description="Train every point of a hyperparameter grid and rank them by the task's "
        "main metric, averaged over k folds of the training file (--folds) or on --dev. "
        "Re-running the same command resumes an interrupted search. Writes results.md, "
        "results.csv and best.json to --output. Runs in one process.",
    )
    flags.add_model(se, "the starting model")
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
        "max_steps, head_lr_mult, head, max_length",
    )
    flags.add_task(se)
    flags.add_data(se)
    flags.add_decision(se)
    flags.add_training(se, TrainArgs())
    flags.add_runtime(se)
    se.set_defaults(func=run, test=None)


def run(args: argparse.Namespace) -> None:
    from bertkit.tasks import registry
    from bertkit.training.search import TASK_KEYS, parse_grid, run_search

    rt = flags.runtime(args)
    grid = parse_grid(args.grid)
    if args.dev is None and args.folds is None:
        raise BertkitError("give --dev FILE or --folds K")
    task, train, dev, _ = registry.build(args.task, vars(args), flags.data_opts(args))
    bad = [k for k in grid if k in TASK_KEYS and not hasattr(task, k)]
    if bad:
        raise BertkitError(f"--grid {bad[0]}: not a setting of the {args.task} task")

    def make_task(params: dict):
        # Every task class is a dataclass; their base Task is not.
        return dataclasses.replace(cast(Any, task), **{k: v for k, v in params.items() if k in TASK_KEYS})

    task_axes = [k for k in sorted(grid) if k in TASK_KEYS]
    for values in itertools.product(*(grid[k] for k in task_axes)):  # refuse a bad point before training
        make_task(dict(zip(task_axes, values, strict=True)))  # (e.g. a CRF head with --class-weights)

    base = flags.train_args(args, TrainArgs(**task.train_overrides), progress=False, tensorboard=False)
    folds, fixed_dev = args.folds or 0, None if args.folds else dev
    best = run_search(
        make_task,
        Path(args.model),
        train,
        fixed_dev,
        grid,
        folds,
        base,
        Path(args.output),
        rt,
    )
    print(f"best: {best}\nresults in {args.output}/results.md")
