"""Optimiser and learning-rate schedule as BERT fine-tuning and pretraining use them."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (the 1-D parameters),
    as in BERT; matrices and embeddings decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    # fused: one kernel updates every tensor; on a 2-core CPU it is 5x faster than foreach
    # (15 vs 82 ms a step for MiniLM's 22 M parameters), a quarter of a fine-tuning step.
    groups = param_groups(model, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the peak rate, then linear decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_steps_for(total_steps: int, warmup: float) -> int:
    """`warmup` < 1 is a fraction of the total steps, otherwise a number of steps."""
    return int(math.ceil(total_steps * warmup)) if warmup < 1 else int(warmup)
