"""The training loop shared by every task (and by pretraining).

Plain code read top to bottom: the caller brings batches, a loss function and an evaluation;
`fit` runs AdamW with warm-up and linear decay and leaves the model with the best weights seen.
Its pieces are small and named: `Log` (JSON lines, TensorBoard, the progress bar), `Stepper`
(one optimizer step: accumulation, DDP `no_sync`, autocast, clipping, the one non-finite path),
`Keeper` (best weights, patience) and `Halt` (time limit, SIGTERM/SIGINT, agreed by every rank).
No callbacks own the flow.

Long runs add a `Checkpointing`: a save function called every N steps, at the time limit and on
SIGTERM/SIGINT, with the optimizer, scheduler and RNG states to resume from exactly; and a state
to resume. Under torch.distributed (DDP/FSDP) every rank runs `fit`; gradients are synchronised
only on the last micro-batch of an accumulation; fine-tuning evaluates on rank 0 and tells the
others the result, pretraining evaluates a shard on every rank (`Evaluation.every_rank`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from bertkit.errors import BertkitError
from bertkit.options import option
from bertkit.runtime import Runtime, local_runtime
from bertkit.training.optim import linear_schedule, make_optimizer, warmup_steps_for
from bertkit.training.resume import restore_trainer_state, trainer_state

Batch = dict[str, Any]


@dataclass
class TrainArgs:
    """The training settings, each also a flag of the training commands (`bertkit.options`)."""

    epochs: float = option(3.0, help="passes over the data (default {default:g})")
    max_steps: int | None = option(None, help="optimizer steps (overrides --epochs; sets the schedule)")
    min_steps: int | None = option(
        None,
        unset=True,
        help="train at least this many optimizer steps, adding epochs over a small training set "
        "(--max-steps wins; default none{overrides})",
    )
    batch_size: int = option(32, help="examples per batch, all processes (default {default})")
    grad_accum: int = option(1, help="batches per optimizer step (default {default})")
    lr: float = option(5e-5, help="peak learning rate (default {default:g})")
    weight_decay: float = option(0.01, help="AdamW weight decay (default {default:g})")
    warmup: float = option(0.1, help="warm-up: share of steps if < 1, else steps (default {default:g})")
    max_grad_norm: float | None = 1.0
    eval_every: int | None = option(
        None, none="each epoch", help="evaluate every N steps (default {default})"
    )
    patience: int | None = option(None, help="early stopping: evaluations without gain")
    seed: int = option(42, help="random seed (default {default})")
    log_every: int = option(20, help="log the training loss every N steps ({default})")
    progress: bool = option(True, flag="--quiet", negated=True, help="no progress bar")
    tensorboard: bool = True
    nonfinite: str = option(
        "skip",
        flag="--on-nonfinite",
        choices=("skip", "stop"),
        help="NaN/inf loss or gradient: skip the step (default) or stop",
    )
    keep_best: bool = True  # end with the best weights seen by evaluation (else the last)
    group_by_length: bool = option(
        True,
        flag="--no-group-by-length",
        negated=True,
        help="plain shuffled batches instead of batches of similar lengths (more padding, slower)",
    )
    head_lr_mult: float = option(
        1.0,
        unset=True,
        help="the task layers (all but the encoder: classifier, CRF, BiLSTM, QA outputs) learn at "
        "--lr times this, in AdamW groups of their own (default {default:g}{overrides})",
    )


@dataclass
class Evaluation:
    fn: Callable[[nn.Module], dict[str, Any]]
    main_metric: str
    greater_is_better: bool = True
    every_rank: bool = False  # True: every rank evaluates its shard (and reduces); else rank 0 alone


@dataclass
class Checkpointing:
    """Saving and resuming a long run. `save(state)` gets the trainer state (step, epoch,
    optimizer, scheduler, RNG) and is called on every rank (FSDP gathers across them)."""

    save: Callable[[dict[str, Any]], None]
    every: int | None = None  # optimizer steps between saves
    resume: dict[str, Any] | None = None  # a state given earlier to `save`
    max_seconds: float | None = None  # stop (and save) after this much training time


@dataclass
class TrainResult:
    best_metrics: dict[str, Any] | None
    best_step: int
    steps: int
    seconds: float  # training time, evaluations excluded
    eval_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)  # every logged/eval record
    stopped_by: str | None = None  # "time", "SIGTERM", "SIGINT" when the run stopped early


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Log:
    """The run's record: `history`, log.jsonl and TensorBoard in `log_dir`, a progress bar."""

    def __init__(self, log_dir: Path | None, args: TrainArgs, total: int):
        self.history: list[dict[str, Any]] = []
        self.file = self.writer = self.bar = None
        self.loss_text, self.dev_text = "", ""
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(log_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed below
            if args.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(log_dir / "tensorboard"))
        if args.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)

    def record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        if self.file:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
        if self.writer:
            for k, v in entry.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, entry["step"])
        if "loss" in entry:
            self.loss_text = f"loss {entry['loss']:.4f}"
        if self.bar:
            self.bar.set_postfix_str(self.loss_text + self.dev_text)

    def evaluated(self, step: int, epoch: float, metrics: dict[str, Any], main: str) -> None:
        self.dev_text = f", dev {main} {metrics[main]:.4f}"
        scalars = {f"dev_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.record({"step": step, "epoch": epoch, **scalars})

    def advance(self, n: int = 1) -> None:
        if self.bar:
            self.bar.update(n)

    def close(self) -> None:
        for part in (self.bar, self.file, self.writer):
            if part is not None:
                part.close()


def _nonfinite(args: TrainArgs, what: str, step: int) -> None:
    """The one answer to a NaN/inf loss or gradient: stop the run, or warn and skip the step."""
    if args.nonfinite == "stop":
        raise BertkitError(f"training stopped: non-finite {what} at step {step}")
    print(f"warning: non-finite {what} at step {step}; step skipped")


class Stepper:
    """Optimizer steps from micro-batches: autocast forward, backward (DDP synchronises only on
    the last micro-batch of a step), clipping, the schedule. A non-finite loss or gradient skips
    the step (or stops); under torch.distributed only the all-reduced gradient norm decides, the
    same on every rank, so no rank skips alone."""

    def __init__(self, model: nn.Module, args: TrainArgs, rt: Runtime, total: int):
        self.model, self.args, self.rt = model, args, rt
        self.optimizer = make_optimizer(model, args.lr, args.weight_decay, args.head_lr_mult)
        self.scheduler = linear_schedule(self.optimizer, warmup_steps_for(total, args.warmup), total)
        self.scaler = rt.grad_scaler()  # fp16: the loss scaled so that gradients do not underflow
        self.micro, self.step, self.running = 0, 0, [0.0, 0]

    def forward_backward(self, loss_fn: Callable[[nn.Module, Batch], torch.Tensor], batch: Batch) -> None:
        last = self.micro + 1 >= self.args.grad_accum
        no_sync = getattr(self.model, "no_sync", None)
        sync = no_sync() if no_sync is not None and not last else contextlib.nullcontext()
        with sync, self.rt.autocast():
            loss = loss_fn(self.model, batch)
        if not self.rt.distributed and not torch.isfinite(loss):
            _nonfinite(self.args, "loss", self.step + 1)
            self.optimizer.zero_grad(set_to_none=True)
            self.micro = 0
            return
        with sync:
            self.scaler.scale(loss / self.args.grad_accum).backward()
        self.running[0] += loss.item()
        self.running[1] += 1
        self.micro += 1

    def ready(self) -> bool:
        return self.micro >= self.args.grad_accum

    def update(self) -> bool:
        """Clip and step; False when the step was skipped for a non-finite gradient. In fp16 an
        overflow of the scaled gradients is the loss scaler's to handle: it lowers the scale and
        the step is skipped, as its warm-up expects."""
        self.micro = 0
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm or math.inf)
        if not torch.isfinite(norm):
            if not self.scaler.is_enabled():
                _nonfinite(self.args, "gradient", self.step + 1)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return True

    def report(self) -> dict[str, float]:
        """The mean training loss since the last report, and the learning rate."""
        loss, n = self.running
        self.running = [0.0, 0]
        return {"loss": loss / max(1, n), "lr": float(self.scheduler.get_last_lr()[0])}


class Keeper:
    """The best evaluation so far (and its weights, in memory), and patience."""

    def __init__(self, args: TrainArgs, evaluation: Evaluation | None):
        self.args, self.evaluation = args, evaluation
        self.score: float | None = None
        self.metrics: dict[str, Any] | None = None
        self.step, self.without_gain = 0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, metrics: dict[str, Any], step: int, model: nn.Module | None) -> bool:
        """Note an evaluation; True when patience has run out. `model` is None on ranks that
        keep no weights."""
        assert self.evaluation is not None
        score = metrics[self.evaluation.main_metric]
        better = self.score is None or (
            score > self.score if self.evaluation.greater_is_better else score < self.score
        )
        if better:
            self.score, self.metrics, self.step, self.without_gain = score, metrics, step, 0
            if self.args.keep_best and model is not None:  # a copy is cheaper than a disk write
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.without_gain += 1
        return self.args.patience is not None and self.without_gain >= self.args.patience

    def saved(self) -> dict[str, Any]:
        return {
            "best_score": None if self.score is None else float(self.score),
            "best_step": self.step,
            "best_metrics": json.dumps(self.metrics, default=_plain),
            "evals_without_gain": self.without_gain,
            "best_state": self.state,  # the best weights so far
        }

    def restore(self, loop: dict[str, Any]) -> None:
        self.score, self.step = loop["best_score"], loop["best_step"]
        self.metrics, self.state = json.loads(loop["best_metrics"]), loop["best_state"]
        self.without_gain = loop["evals_without_gain"]


class Halt:
    """Why a checkpointed run should stop now: SIGTERM/SIGINT (the step in hand is finished and
    saved first) or the time limit; every rank agrees."""

    def __init__(self, ck: Checkpointing | None, rt: Runtime):
        self.ck, self.rt, self.old = ck, rt, {}
        self.signals: list[str] = []
        self.started = time.perf_counter()
        if ck is not None and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.old[sig] = signal.signal(sig, lambda n, _: self.signals.append(signal.Signals(n).name))

    def check(self, eval_seconds: float) -> str | None:
        if self.ck is None:
            return None
        limit = self.ck.max_seconds
        over = limit is not None and time.perf_counter() - self.started - eval_seconds >= limit
        if not self.rt.any(over or bool(self.signals)):
            return None
        return self.signals[0] if self.signals else "time"

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _evaluate(model: nn.Module, ev: Evaluation, rt: Runtime) -> dict[str, Any]:
    """Evaluation metrics on every rank: from every rank's shard, or from rank 0 (on the bare
    model: a DDP wrapper's forward would wait for the other ranks) and broadcast."""
    model.eval()
    metrics: dict[str, Any] | None = None
    with torch.inference_mode(), rt.autocast():
        if ev.every_rank:
            metrics = ev.fn(model)
        elif rt.main:
            metrics = ev.fn(getattr(model, "module", model))
    model.train()
    return cast("dict[str, Any]", metrics) if ev.every_rank else rt.broadcast(metrics)


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable[Batch]],
    steps_per_epoch: int,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    args: TrainArgs,
    rt: Runtime | None = None,
    evaluation: Evaluation | None = None,
    log_dir: Path | None = None,
    checkpointing: Checkpointing | None = None,
) -> TrainResult:
    """Train `model` in place and leave it holding the best weights seen by `evaluation`.

    `batches(epoch)` yields the batches of one epoch (its own shuffling, seeded by epoch);
    `steps_per_epoch` is how many batches it yields; `loss_fn(model, batch)` returns a scalar.
    When resuming, the first call is `batches(state["epoch"])`, which must skip the batches that
    epoch already gave (`state["epoch_step"]` optimizer steps of `grad_accum` batches each).
    `rt` (default: a local runtime on the model's device) gives the device and precision.
    """
    rt = rt or local_runtime(next(model.parameters()).device)
    per_epoch = max(1, steps_per_epoch // args.grad_accum)
    total = args.max_steps or max(1, math.ceil(args.epochs * per_epoch), args.min_steps or 0)
    set_seed(args.seed)
    run = _Run(model, args, rt, evaluation, checkpointing, per_epoch, total, log_dir if rt.main else None)
    epoch = 0
    if checkpointing is not None and checkpointing.resume is not None:
        epoch = _resume(checkpointing.resume, run.stepper, run.keeper, run.log)
    model.train()
    run.stepper.optimizer.zero_grad(set_to_none=True)
    stop = run.stepper.step >= total  # a run resumed from its last checkpoint has nothing left to train
    try:
        while not stop:
            seen = 0
            for batch in batches(epoch):
                seen += 1
                run.stepper.forward_backward(loss_fn, rt.to_device(batch))
                if not run.stepper.ready() or not run.stepper.update():
                    continue
                stop = run.after_update()
                if stop:
                    break
            if seen == 0:
                raise ValueError("the training data yielded no batches")
            epoch += 1
    finally:
        run.halt.restore()
        run.log.close()
    return run.result()


class _Run:
    """One `fit` call's state between optimizer steps: logging, evaluation, keeping the best
    weights, checkpoints and the reasons to stop."""

    def __init__(
        self,
        model: nn.Module,
        args: TrainArgs,
        rt: Runtime,
        evaluation: Evaluation | None,
        ck: Checkpointing | None,
        per_epoch: int,
        total: int,
        log_dir: Path | None,
    ):
        self.model, self.args, self.rt, self.evaluation, self.ck = model, args, rt, evaluation, ck
        self.per_epoch, self.total, self.eval_every = per_epoch, total, args.eval_every or per_epoch
        self.stepper, self.keeper = Stepper(model, args, rt, total), Keeper(args, evaluation)
        self.log, self.halt = Log(log_dir, args, total), Halt(ck, rt)
        self.bare = getattr(model, "module", model)  # under DDP: the model inside the wrapper
        self.eval_seconds = 0.0
        self.stopped_by: str | None = None

    def after_update(self) -> bool:
        """Log, evaluate and checkpoint after optimizer step `stepper.step`; whether to stop."""
        step, args, stop = self.stepper.step, self.args, False
        self.log.advance()
        if step % args.log_every == 0 or step == self.total:
            self.log.record({"step": step, "epoch": round(step / self.per_epoch, 4), **self.stepper.report()})
        ev = self.evaluation
        if ev is not None and (step % self.eval_every == 0 or step == self.total):
            t0 = time.perf_counter()
            metrics = _evaluate(self.model, ev, self.rt)
            self.eval_seconds += time.perf_counter() - t0
            self.log.evaluated(step, round(step / self.per_epoch, 4), metrics, ev.main_metric)
            stop = self.keeper.update(metrics, step, self.bare if self.rt.main else None)
        if self.ck is not None:
            self.stopped_by = self.halt.check(self.eval_seconds)
            stop = stop or self.stopped_by is not None
            if stop or step >= self.total or (self.ck.every and step % self.ck.every == 0):
                _save(self.ck, self.model, self.stepper, self.keeper, self.log.history, self.per_epoch)
        return stop or step >= self.total

    def result(self) -> TrainResult:
        """The model left holding the best weights, in eval mode, and what the run did."""
        if self.keeper.state is not None:
            self.bare.load_state_dict(self.keeper.state)
        self.model.eval()
        seconds = time.perf_counter() - self.halt.started - self.eval_seconds
        k = self.keeper
        history = self.log.history
        return TrainResult(
            k.metrics, k.step, self.stepper.step, seconds, self.eval_seconds, history, self.stopped_by
        )


def _save(
    ck: Checkpointing, model: nn.Module, stepper: Stepper, keeper: Keeper, history: list, per_epoch: int
):
    loop = {**keeper.saved(), "history": json.dumps(history, default=_plain), "running": stepper.running}
    state = trainer_state(model, stepper.optimizer, stepper.scheduler, stepper.step, per_epoch)
    ck.save({**state, "scaler": stepper.scaler.state_dict(), "loop": loop})


def _resume(state: dict[str, Any], stepper: Stepper, keeper: Keeper, log: Log) -> int:
    """Optimizer, scheduler, RNG and what the loop knew, from a checkpoint; returns the epoch."""
    stepper.step, epoch = restore_trainer_state(state, stepper.model, stepper.optimizer, stepper.scheduler)
    if state.get("scaler"):  # fp16 runs: the loss scale reached
        stepper.scaler.load_state_dict(state["scaler"])
    loop = state.get("loop")
    if loop is not None:  # the best evaluation so far, the record
        keeper.restore(loop)
        log.history[:] = json.loads(loop["history"])
        stepper.running = list(loop["running"])
    log.advance(stepper.step)
    return epoch


def _plain(obj: Any) -> Any:
    """JSON for numpy values in metrics."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def args_dict(args: TrainArgs) -> dict[str, Any]:
    return asdict(args)
