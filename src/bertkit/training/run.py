"""The run skeleton every training command shares: check → prepare data → build model → fit →
write, and what each step needs around it.

    check_training      settings that cannot run are refused before anything is read or written
    labelled_features   the training features with labels, the task prepared on them
    training_batches    each rank's slice of the same length-grouped batches (`--batch-size` global)
    Resumable           checkpoints in OUTPUT-checkpoints/ every N steps and on SIGTERM/SIGINT;
    resume_from,        a resumed run checks its settings against the checkpoint's and skips the
    resuming, Resume    batches it trained on, so it continues exactly (`Resume.start`)
    checkpointing       the `Checkpointing` `fit` calls (rank 0 writes, every rank waits)
    wrap, full_state    the one DDP (or FSDP2) wrap, and the whole model's state back from it
    stop_if_signalled   a run stopped by a signal ends as an interruption, its checkpoint written
    fit_task            `fit` with all of the above: resumed batches, the wrap, checkpoints, the rule
    staged_run          train on every rank, write into a hidden stage on rank 0, rename into place
    write_output        a fine-tuned directory: model, tokenizer, metrics.json, train_args.json, report

`finetune` and `distill` are short recipes over these steps; `pretrain` uses the wrap, the
interruption rule, `checkpoint_saver` and the checkpoint files (`resume`) with its own data
position.
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
from bertkit.models.encoder import BertModel
from bertkit.options import option
from bertkit.runtime import Runtime
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training.loop import Checkpointing, Evaluation, TrainArgs, TrainResult, fit
from bertkit.training.resume import checkpoints, read_trainer_state, remove_partial, write_checkpoint

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
class CheckpointOptions:
    """Checkpoints of a fine-tuning or distillation run, each also a flag of those commands."""

    save_every: int | None = option(
        None,
        help="write a checkpoint every N optimizer steps (and on SIGTERM/Ctrl-C) to OUTPUT-checkpoints/, "
        "removed once the run completes",
    )
    resume: bool = option(
        False, help="continue from the newest checkpoint in OUTPUT-checkpoints/ (same settings; checked)"
    )


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
    """The run's checkpoints; `model` (its save_pretrained) writes the weights of each."""
    every = resumable.every or (state or {}).get("every")
    write_model = cast("PretrainedMixin", model).save_pretrained
    save = checkpoint_saver(resumable.root, resumable.keep, rt, {"run": run, "every": every}, write_model)
    if state is not None and log_dir is not None:  # the record so far, in the new run's log
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "log.jsonl", "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in map(json.dumps, json.loads(state["loop"]["history"])))
    return Checkpointing(save=save, every=every, resume=state)


def checkpoint_saver(
    root: Path,
    keep: int,
    rt: Runtime,
    record: dict[str, Any],
    write_model: Callable[[Path], None] | None = None,
    gather: Callable[[], Callable[[Path], None]] | None = None,
) -> Callable[[dict], None]:
    """`Checkpointing.save` for a run: called on every rank with the trainer state, rank 0 writes
    root/step-N (the state plus `record`, the model by `write_model`) and every rank waits for it.
    `gather()`, when given, runs on every rank first (FSDP gathers the weights) and returns the
    model writer."""

    def save(trainer_state: dict) -> None:
        writer = gather() if gather is not None else write_model
        if rt.main:
            assert writer is not None
            write_checkpoint(root, {**trainer_state, **record}, writer, keep)
        rt.barrier()

    return save


def wrap(model: torch.nn.Module, rt: Runtime, fsdp: bool = False) -> torch.nn.Module:
    """The model as the processes train it: itself in a world of one, DDP across processes, or
    FSDP2 with `fsdp` (`fully_shard` each encoder layer, then the whole)."""
    if not rt.distributed and not fsdp:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        if not torch.distributed.is_initialized():
            raise BertkitError("--fsdp needs torch.distributed: run under torchrun")
        for layer in [m for m in model.modules() if isinstance(m, BertModel)][0].layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def full_state(wrapped: torch.nn.Module, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state on CPU (gathered from every rank under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if wrapped is model and not torch.distributed.is_initialized():
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Full and offloaded: plain CPU tensors, not the DTensor/ShardedTensor the return type allows.
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return cast("dict[str, torch.Tensor]", full)


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


def labelled_features(task: Task, tokenizer: Tokenizer, examples: list, batch_size: int) -> list[dict]:
    """The training examples' features that carry labels, with the task prepared on them (first:
    a bad --class-weights file stops the run here, before anything is trained)."""
    feats = [f for f in task.features(tokenizer, examples) if task.trainable(f)]
    if not feats:
        raise BertkitError("no training examples with labels")
    task.prepare(feats, batch_size)
    return feats


@dataclass
class Resume:
    """Where a run checkpoints (`resumable`, None: nowhere), what it resumes from (`last`, the
    newest checkpoint's directory, and `state`, its trainer state) and the record its
    checkpoints keep (the settings a resumed run must share, the number of training features)."""

    resumable: Resumable | None
    record: dict[str, Any]
    last: Path | None = None
    state: dict | None = None

    @classmethod
    def start(cls, resumable: Resumable | None, run: dict, n_train: int, rt: Runtime) -> Resume:
        """The run's resume point: the newest checkpoint of `resumable`, checked against `run`."""
        last, state = resume_from(resumable, run, n_train, rt) if resumable else (None, None)
        return cls(resumable, {"args": run, "train_features": n_train}, last, state)


def fit_task(
    task: Task,
    model: torch.nn.Module,
    batches: tuple[Callable[..., Iterator[dict]], int],
    loss: Callable[[torch.nn.Module, dict], torch.Tensor],
    evaluate: Callable[[torch.nn.Module], dict],
    args: TrainArgs,
    rt: Runtime,
    resume: Resume,
    log_dir: Path | None,
) -> TrainResult:
    """`fit` as the training commands run it: `batches` (`training_batches`'s) less those a
    resumed run trained on, the model wrapped for the processes, `evaluate` scoring by the
    task's main metric, checkpoints when the run has them; a run stopped by a signal ends as an
    interruption."""
    epoch_batches, steps = batches
    evaluation = Evaluation(evaluate, task.main_metric, task.greater_is_better)
    ck = None
    if resume.resumable is not None:
        ck = checkpointing(resume.resumable, resume.state, resume.record, model, rt, log_dir)
    result = fit(wrap(model, rt), resuming(epoch_batches, resume.state, args), steps, loss, args, rt,
                 evaluation, log_dir, ck)  # fmt: skip
    stop_if_signalled(result, rt)
    return result


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
