"""Distillation's losses: the soft-target terms (KL at a temperature, the binary form for
multi-label, squared error for regression), the hard loss on gold-labelled rows, and TinyBERT's
intermediate losses on hidden states and attention probabilities of mapped layer pairs, recorded
by forward hooks (`Taps`). `DistillLoss` adds them up as `fit`'s `loss_fn`:

    alpha * hard + (1 - alpha) * soft + layer

Every term is a sum over this process's rows divided by a count over the whole batch
(`loss_norm`, `rows_norm`), so DDP's average is the one-process gradient, as in fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.models.encoder import BertModel, Layer, attention_probs, extended_mask, split_heads
from bertkit.tasks.base import Task

LAYER_LOSSES = ("none", "hidden", "attention", "both")


def kl_term(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over the rows (N, C)."""
    log_p = F.log_softmax(student.float() / T, dim=-1)
    log_q = F.log_softmax(teacher.float() / T, dim=-1)
    return T * T * F.kl_div(log_p, log_q, log_target=True, reduction="sum")


def bce_term(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """Multi-label: T^2 * BCE(sigmoid(student / T), sigmoid(teacher / T)), averaged over the labels
    (as the hard loss is) and summed over the rows (N, L)."""
    target = torch.sigmoid(teacher.float() / T)
    bce = F.binary_cross_entropy_with_logits(student.float() / T, target, reduction="none")
    return T * T * bce.mean(-1).sum()


def value_term(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """Regression: the squared difference from the teacher's score (no temperature), summed."""
    return F.mse_loss(student.float(), teacher.float(), reduction="sum")


SOFT_TERMS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "softmax": kl_term,
    "sigmoid": bce_term,
    "value": value_term,
}


def soft_loss(
    task: Task, student: torch.Tensor, teacher: torch.Tensor, batch: dict, T: float
) -> torch.Tensor:
    """The soft-target term at the task's positions (every row, or NER's first sub-tokens),
    summed and divided by the batch's `loss_norm`, as the task's own loss is."""
    where = task.soft_positions(batch)
    if where is not None:
        student, teacher = student[where], teacher[where]
    term = SOFT_TERMS[task.soft_targets or ""]
    return term(student, teacher, T) / batch.get("loss_norm", float(len(batch["input_ids"])))


def _rows(batch: dict, keep: torch.Tensor) -> dict:
    """The batch's rows where `keep` (B,) is true; scalars (loss_norm) as they are."""
    B = len(keep)
    return {k: v[keep] if torch.is_tensor(v) and v.dim() and len(v) == B else v for k, v in batch.items()}


def hard_loss(task: Task, student: nn.Module, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
    """The task's own loss on the rows with gold labels (`batch["labelled"]`); the rows only the
    teacher labelled add nothing, yet the sum is still divided by the whole batch's `loss_norm`."""
    keep = batch.get("labelled")
    if keep is None or bool(keep.all()):
        return task.loss_from(student, outputs, batch)
    if not bool(keep.any()):  # every parameter still in the graph, with a zero gradient (DDP)
        return task.loss_from(student, outputs, batch) * 0.0
    return task.loss_from(student, outputs[keep], _rows(batch, keep))


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row (B,): the mean over its real tokens of the mean squared difference (B, T, H)."""
    per_token = (student.float() - teacher.float()).pow(2).mean(-1)
    m = mask.float()
    return (per_token * m).sum(1) / m.sum(1).clamp(min=1)


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row (B,): the mean squared difference of attention probabilities (B, nh, T, T) over
    every head and every (query, key) pair of real tokens."""
    m = mask.bool()
    valid = (m[:, None, :, None] & m[:, None, None, :]).float()  # (B, 1, T, T)
    sq = (student.float() - teacher.float()).pow(2) * valid
    return sq.sum((1, 2, 3)) / (valid.sum((1, 2, 3)) * student.shape[1]).clamp(min=1)


def probabilities(qkv: torch.Tensor, n_head: int, mask: torch.Tensor) -> torch.Tensor:
    """A layer's attention probabilities (B, nh, T, T) from its recorded QKV projection."""
    q, k, _ = split_heads(qkv.float(), n_head)
    return attention_probs(q, k, extended_mask(mask))


def evenly_spaced(n_teacher: int, k: int) -> list[int]:
    """The teacher layers (0-based) a k-layer student copies and is taught by: student layer j
    takes teacher layer (j + 1) * n / k - 1, so the top layer is the teacher's top layer, whose
    output the copied pooler and head were trained on (TinyBERT's map g(m) = m * n / k): 6 -> 3
    takes 1, 3, 5; 12 -> 6 takes 1, 3, 5, 7, 9, 11."""
    return [(j + 1) * n_teacher // k - 1 for j in range(k)]


def encoder_of(model: nn.Module) -> BertModel:
    return [m for m in model.modules() if isinstance(m, BertModel)][0]


class Taps:
    """While in `with`: `hidden`, the embeddings' and each layer's outputs (B, T, H), and `qkv`,
    each layer's fused QKV projection (B, T, 3H), of the encoder's forward passes (hooks)."""

    def __init__(self, model: nn.Module):
        self.encoder = encoder_of(model)
        self.hidden: list[torch.Tensor] = []
        self.qkv: list[torch.Tensor] = []
        self.handles: list[Any] = []

    def __enter__(self) -> Taps:
        def keep(store: list) -> Callable:
            return lambda module, inputs, output: store.append(output)

        layers = cast("list[Layer]", list(self.encoder.layers))
        watched = [(self.encoder.embeddings, self.hidden), *((m, self.hidden) for m in layers)]
        watched += [(m.attn.qkv, self.qkv) for m in layers]
        self.handles = [m.register_forward_hook(keep(store)) for m, store in watched]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class LayerLoss:
    """TinyBERT's intermediate losses against the live teacher (its forward each step): hidden
    states of the pairs in `hidden` (0: the embeddings, i: layer i's output) and attention
    probabilities of the layer pairs in `attention`, each pair's per-row mean averaged over the
    pairs, summed over the rows and divided by the whole batch's row count (`rows_norm`)."""

    task: Task
    teacher: nn.Module
    hidden: list[tuple[int, int]]  # (student, teacher) hidden-state indices
    attention: list[tuple[int, int]]  # (student, teacher) layer indices
    heads: int  # attention heads, the student's as the teacher's

    def __call__(self, hidden: list[torch.Tensor], qkv: list[torch.Tensor], batch: dict) -> torch.Tensor:
        with torch.no_grad(), Taps(self.teacher) as t:
            self.task.outputs(self.teacher, batch)
        mask = batch["attention_mask"]
        total = torch.zeros(len(mask), device=mask.device)
        if self.hidden:
            per = [hidden_mse(hidden[s], t.hidden[k], mask) for s, k in self.hidden]
            total = total + torch.stack(per).mean(0)
        if self.attention:
            h = self.heads
            per = [attention_mse(probabilities(qkv[s], h, mask), probabilities(t.qkv[k], h, mask), mask)
                   for s, k in self.attention]  # fmt: skip
            total = total + torch.stack(per).mean(0)
        return total.sum() / batch.get("rows_norm", float(len(mask)))


def layer_pairs(n_student: int, n_teacher: int, kind: str) -> tuple[list, list]:
    """The (student, teacher) pairs of `kind`'s hidden-state and attention losses."""
    mapped = evenly_spaced(n_teacher, n_student)
    hidden = [(0, 0), *((j + 1, m + 1) for j, m in enumerate(mapped))] if kind in ("hidden", "both") else []
    attention = list(enumerate(mapped)) if kind in ("attention", "both") else []
    return hidden, attention


@dataclass
class DistillLoss:
    """`loss_fn(model, batch)` for `train.fit`, `model` a (DDP-wrapped) `Distilled`."""

    task: Task
    alpha: float
    temperature: float
    layers: LayerLoss | None = None

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        outputs, hidden, qkv = model(batch)  # through DDP's wrapper, when there is one
        student = cast(nn.Module, getattr(model, "module", model).student)  # the Distilled inside
        hard = hard_loss(self.task, student, outputs, batch)
        soft = soft_loss(self.task, outputs, batch["teacher_logits"], batch, self.temperature)
        loss = self.alpha * hard + (1 - self.alpha) * soft
        return loss if self.layers is None else loss + self.layers(hidden, qkv, batch)
