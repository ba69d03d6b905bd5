"""Optimiser and learning-rate schedule as BERT fine-tuning and pretraining use them."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn


def is_encoder(name: str) -> bool:
    """Whether a parameter belongs to the pretrained encoder: it lies under a module named `bert`
    (`bert.`, `model.bert.` in a NER tagger, `module.bert.` under DDP); the task layers (classifier,
    QA outputs, BiLSTM, CRF transitions, MLM/NSP heads) do not."""
    return "bert" in name.split(".")


def param_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None, head_lr_mult: float = 1.0
) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (the 1-D parameters),
    as in BERT; matrices and embeddings decay.

    With `head_lr_mult` != 1 the task layers (all but the encoder, `is_encoder`) get groups of
    their own with learning rate `lr * head_lr_mult`, after the encoder's two: [encoder decay,
    encoder no-decay, head decay, head no-decay] (an empty head group is left out). With 1 the
    groups are the two of a plain run, so its optimizer and checkpoints are as they always were.
    The schedule multiplies every group's rate by the same factor.
    """
    split = head_lr_mult != 1.0
    if split and lr is None:
        raise ValueError("head_lr_mult needs the base lr")
    encoder: tuple[list[nn.Parameter], list[nn.Parameter]] = ([], [])  # (decay, no decay)
    head: tuple[list[nn.Parameter], list[nn.Parameter]] = ([], [])
    for name, p in model.named_parameters():
        if p.requires_grad:
            (head if split and not is_encoder(name) else encoder)[0 if p.ndim >= 2 else 1].append(p)
    groups = [
        {"params": encoder[0], "weight_decay": weight_decay},
        {"params": encoder[1], "weight_decay": 0.0},
    ]
    for params, wd in ((head[0], weight_decay), (head[1], 0.0)):
        if params:
            groups.append({"params": params, "weight_decay": wd, "lr": cast(float, lr) * head_lr_mult})
    return groups


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.01, head_lr_mult: float = 1.0
) -> torch.optim.AdamW:
    # fused: one kernel updates every tensor; on a 2-core CPU it is 5x faster than foreach
    # (15 vs 82 ms a step for MiniLM's 22 M parameters), a quarter of a fine-tuning step.
    groups = param_groups(model, weight_decay, lr, head_lr_mult)
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
