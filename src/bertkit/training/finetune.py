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

import contextlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from bertkit.data.batching import length_grouped_order, pad_batch
from bertkit.errors import BertkitError
from bertkit.fileio import check_new_output, staged_output, write_json
from bertkit.models.config import BertConfig
from bertkit.runtime import Runtime, local_runtime
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training.loop import Checkpointing, Evaluation, TrainArgs, TrainResult, fit, set_seed

if TYPE_CHECKING:
    from bertkit.models.checkpoint import PretrainedMixin

LABEL_KEYS = ("labels", "start_positions", "end_positions")


def training_batches(
    task: Task,
    feats: list[dict],
    args: TrainArgs,
    pad_id: int,
    rt: Runtime,
    extra: Callable[[list[int], list[int]], dict] | None = None,
) -> tuple[Callable[..., Iterator[dict]], int]:
    """`batches(epoch, skip)`: this rank's slices of the epoch's batches (the order a function of
    seed and epoch alone), less the first `skip`, which a resumed run has already trained on.
    `extra(mine, whole)`: more fields for the batch of rows `mine` (this rank's feature indices,
    empty for a rank left without any) of the whole batch `whole` (distillation's teacher logits)."""
    lengths = [len(f["input_ids"]) for f in feats]
    keys = [k for k in LABEL_KEYS if k in feats[0]]

    def batches(epoch: int, skip: int = 0) -> Iterator[dict]:
        order = length_grouped_order(lengths, args.batch_size, args.seed + epoch, args.group_by_length)
        for idx in order[skip:]:
            share = -(-len(idx) // rt.world)
            mine = idx[rt.rank * share : (rt.rank + 1) * share]
            batch = pad_batch([feats[i] for i in (mine or idx[:1])], pad_id, keys)
            # a rank left without examples (a last batch smaller than the world) adds nothing
            norm = task.loss_count([feats[i] for i in idx]) / rt.world if mine else float("inf")
            more = extra(mine, idx) if extra is not None else {}
            yield {**batch, **more, "loss_norm": max(norm, 1e-12)}

    return batches, -(-len(feats) // args.batch_size)


@dataclass
class Resumable:
    """Checkpoints of a fine-tuning run in `root` (OUTPUT-checkpoints): `root/step-N` every
    `every` optimizer steps and on SIGTERM/SIGINT; `resume` continues from the newest."""

    root: Path
    every: int | None = None
    resume: bool = False
    keep: int = 1

    @classmethod
    def beside(cls, output: Path, every: int | None, resume: bool) -> Resumable | None:
        if every is None and not resume:
            return None
        if every is not None and every < 1:
            raise BertkitError(f"--save-every must be a positive number of steps, not {every}")
        return cls(output.parent / f"{output.name}-checkpoints", every, resume)


# settings a resumed run must share with the run it resumes (patience may change)
SAME_RUN = ("epochs", "max_steps", "min_steps", "batch_size", "grad_accum", "lr", "weight_decay", "warmup",
            "max_grad_norm", "eval_every", "seed", "group_by_length", "head_lr_mult")  # fmt: skip
# what a checkpoint written before a setting existed ran with (head_lr_mult 1: the two groups;
# min_steps None: epochs alone)
SAME_RUN_BEFORE = {"head_lr_mult": 1.0, "min_steps": None}


def run_settings(args: TrainArgs, rt: Runtime) -> dict[str, Any]:
    return {**{k: getattr(args, k) for k in SAME_RUN}, "precision": rt.compute}


def resume_from(ck: Resumable, run: dict, n_train: int, rt: Runtime) -> tuple[Path | None, dict | None]:
    """The newest complete checkpoint and its trainer state, checked against this run."""
    from bertkit.training.resume import checkpoints, read_trainer_state, remove_partial

    if rt.main:
        remove_partial(ck.root)  # what a killed run left of a checkpoint it was writing
    rt.barrier()
    found = checkpoints(ck.root)
    if found and not ck.resume:
        raise BertkitError(
            "checkpoints of an earlier run: pass --resume to continue it, or remove them", ck.root
        )
    if not found:
        if ck.resume and rt.main:
            print(f"no checkpoint in {ck.root}: starting from the beginning")
        return None, None
    state = read_trainer_state(found[-1])
    saved = state.get("run", {})
    for k, v in run.items():
        was = saved.get("args", {}).get(k, SAME_RUN_BEFORE.get(k, v))
        if was != v:
            flag = k.replace("_", "-")
            raise BertkitError(f"--resume with {flag} {v!r}, but the run used {was!r}", found[-1])
    if saved.get("train_features") not in (None, n_train):
        raise BertkitError(
            f"--resume with {n_train} training features, but the run had {saved['train_features']}: "
            "the training file or the task settings changed",
            found[-1],
        )
    if rt.main:
        print(f"resuming from {found[-1]} (step {state['step']})")
    return found[-1], state


def dev_predictions(task: Task, model: torch.nn.Module, feats: list[dict], examples: list, pad: int) -> list:
    """The dev set's predictions, after the task has tuned its decision settings on them."""
    tuned = task.tune(model, feats, examples, pad)
    return tuned if tuned is not None else task.predict(model, feats, examples, pad)


@dataclass
class Trained:
    model: torch.nn.Module  # the bare model (not a DDP wrapper), holding the best weights
    tokenizer: Tokenizer
    config: BertConfig
    result: TrainResult
    dev_feats: list[dict]
    examples: int  # training examples


def checkpointing(
    resumable: Resumable,
    state: dict | None,
    run: dict,
    model: torch.nn.Module,
    rt: Runtime,
    log_dir: Path | None,
) -> Checkpointing:
    from bertkit.training.resume import write_checkpoint

    """The run's checkpoints; `model` (its save_pretrained) writes the weights of each."""
    every = resumable.every or (state or {}).get("every")

    def save(trainer_state: dict) -> None:  # called on every rank; rank 0 writes
        if rt.main:
            trainer_state = {**trainer_state, "run": run, "every": every}
            save_model = cast("PretrainedMixin", model).save_pretrained
            write_checkpoint(resumable.root, trainer_state, save_model, resumable.keep)
        rt.barrier()

    if state is not None and log_dir is not None:  # the record so far, in the new run's log
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "log.jsonl", "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in map(json.dumps, json.loads(state["loop"]["history"])))
    return Checkpointing(save=save, every=every, resume=state)


def ddp_wrap(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    if not rt.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def check_training(args: TrainArgs, rt: Runtime) -> None:
    """Refuse training settings that cannot run (before anything is read or written)."""
    per_rank, rem = divmod(args.batch_size, rt.world)
    if rem or per_rank == 0:
        raise BertkitError(f"--batch-size {args.batch_size} must be a multiple of the {rt.world} processes")
    if not args.head_lr_mult > 0:
        raise BertkitError(f"--head-lr-mult must be a positive number, not {args.head_lr_mult:g}")


def resuming(
    epoch_batches: Callable[..., Iterator[dict]], state: dict | None, args: TrainArgs
) -> Callable[[int], Iterator[dict]]:
    """`batches(epoch)` for `fit`: the epoch's batches, less those a resumed run trained on."""
    first = state

    def batches(epoch: int) -> Iterator[dict]:
        nonlocal first
        skip = 0
        if first is not None and epoch == first["epoch"]:  # batches the checkpointed run trained on
            skip, first = first["epoch_step"] * args.grad_accum, None
        return epoch_batches(epoch, skip)

    return batches


def stop_if_signalled(result: TrainResult, rt: Runtime) -> None:
    """A run stopped by SIGTERM/SIGINT (its checkpoint written) ends as an interruption."""
    if result.stopped_by in ("SIGTERM", "SIGINT"):
        if rt.main:
            print(f"stopped by {result.stopped_by} at step {result.steps}; continue with --resume")
        raise KeyboardInterrupt


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
    task.configure(config)
    train_feats = [f for f in task.features(tokenizer, train_examples) if task.trainable(f)]
    if not train_feats:
        raise BertkitError("no training examples with labels")
    task.prepare(train_feats, args.batch_size)  # first: a bad --class-weights file stops the run here
    run = run_settings(args, rt)
    last, state = resume_from(resumable, run, len(train_feats), rt) if resumable else (None, None)
    model = task.load_model(last or model_dir, config=config, ignore_mismatched_sizes=True).to(rt.device)
    dev_feats = task.features(tokenizer, dev_examples)
    pad = tokenizer.pad_token_id
    epoch_batches, steps = training_batches(task, train_feats, args, pad, rt)
    batches = resuming(epoch_batches, state, args)

    def evaluate(m: torch.nn.Module) -> dict:
        return task.metrics(dev_examples, dev_predictions(task, m, dev_feats, dev_examples, pad))

    evaluation = Evaluation(evaluate, task.main_metric, task.greater_is_better)
    record = {"args": run, "train_features": len(train_feats)}
    ck = checkpointing(resumable, state, record, model, rt, log_dir) if resumable else None
    result = fit(ddp_wrap(model, rt), batches, steps, task.loss, args, rt, evaluation, log_dir, ck)
    stop_if_signalled(result, rt)
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
    every rank). The checkpoints of a `resumable` run are removed once the output is in place."""
    rt = rt or local_runtime()

    def train(stage: Path | None) -> Trained:
        return train_model(task, model_dir, train_examples, dev_examples, args, rt, stage, resumable)

    def write(stage: Path, t: Trained) -> dict[str, Any]:
        return write_output(stage, task, t, dev_examples, test_examples, args, write_report)

    return staged_run(output, overwrite, rt, resumable, train, write)


def staged_run(
    output: Path,
    overwrite: bool,
    rt: Runtime,
    resumable: Resumable | None,
    train: Callable[[Path | None], Trained],
    write: Callable[[Path, Trained], dict[str, Any]],
) -> dict[str, Any]:
    """`train(stage)` on every rank (rank 0 gets the staging folder, its log's place), then
    `write(stage, trained)` on rank 0 and the stage renamed into place; the metrics `write`
    returns, on every rank. A `resumable` run's checkpoints are removed once the output is in place."""
    check_new_output(output, overwrite)  # on every rank: a refusal must stop them all
    stage_ctx = staged_output(output, overwrite) if rt.main else contextlib.nullcontext(None)
    with stage_ctx as stage:
        t = train(stage)
        metrics: dict[str, Any] = {}
        if rt.main:
            assert stage is not None  # rank 0 stages the output
            metrics = write(stage, t)
    rt.barrier()
    if rt.main and resumable is not None and resumable.root.is_dir():
        shutil.rmtree(resumable.root, ignore_errors=True)
    return rt.broadcast(metrics)


def write_output(
    stage: Path,
    task: Task,
    t: Trained,
    dev: list,
    test: list | None,
    args: TrainArgs,
    report,
    more: dict[str, Any] | None = None,
) -> dict:
    """The trained model, tokenizer, metrics.json (dev/test scores, training, and `more`),
    train_args.json and the report, written into `stage`."""
    pad = t.tokenizer.pad_token_id
    metrics: dict[str, Any] = {}
    reports = {}
    for split, examples, feats in (("dev", dev, t.dev_feats), ("test", test, None)):
        if not examples:
            continue
        feats = feats if feats is not None else task.features(t.tokenizer, examples)
        with torch.inference_mode():
            if split == "dev":  # the best weights' decision settings (thresholds), then their scores
                preds = dev_predictions(task, t.model, feats, examples, pad)
            else:
                preds = task.predict(t.model, feats, examples, pad)
        metrics[split] = task.metrics(examples, preds)
        reports[split] = (examples, preds)
    if "dev" in metrics and (warning := task.diagnose(metrics["dev"], t.result.history)):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
        metrics["dev"]["warning"] = warning
    r = t.result
    metrics["train"] = {
        "seconds": round(r.seconds, 1),
        "eval_seconds": round(r.eval_seconds, 1),
        "steps": r.steps,
    }
    metrics["train"] |= {"best_step": r.best_step, "examples": t.examples}
    metrics |= more or {}
    t.config.extra["bertkit"] = task.info()
    cast("PretrainedMixin", t.model).save_pretrained(stage)
    t.tokenizer.save_pretrained(stage)
    write_json(stage / "metrics.json", metrics)
    write_json(stage / "train_args.json", asdict(args))
    if report is not None:
        for split, (examples, preds) in reports.items():
            report(stage / "report" / split, task, examples, preds, metrics[split], t.result.history)
    return metrics
