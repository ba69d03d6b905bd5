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
from bertkit.runtime import Runtime, local_runtime
from bertkit.training.optim import linear_schedule, make_optimizer, warmup_steps_for

Batch = dict[str, Any]


@dataclass
class TrainArgs:
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs when set
    min_steps: int | None = None  # at least this many: more epochs over a small training set
    batch_size: int = 32  # examples per batch, all processes together
    grad_accum: int = 1  # optimizer step every `grad_accum` batches
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps (< 1) or a number of steps
    max_grad_norm: float | None = 1.0
    eval_every: int | None = None  # optimizer steps between evaluations; None: once an epoch
    patience: int | None = None  # stop after this many evaluations without improvement
    seed: int = 42
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = True
    nonfinite: str = "skip"  # a NaN/inf loss: "skip" the step or "stop" the run
    keep_best: bool = True  # end with the best weights seen by evaluation (else the last)
    group_by_length: bool = True  # fine-tuning batches of similar lengths (else plain shuffled)
    head_lr_mult: float = 1.0  # the task layers' (all but the encoder's) lr is lr * this (optim.param_groups)


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
    eval_every = args.eval_every or per_epoch
    set_seed(args.seed)
    stepper, keeper = Stepper(model, args, rt, total), Keeper(args, evaluation)
    log, halt, ck = Log(log_dir if rt.main else None, args, total), Halt(checkpointing, rt), checkpointing
    epoch, eval_seconds, stopped_by = 0, 0.0, None
    bare = getattr(model, "module", model)  # under DDP: the model inside the wrapper
    if ck is not None and ck.resume is not None:
        epoch = _resume(ck.resume, stepper, keeper, log)

    model.train()
    stepper.optimizer.zero_grad(set_to_none=True)
    stop = stepper.step >= total  # a run resumed from its last checkpoint has nothing left to train
    try:
        while not stop:
            seen = 0
            for batch in batches(epoch):
                seen += 1
                stepper.forward_backward(loss_fn, rt.to_device(batch))
                if not stepper.ready() or not stepper.update():
                    continue
                step = stepper.step
                log.advance()
                if step % args.log_every == 0 or step == total:
                    log.record({"step": step, "epoch": round(step / per_epoch, 4), **stepper.report()})
                if evaluation is not None and (step % eval_every == 0 or step == total):
                    t0 = time.perf_counter()
                    metrics = _evaluate(model, evaluation, rt)
                    eval_seconds += time.perf_counter() - t0
                    log.evaluated(step, round(step / per_epoch, 4), metrics, evaluation.main_metric)
                    stop = keeper.update(metrics, step, bare if rt.main else None) or stop
                if ck is not None:
                    stopped_by = halt.check(eval_seconds)
                    stop = stop or stopped_by is not None
                    if stop or step >= total or (ck.every and step % ck.every == 0):
                        _save(ck, model, stepper, keeper, log.history, per_epoch)
                if step >= total or stop:
                    stop = True
                    break
            if seen == 0:
                raise ValueError("the training data yielded no batches")
            epoch += 1
    finally:
        halt.restore()
        log.close()
    if keeper.state is not None:
        bare.load_state_dict(keeper.state)
    model.eval()
    seconds = time.perf_counter() - halt.started - eval_seconds
    return TrainResult(
        keeper.metrics, keeper.step, stepper.step, seconds, eval_seconds, log.history, stopped_by
    )


def _save(
    ck: Checkpointing, model: nn.Module, stepper: Stepper, keeper: Keeper, history: list, per_epoch: int
):
    loop = {**keeper.saved(), "history": json.dumps(history, default=_plain), "running": stepper.running}
    state = _trainer_state(model, stepper.optimizer, stepper.scheduler, stepper.step, per_epoch)
    ck.save({**state, "scaler": stepper.scaler.state_dict(), "loop": loop})


def _resume(state: dict[str, Any], stepper: Stepper, keeper: Keeper, log: Log) -> int:
    """Optimizer, scheduler, RNG and what the loop knew, from a checkpoint; returns the epoch."""
    stepper.step, epoch = _restore(state, stepper.model, stepper.optimizer, stepper.scheduler)
    if state.get("scaler"):  # fp16 runs: the loss scale reached
        stepper.scaler.load_state_dict(state["scaler"])
    loop = state.get("loop")
    if loop is not None:  # the best evaluation so far, the record
        keeper.restore(loop)
        log.history[:] = json.loads(loop["history"])
        stepper.running = list(loop["running"])
    log.advance(stepper.step)
    return epoch


def _trainer_state(model, optimizer, scheduler, step: int, updates_per_epoch: int) -> dict[str, Any]:
    """What resuming needs besides the weights. Under FSDP the optimizer state is gathered
    whole (full_state_dict), so a checkpoint loads whatever the world size."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {
        "step": step,
        "epoch": step // updates_per_epoch,
        "epoch_step": step % updates_per_epoch,
        "optimizer": get_optimizer_state_dict(model, optimizer, options=options),
        "scheduler": scheduler.state_dict(),
        "rng_torch": _per_rank(torch.get_rng_state()),  # (world, n): ranks draw dropout apart
        "rng_cuda": _per_rank(torch.cuda.get_rng_state()) if torch.cuda.is_available() else None,
        "rng_python": random.getstate(),
    }


def _plain(obj: Any) -> Any:
    """JSON for numpy values in metrics."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def _per_rank(state: torch.Tensor) -> torch.Tensor:
    """Every rank's copy of an RNG state, stacked (world, n), on every rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return state[None]
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    mine = state.to(torch.int64).to(device)  # gloo gathers byte tensors wrongly; widen them
    rows = [torch.empty_like(mine) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(rows, mine)
    return torch.stack(rows).cpu().to(torch.uint8)


def _mine(states: torch.Tensor) -> torch.Tensor:
    """This rank's row of a (world, n) RNG state (rank 0's when the world size changed)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return (states[rank] if rank < len(states) else states[0]).clone()  # a view would not do


def _restore(state: dict[str, Any], model, optimizer, scheduler) -> tuple[int, int]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(_mine(state["rng_torch"]))
    if state.get("rng_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(_mine(state["rng_cuda"]))
    random.setstate(state["rng_python"])
    return int(state["step"]), int(state["epoch"])


def args_dict(args: TrainArgs) -> dict[str, Any]:
    return asdict(args)
