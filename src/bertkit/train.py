"""The training loop shared by every task (and by pretraining).

Plain code read top to bottom: the caller brings batches, a loss function and an evaluation
function; `fit` runs AdamW with warm-up and linear decay, gradient accumulation and clipping,
bf16 autocast, periodic evaluation, keeps the best weights by the task's main metric, stops
early, and logs to JSON lines, TensorBoard and a progress bar. No callbacks own the flow.

Long runs (pretraining) add a `Checkpointing`: a save function called every N steps, at the
time limit and on SIGTERM/SIGINT, with the optimizer, scheduler and RNG states to resume from
exactly; and a state to resume. Under torch.distributed (DDP/FSDP) every rank runs `fit`;
gradients are synchronised only on the last micro-batch of an accumulation.
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
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.errors import BertkitError
from bertkit.hardware import bf16_is_fast
from bertkit.optim import linear_schedule, make_optimizer, warmup_steps_for


@dataclass
class TrainArgs:
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 32
    grad_accum: int = 1  # optimizer step every `grad_accum` batches
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps (< 1) or a number of steps
    max_grad_norm: float | None = 1.0
    bf16: bool | None = None  # None: on where bf16 is faster than fp32 (see hardware.py)
    eval_every: int | None = None  # optimizer steps between evaluations; None: once an epoch
    patience: int | None = None  # stop after this many evaluations without improvement
    seed: int = 42
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = True
    nonfinite: str = "skip"  # a NaN/inf loss: "skip" the step or "stop" the run
    keep_best: bool = True  # end with the best weights seen by evaluation (else the last)
    group_by_length: bool = True  # fine-tuning batches of similar lengths (else plain shuffled)


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


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    steps_per_epoch: int,
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    evaluate: Callable[[nn.Module], dict[str, Any]] | None,
    main_metric: str,
    args: TrainArgs,
    log_dir: Path | None = None,
    greater_is_better: bool = True,
    device: torch.device | None = None,
    checkpointing: Checkpointing | None = None,
) -> TrainResult:
    """Train `model` in place and leave it holding the best weights seen by `evaluate`.

    `batches(epoch)` yields the batches of one epoch (its own shuffling, seeded by epoch);
    `steps_per_epoch` is how many batches it yields; `loss_fn(model, batch)` returns a scalar.
    When resuming, the first call is `batches(state["epoch"])`, which must skip the batches that
    epoch already gave (`state["epoch_step"]` optimizer steps of `grad_accum` batches each).
    """
    device = device or next(model.parameters()).device
    use_bf16 = bf16_is_fast(device) if args.bf16 is None else args.bf16
    updates_per_epoch = max(1, steps_per_epoch // args.grad_accum)
    total = args.max_steps or max(1, math.ceil(args.epochs * updates_per_epoch))
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    scheduler = linear_schedule(optimizer, warmup_steps_for(total, args.warmup), total)
    eval_every = args.eval_every or updates_per_epoch

    log_file = writer = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(log_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed below
        if args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(log_dir / "tensorboard"))

    def record(entry: dict[str, Any]) -> None:
        history.append(entry)
        if log_file:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
        if writer:
            for k, v in entry.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(k, v, entry["step"])

    bar = None
    if args.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)

    history: list[dict[str, Any]] = []
    best_score, best_metrics, best_step, best_state = None, None, 0, None
    evals_without_gain = 0
    step, micro, running_loss, running_n = 0, 0, 0.0, 0
    start = time.perf_counter()
    eval_seconds = 0.0
    set_seed(args.seed)
    epoch = 0
    ck = checkpointing
    if ck is not None and ck.resume is not None:
        step, epoch = _restore(ck.resume, model, optimizer, scheduler)
        loop = ck.resume.get("loop")
        if loop is not None:  # what the loop knew: the best evaluation so far, the record
            best_score, best_step = loop["best_score"], loop["best_step"]
            best_metrics, history[:] = json.loads(loop["best_metrics"]), json.loads(loop["history"])
            evals_without_gain, best_state = loop["evals_without_gain"], loop["best_state"]
            running_loss, running_n = loop["running"]
        if bar:
            bar.update(step)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    stop = step >= total  # a run resumed from its last checkpoint has nothing left to train
    stopped_by: str | None = None
    signals: list[str] = []
    old_handlers = {}
    if ck is not None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):  # finish the step in hand, save, then stop
            old_handlers[sig] = signal.signal(sig, lambda n, _: signals.append(signal.Signals(n).name))

    def save() -> None:
        assert ck is not None
        loop = {
            "best_score": None if best_score is None else float(best_score),
            "best_step": best_step,
            "best_metrics": json.dumps(best_metrics, default=_plain),
            "evals_without_gain": evals_without_gain,
            "history": json.dumps(history, default=_plain),
            "best_state": best_state,  # the best weights so far (fine-tuning keeps them in memory)
            "running": [running_loss, running_n],
        }
        ck.save({**_trainer_state(model, optimizer, scheduler, step, updates_per_epoch), "loop": loop})

    last_loss, last_dev = float("nan"), ""
    try:
        while not stop:
            seen = 0
            for batch in batches(epoch):
                seen += 1
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                last_micro = micro + 1 >= args.grad_accum
                no_sync = getattr(model, "no_sync", None)  # DDP: all-reduce on the last micro-batch only
                sync = no_sync() if no_sync is not None and not last_micro else contextlib.nullcontext()
                with sync, autocast(device, use_bf16):
                    loss = loss_fn(model, batch)
                # Under torch.distributed a rank must not skip alone: a bad loss shows up in the
                # all-reduced gradient norm below, the same on every rank.
                if not distributed and not torch.isfinite(loss):
                    if args.nonfinite == "stop":
                        raise BertkitError(f"training stopped: non-finite loss at step {step + 1}")
                    print(f"warning: non-finite loss at step {step + 1}; step skipped")
                    optimizer.zero_grad(set_to_none=True)
                    micro = 0
                    continue
                with sync:
                    (loss / args.grad_accum).backward()
                running_loss += loss.item()
                running_n += 1
                micro += 1
                if micro < args.grad_accum:
                    continue
                micro = 0
                # clip (or, with clipping off, just measure): a NaN/inf norm means a bad step
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm or math.inf)
                if not torch.isfinite(grad_norm):
                    if args.nonfinite == "stop":
                        raise BertkitError(f"training stopped: non-finite gradient at step {step + 1}")
                    print(f"warning: non-finite gradient at step {step + 1}; step skipped")
                    optimizer.zero_grad(set_to_none=True)
                    continue
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if bar:
                    bar.update(1)
                if step % args.log_every == 0 or step == total:
                    entry = {
                        "step": step,
                        "epoch": round(step / updates_per_epoch, 4),
                        "loss": running_loss / max(1, running_n),
                        "lr": scheduler.get_last_lr()[0],
                    }
                    record(entry)
                    running_loss, running_n, last_loss = 0.0, 0, entry["loss"]
                    if bar:
                        bar.set_postfix_str(f"loss {last_loss:.4f}{last_dev}")
                if evaluate is not None and (step % eval_every == 0 or step == total):
                    model.eval()
                    t_eval = time.perf_counter()
                    with torch.inference_mode(), autocast(device, use_bf16):
                        metrics = evaluate(model)
                    eval_seconds += time.perf_counter() - t_eval
                    model.train()
                    record(
                        {
                            "step": step,
                            "epoch": round(step / updates_per_epoch, 4),
                            **{f"dev_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                        }
                    )
                    score = metrics[main_metric]
                    last_dev = f", dev {main_metric} {score:.4f}"
                    if bar:
                        bar.set_postfix_str(f"loss {last_loss:.4f}{last_dev}")
                    improved = best_score is None or (
                        score > best_score if greater_is_better else score < best_score
                    )
                    if improved:
                        best_score, best_metrics, best_step = score, metrics, step
                        if args.keep_best:  # in memory: a copy is cheaper than a disk write
                            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        evals_without_gain = 0
                    else:
                        evals_without_gain += 1
                        if args.patience is not None and evals_without_gain >= args.patience:
                            stop = True
                if ck is not None:
                    over_time = ck.max_seconds is not None and (
                        time.perf_counter() - start - eval_seconds >= ck.max_seconds
                    )
                    halt = over_time or bool(signals)
                    if distributed:  # every rank must agree to stop at the same step
                        flag = torch.tensor([float(halt)], device=device)
                        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                        halt = bool(flag.item())
                    if halt:
                        stopped_by = signals[0] if signals else "time"
                        stop = True
                    if stop or step >= total or (ck.every and step % ck.every == 0):
                        save()
                if step >= total or stop:
                    stop = True
                    break
            if seen == 0:
                raise ValueError("the training data yielded no batches")
            epoch += 1
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if bar:
            bar.close()
        if log_file:
            log_file.close()
        if writer:
            writer.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start - eval_seconds
    return TrainResult(best_metrics, best_step, step, seconds, eval_seconds, history, stopped_by)


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
