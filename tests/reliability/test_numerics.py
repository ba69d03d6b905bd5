"""Numerical guards in the training loop: a NaN/inf loss or gradient skips the step (or stops
the run, naming the step), weights and checkpoints stay finite, clipping is on by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bertkit.errors import BertkitError
from bertkit.training.loop import Checkpointing, TrainArgs, fit

BAD = {3, 6}  # batches whose loss (or gradient) is poisoned


def _batches(epoch: int):
    g = torch.Generator().manual_seed(epoch)
    for i in range(8):
        x = torch.randn(16, 4, generator=g)
        yield {"x": x, "y": (x.sum(1) > 0).long(), "i": i}


def _loss(kind: str):
    def loss(model, batch):
        out = nn.functional.cross_entropy(model(batch["x"]), batch["y"])
        if batch["i"] in BAD:
            if kind == "loss":
                return out * float("nan")
            w = model.weight
            return out + torch.sqrt((w - w.detach()).abs().sum())  # value +0, gradient inf
        return out

    return loss


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_nonfinite_steps_are_skipped_and_named(kind, capsys):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    saved = []

    def save(state):
        saved.append({k: v.clone() for k, v in model.state_dict().items()})

    args = TrainArgs(epochs=1, batch_size=16, lr=0.1, warmup=0, progress=False, tensorboard=False)
    result = fit(model, _batches, 8, _loss(kind), args, checkpointing=Checkpointing(save, every=1))
    out = capsys.readouterr().out
    # batch 3 would have been step 4, batch 6 step 6; the run takes two more batches to reach 8
    assert f"non-finite {kind} at step 4; step skipped" in out
    assert f"non-finite {kind} at step 6; step skipped" in out and out.count("skipped") == 2
    assert result.steps == 8
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(saved) == 8 and all(torch.isfinite(v).all() for s in saved for v in s.values())


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_nonfinite_stop_names_the_step(kind):
    model = nn.Linear(4, 2)
    args = TrainArgs(epochs=1, batch_size=16, nonfinite="stop", progress=False, tensorboard=False)
    with pytest.raises(BertkitError, match=rf"non-finite {kind} at step 4"):
        fit(model, _batches, 8, _loss(kind), args)


def test_clipping_is_on_by_default():
    assert TrainArgs().max_grad_norm == 1.0
