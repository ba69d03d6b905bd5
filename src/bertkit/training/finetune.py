"""Fine-tune a checkpoint on a task and write a complete, loadable output directory.

The run is staged in a hidden sibling directory and renamed into place only when everything
(model, tokenizer, metrics, report) is written, so an interrupted run never leaves an output
directory that looks complete.

Under torchrun (DDP) every rank builds the same features and the same shuffled batches; each
takes its slice of every batch (`--batch-size` is the global batch), and each slice's summed loss
is divided by the whole batch's count (`Task.loss_count`), so 1 and N processes take the same
steps. Rank 0 alone evaluates, keeps the best weights and writes the output and checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bertkit.hub import resolve
from bertkit.models.config import BertConfig, check_tokenizer
from bertkit.runtime import Runtime, local_runtime
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training.loop import TrainArgs, set_seed
from bertkit.training.run import (
    Resumable,
    Resume,
    Trained,
    check_training,
    dev_predictions,
    fit_task,
    labelled_features,
    run_settings,
    staged_run,
    training_batches,
    write_output,
)


def train_model(
    task: Task,
    model_dir: Path,
    train_examples: list,
    dev_examples: list,
    args: TrainArgs,
    rt: Runtime | None = None,
    log_dir: Path | None = None,
    resumable: Resumable | None = None,
) -> Trained:
    """Build `task`'s model from `model_dir` and train it, keeping the best weights on the dev set.
    With `resumable`, checkpoints are written as it trains and a resumed run continues exactly."""
    rt = rt or local_runtime()
    check_training(args, rt)
    set_seed(args.seed)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    config = BertConfig.from_pretrained(model_dir)
    check_tokenizer(config, tokenizer, model_dir)
    task.configure(config)
    train_feats = labelled_features(task, tokenizer, train_examples, args.batch_size)
    resume = Resume.start(resumable, run_settings(args, rt), len(train_feats), rt)
    model = task.load_model(resume.last or model_dir, config=config, ignore_mismatched_sizes=True)
    model = model.to(rt.device)
    dev_feats = task.features(tokenizer, dev_examples)
    pad = tokenizer.pad_token_id

    def evaluate(m: torch.nn.Module) -> dict:
        return task.metrics(dev_examples, dev_predictions(task, m, dev_feats, dev_examples, pad))

    batches = training_batches(task, train_feats, args, pad, rt)
    result = fit_task(task, model, batches, task.loss, evaluate, args, rt, resume, log_dir)
    return Trained(model, tokenizer, config, result, dev_feats, len(train_examples))


def finetune(
    task: Task,
    model_dir: Path,
    train_examples: list,
    dev_examples: list,
    test_examples: list | None,
    output: Path,
    args: TrainArgs,
    overwrite: bool = False,
    write_report: Callable[..., None] | None = None,
    resumable: Resumable | None = None,
    rt: Runtime | None = None,
) -> dict[str, Any]:
    """Train `task`'s model from `model_dir`; returns the metrics written to metrics.json (on
    every rank). The checkpoints of a `resumable` run are removed once the output is in place.
    `model_dir` may be a Hub name (see `bertkit.hub`)."""
    rt = rt or local_runtime()
    model_dir = resolve(model_dir)

    def train(stage: Path | None) -> Trained:
        return train_model(task, model_dir, train_examples, dev_examples, args, rt, stage, resumable)

    def write(stage: Path, t: Trained) -> dict[str, Any]:
        return write_output(stage, task, t, dev_examples, test_examples, args, write_report)

    return staged_run(output, overwrite, rt, resumable, train, write)
