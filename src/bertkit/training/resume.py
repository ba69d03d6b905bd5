"""Checkpoints a run resumes from: `step-NNNNNNNN/` folders, each written whole or not at all.

A checkpoint holds the model (however its caller writes it) and `trainer_state.pt`: the step,
optimizer, scheduler, RNG states and data position that `train.fit` needs to continue exactly.
It is written into a hidden `.step-N.partial-PID` folder, fsynced, and renamed into place, so a
kill at any moment leaves the previous checkpoint intact and never a visible partial one.
Pretraining keeps them in `OUTPUT/checkpoints/`, fine-tuning in `OUTPUT-checkpoints/`.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bertkit.errors import BertkitError

CHECKPOINT = re.compile(r"^step-(\d{8})$")


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints in `root`, oldest first (a partial one is hidden, never listed)."""
    found = [p for p in root.iterdir() if CHECKPOINT.match(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def discard(path: Path) -> None:
    """Remove a checkpoint atomically: hide it by a rename first, so that a kill during the
    deletion never leaves a visible checkpoint with files missing."""
    trash = path.parent / f".{path.name}.deleting-{os.getpid()}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_partial(root: Path) -> list[Path]:
    """Delete what a killed run left of a checkpoint it was writing or deleting."""
    partial = list(root.glob(".step-*")) if root.is_dir() else []
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return partial


def write_checkpoint(
    root: Path, trainer: dict[str, Any], write_model: Callable[[Path], None], keep: int
) -> Path:
    """Write `root/step-N` (N = trainer["step"]) atomically and keep the newest `keep` (0: all)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{trainer['step']:08d}"
    stage = root / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        write_model(stage)
        buffer = io.BytesIO()  # torch.save reports a full disk as a bare RuntimeError; a plain
        torch.save(trainer, buffer)  # write raises OSError(ENOSPC) naming the file
        with open(stage / "trainer_state.pt", "wb") as f:
            f.write(buffer.getbuffer())
        for written in stage.iterdir():
            if written.is_file():
                with open(written, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():  # the same step saved twice (a signal right after a periodic save)
            discard(final)
        os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for old in checkpoints(root)[:-keep] if keep > 0 else []:
        discard(old)
    return final


def read_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's trainer state, read with `weights_only=True`: tensors and plain
    containers only, never arbitrary objects."""
    try:
        return torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which
        raise BertkitError(f"cannot read the trainer state: {e}", path / "trainer_state.pt") from None


def trainer_state(model, optimizer, scheduler, step: int, updates_per_epoch: int) -> dict[str, Any]:
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


def restore_trainer_state(state: dict[str, Any], model, optimizer, scheduler) -> tuple[int, int]:
    """Optimizer, scheduler and RNG states from `trainer_state`'s; returns (step, epoch)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(_mine(state["rng_torch"]))
    if state.get("rng_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(_mine(state["rng_cuda"]))
    random.setstate(state["rng_python"])
    return int(state["step"]), int(state["epoch"])
