"""The student of a distillation: the settings that choose it (`DistillArgs`), the plan checked
against the teacher (a copy of the teacher with `evenly_spaced` layers, a preset, or a model
directory of the teacher's vocabulary), the model built from the plan or a resumed checkpoint, and
`Distilled`, the student as `fit` trains it (with its taps and projection for layer losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from bertkit.errors import BertkitError
from bertkit.fileio import save_safetensors
from bertkit.models.config import PRESETS, BertConfig
from bertkit.options import option
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training.distill_losses import LAYER_LOSSES, Taps, encoder_of, evenly_spaced

if TYPE_CHECKING:
    from bertkit.models.checkpoint import PretrainedMixin

PROJECTION = "projection.safetensors"  # in checkpoints only: the output is the student alone


@dataclass
class DistillArgs:
    """Which student, taught how: each also a flag of `bertkit distill`."""

    student_layers: int | None = option(
        None,
        help="the student is the teacher with K evenly spaced encoder layers (layer j takes the teacher's "
        "(j+1)*N/K-1: 6 -> 3 keeps 1, 3, 5), its embeddings, pooler and head (default: half the layers, "
        "rounded up)",
    )
    student: str | None = option(
        None,
        help=f"instead: a preset ({', '.join(PRESETS)}), randomly initialised, or a model directory with "
        "the teacher's vocabulary (a pretrained mini); the task head is new",
    )
    temperature: float = option(
        2.0,
        help="softmax temperature T of the soft targets; their loss is scaled by T^2 (default {default:g})",
    )
    alpha: float = option(
        0.5,
        help="weight of the gold-label loss, 1 - alpha that of the teacher's soft targets "
        "(default {default:g})",
    )
    layer_loss: str = option(
        "none",
        choices=LAYER_LOSSES,
        help="also match mapped layers' hidden states (MSE, through a learned projection when the sizes "
        "differ), attention probabilities (MSE), both, or none (default); needs the teacher's forward "
        "each step",
    )  # TinyBERT's intermediate losses

    def check(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise BertkitError(f"--alpha must be between 0 and 1, not {self.alpha:g}")
        if not self.temperature > 0:
            raise BertkitError(f"--temperature must be positive, not {self.temperature:g}")
        if self.layer_loss not in LAYER_LOSSES:
            raise BertkitError(
                f"--layer-loss must be one of {', '.join(LAYER_LOSSES)}, not {self.layer_loss!r}"
            )
        if self.student is not None and self.student_layers is not None:
            raise BertkitError("--student-layers copies the teacher, --student starts elsewhere: give one")


@dataclass
class Plan:
    """How the student starts: `init` "teacher" (its layers `picked` copied, with the embeddings,
    pooler and head), a preset name, or a model directory (`directory`); `config` the student's
    (before a copy's layers are dropped), `teacher` the teacher's."""

    init: str
    config: BertConfig
    teacher: BertConfig
    picked: list[int] | None = None
    directory: bool = False

    @property
    def layers(self) -> int:
        return len(self.picked) if self.picked is not None else self.config.num_hidden_layers

    @property
    def teacher_layers(self) -> int:
        return self.teacher.num_hidden_layers


def plan_student(settings: DistillArgs, teacher_dir: Path, tokenizer: Tokenizer) -> Plan:
    """The student the settings ask for, checked against the teacher (nothing built yet)."""
    teacher = BertConfig.from_pretrained(teacher_dir)
    n = teacher.num_hidden_layers
    if settings.student is None:
        k = (n + 1) // 2 if settings.student_layers is None else settings.student_layers
        if not 1 <= k <= n:
            raise BertkitError(
                f"--student-layers {k}: the teacher has {n} layers (give 1 to {n})", teacher_dir
            )
        copy = BertConfig.from_pretrained(teacher_dir)  # the student's own object (layers dropped)
        return check_layer_loss(Plan("teacher", copy, teacher, evenly_spaced(n, k)), settings.layer_loss)
    spec = settings.student
    if Path(spec).is_dir():
        theirs = Tokenizer.from_pretrained(spec)
        if theirs.vocab != tokenizer.vocab or theirs.do_lower_case != tokenizer.do_lower_case:
            raise BertkitError(
                "--student has another vocabulary than the teacher's (it must read the same tokens)", spec
            )
        plan = Plan(str(spec), BertConfig.from_pretrained(spec), teacher, directory=True)
    elif spec in PRESETS:
        # a student of the teacher's family, vocabulary and positions
        same = ["model_type", "vocab_size", "pad_token_id", "max_position_embeddings", "type_vocab_size"]
        same.append("layer_norm_eps")
        config = BertConfig.preset(spec, **{k: getattr(teacher, k) for k in same})
        plan = Plan(spec, config, teacher)
    else:
        raise BertkitError(
            f"--student {spec!r} is neither a model directory nor a preset ({', '.join(PRESETS)})"
        )
    return check_layer_loss(plan, settings.layer_loss)


def check_layer_loss(plan: Plan, kind: str) -> Plan:
    """Layer losses map each student layer to a teacher layer: the student may not be deeper,
    and attention probabilities compare head by head."""
    if kind != "none" and plan.layers > plan.teacher_layers:
        raise BertkitError(
            f"--layer-loss {kind}: the student has {plan.layers} layers, "
            f"more than the teacher's {plan.teacher_layers}"
        )
    heads, theirs = plan.config.num_attention_heads, plan.teacher.num_attention_heads
    if kind in ("attention", "both") and heads != theirs:
        raise BertkitError(
            f"--layer-loss {kind}: the student has {heads} attention heads, the teacher {theirs} "
            "(attention is compared head by head)"
        )
    return plan


def keep_layers(model: nn.Module, picked: list[int]) -> None:
    """Keep only the encoder layers `picked`, in order (config.json then says how many)."""
    enc = encoder_of(model)
    enc.layers = nn.ModuleList(enc.layers[i] for i in picked)
    enc.config.num_hidden_layers = len(picked)


def build_student(
    plan: Plan, task: Task, teacher_dir: Path, last: Path | None
) -> tuple[nn.Module, BertConfig]:
    """The student model and its config (the object it saves): from the checkpoint `last` of a
    resumed run, else as planned."""
    config = BertConfig.from_pretrained(last) if last is not None else plan.config
    task.configure(config)
    if last is not None:
        return task.load_model(last, config=config), config
    if plan.picked is not None:
        model = task.load_model(teacher_dir, config=config)
        keep_layers(model, plan.picked)
    elif plan.directory:
        model = task.load_model(plan.init, config=config, ignore_mismatched_sizes=True)
    else:
        model = task.build_model(config)
    return model, config


class Distilled(nn.Module):
    """The student as `fit` trains it: its forward gives the task's outputs and, for layer losses,
    the hidden states (through `project` to the teacher's size, when they differ) and QKV
    projections it recorded. Checkpoints keep the projection; the output is the student alone."""

    def __init__(self, student: nn.Module, task: Task, taps: bool, project: nn.Linear | None):
        super().__init__()
        self.student, self.task, self.taps, self.project = student, task, taps, project

    def forward(self, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        if not self.taps:
            return self.task.outputs(self.student, batch), [], []
        with Taps(self.student) as t:
            outputs = self.task.outputs(self.student, batch)
        hidden = [self.project(h) for h in t.hidden] if self.project is not None else t.hidden
        return outputs, hidden, t.qkv

    def save_pretrained(self, directory: Path) -> None:
        cast("PretrainedMixin", self.student).save_pretrained(directory)
        if self.project is not None:
            state = {k: v.detach().contiguous() for k, v in self.project.state_dict().items()}
            save_safetensors(state, Path(directory) / PROJECTION)

    def load_projection(self, directory: Path) -> None:
        from safetensors.torch import load_file

        if self.project is not None:
            self.project.load_state_dict(load_file(Path(directory) / PROJECTION))


def wrap_student(
    student: nn.Module, plan: Plan, task: Task, settings: DistillArgs, last: Path | None
) -> Distilled:
    """The student with its projection to the teacher's hidden size, when the hidden-state loss
    needs one (learned with it; restored from `last` when resuming)."""
    hidden = encoder_of(student).config.hidden_size
    theirs = plan.teacher.hidden_size
    wants = settings.layer_loss in ("hidden", "both") and hidden != theirs
    project = nn.Linear(hidden, theirs) if wants else None
    model = Distilled(student, task, settings.layer_loss != "none", project)
    if last is not None:
        model.load_projection(last)
    return model


def size_of(model: nn.Module) -> dict[str, int]:
    """Parameters, and bytes of the weights as they are held (fp32: 4 a parameter)."""
    tensors = list(model.state_dict().values())
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "bytes": sum(t.numel() * t.element_size() for t in tensors),
    }
