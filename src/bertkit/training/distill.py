"""Task-specific knowledge distillation: a fine-tuned directory (the teacher) trains a smaller
model (the student), written as an ordinary fine-tuned directory.

The student starts as a copy of the teacher with fewer layers (`evenly_spaced` picks which), or
as a preset / a model directory of the teacher's vocabulary with a fresh head. Each batch's loss
is

    alpha * hard + (1 - alpha) * soft + layer

`hard` the task's own loss on the gold labels (rows the teacher alone labelled add nothing);
`soft` T^2 * KL(softmax(teacher / T) || softmax(student / T)) (per token at the first sub-token of
each word for NER, a CRF teacher's emissions included), the binary form for multi-label teachers
(BCE against sigmoid(teacher / T), times T^2), squared error for regression; `layer` (optional)
the mean squared difference of hidden states (through a learned projection when the sizes
differ) and/or attention probabilities of mapped layer pairs, as TinyBERT. This module is the
run; the losses are `distill_losses`', the student `distill_student`'s, the teacher's cached
logits `distill_teacher`'s.

The teacher's logits for every training feature are computed once, before training, by the
inference engine on the runtime's device and precision, into a memory-mapped .npy (beside the
output, or in OUTPUT-checkpoints/ where a resumed run finds and reuses it).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from bertkit.data.examples import ReaderOptions
from bertkit.engine.runner import InferenceOptions
from bertkit.errors import BertkitError
from bertkit.fileio import check_new_output
from bertkit.hub import resolve
from bertkit.runtime import Runtime, local_runtime
from bertkit.tasks.base import Task
from bertkit.tasks.engine import task_engine
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training.distill_losses import DistillLoss, LayerLoss, encoder_of, evenly_spaced, layer_pairs
from bertkit.training.distill_student import (
    DistillArgs,
    Distilled,
    Plan,
    build_student,
    plan_student,
    size_of,
    wrap_student,
)
from bertkit.training.distill_teacher import TeacherLogits, teacher_logits, teacher_scores
from bertkit.training.loop import TrainArgs, set_seed
from bertkit.training.run import (
    Resumable,
    Resume,
    Trained,
    check_training,
    dev_predictions,
    fit_task,
    labelled_features,
    run_settings,
    staged_run,
    training_batches,
    write_output,
)


@dataclass
class Data:
    train: list
    dev: list
    test: list | None = None
    unlabeled: list = field(default_factory=list)  # examples the teacher alone labels


@dataclass
class Job:
    """What a distillation run is given, checked: the pieces `train_student` works from."""

    task: Task
    teacher_dir: Path
    tokenizer: Tokenizer
    plan: Plan
    data: Data
    args: TrainArgs
    settings: DistillArgs
    rt: Runtime
    resumable: Resumable | None
    root: Path  # where the teacher's logits are cached

    def record(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it resumes (checked with finetune's)."""
        s = self.settings
        return {"student": self.plan.init, "student_layers": self.plan.layers, "temperature": s.temperature,
                "alpha": s.alpha, "layer_loss": s.layer_loss}  # fmt: skip

    def summary(self, teacher_size: dict, student: nn.Module) -> dict[str, Any]:
        """metrics.json's "distill": the settings, the layers, both models' sizes."""
        n, k = self.plan.teacher_layers, self.plan.layers
        mine = size_of(student)
        ratio = round(teacher_size.get("parameters", 0) / max(1, mine["parameters"]), 3)
        return {**self.record(), "teacher_layers": n, "layers_copied": self.plan.picked,
                "layer_map": evenly_spaced(n, k) if k <= n else None,
                "train_examples": len(self.data.train), "unlabeled_examples": len(self.data.unlabeled),
                "teacher_size": teacher_size, "student_size": mine,
                "compression": ratio}  # fmt: skip


def unlabeled_features(task: Task, tokenizer: Tokenizer, examples: list) -> list[dict]:
    """Features of examples without labels, with the task's blank labels (no hard loss)."""
    if not examples:
        return []
    feats = task.features(tokenizer, examples, with_labels=False)
    for f in feats:
        f["labels"] = task.blank_labels(f)
    return feats


def batch_fields(logits: TeacherLogits, n_labelled: int, feats: list[dict], rt: Runtime) -> Callable:
    """`training_batches`' extra fields: each batch's teacher logits, which of its rows have gold
    labels (the first `n_labelled` features), and the whole batch's rows per process (`rows_norm`,
    the layer losses' divisor; infinite on a rank left without rows)."""

    def extra(mine: list[int], whole: list[int]) -> dict:
        rows = mine or whole[:1]
        T = max(len(feats[i]["input_ids"]) for i in rows)
        return {
            "teacher_logits": logits.batch(rows, T),
            "labelled": torch.tensor([i < n_labelled for i in rows]),
            "rows_norm": len(whole) / rt.world if mine else float("inf"),
        }

    return extra


def teach(job: Job, feats: list[dict], dev_feats: list[dict]) -> tuple[TeacherLogits, dict, dict]:
    """The teacher on the inference engine (rank 0): its logits for the training features
    (cached), its dev/test scores and its size."""
    teacher = job.task.load_model(job.teacher_dir) if job.rt.main else None
    size = size_of(teacher) if teacher is not None else {}
    engine = None
    if teacher is not None:  # the fastest backend installed (bertkit.engine.backend), as predict runs it
        options = InferenceOptions.from_env()
        teacher_dir = Path(job.teacher_dir)
        engine = task_engine(job.task, teacher_dir, options, job.rt, job.tokenizer, teacher)[0]
    scores = (
        teacher_scores(job.task, engine, job.tokenizer, job.data.dev, job.data.test, dev_feats)
        if engine is not None
        else {}
    )
    pad = job.tokenizer.pad_token_id
    logits = teacher_logits(job.root, job.teacher_dir, job.task, feats, pad, job.rt, engine)
    return logits, scores, size


def layer_loss(job: Job, student: nn.Module) -> LayerLoss | None:
    """The intermediate losses the settings ask for, with the live teacher they need."""
    kind = job.settings.layer_loss
    if kind == "none":
        return None
    teacher = job.task.load_model(job.teacher_dir).to(job.rt.device).eval().requires_grad_(False)
    hidden, attention = layer_pairs(
        encoder_of(student).config.num_hidden_layers, job.plan.teacher_layers, kind
    )
    return LayerLoss(job.task, teacher, hidden, attention, job.plan.teacher.num_attention_heads)


def train_student(job: Job, log_dir: Path | None) -> tuple[Trained, dict[str, Any]]:
    """Train the student on every rank; returns it and the metrics distillation adds."""
    task, args, rt, data, pad = job.task, job.args, job.rt, job.data, job.tokenizer.pad_token_id
    set_seed(args.seed)
    labelled = labelled_features(task, job.tokenizer, data.train, args.batch_size)
    feats = labelled + unlabeled_features(task, job.tokenizer, data.unlabeled)
    resume = Resume.start(job.resumable, {**run_settings(args, rt), **job.record()}, len(feats), rt)
    dev_feats = task.features(job.tokenizer, data.dev)
    logits, scores, teacher_size = teach(job, feats, dev_feats)
    student, config = build_student(job.plan, task, job.teacher_dir, resume.last)
    model = wrap_student(student, job.plan, task, job.settings, resume.last).to(rt.device)
    more = {"teacher": scores, "distill": job.summary(teacher_size, student)}
    loss = DistillLoss(task, job.settings.alpha, job.settings.temperature, layer_loss(job, student))

    def evaluate(m: nn.Module) -> dict:
        student = cast(Distilled, m).student
        return task.metrics(data.dev, dev_predictions(task, student, dev_feats, data.dev, pad))

    batches = training_batches(task, feats, args, pad, rt, batch_fields(logits, len(labelled), feats, rt))
    result = fit_task(task, model, batches, loss, evaluate, args, rt, resume, log_dir)
    return Trained(student, job.tokenizer, config, result, dev_feats, len(data.train)), more


@contextlib.contextmanager
def scratch(output: Path, resumable: Resumable | None, rt: Runtime) -> Iterator[Path]:
    """Where the teacher's logits are cached: OUTPUT-checkpoints/ for a resumable run (kept for
    --resume, removed with the checkpoints), else a hidden folder beside the output, removed at
    the end whatever happens."""
    if resumable is not None:
        yield resumable.root
        return
    made = None
    if rt.main:
        output.parent.mkdir(parents=True, exist_ok=True)
        made = tempfile.mkdtemp(prefix=f".{output.name}.teacher-", dir=output.parent)
    root = Path(rt.broadcast(made))
    try:
        yield root
    finally:
        if rt.main:
            shutil.rmtree(root, ignore_errors=True)


def distill(
    task: Task,
    teacher_dir: Path,
    data: Data,
    output: Path,
    args: TrainArgs,
    settings: DistillArgs,
    overwrite: bool = False,
    write_report: Callable[..., None] | None = None,
    resumable: Resumable | None = None,
    rt: Runtime | None = None,
) -> dict[str, Any]:
    """Distil the fine-tuned `teacher_dir` (its task `task`, from `registry.from_dir`) into a
    student written to `output` as `finetune` writes a model: metrics.json adds the teacher's
    scores ("teacher") and the settings and sizes ("distill"). Returns the metrics, on every rank."""
    rt = rt or local_runtime()
    check_training(args, rt)
    settings.check()
    teacher_dir = resolve(teacher_dir)  # a folder, or a Hub name
    tokenizer = Tokenizer.from_pretrained(teacher_dir)
    plan = plan_student(settings, Path(teacher_dir), tokenizer)
    check_new_output(output, overwrite)  # before the cache folder is made beside it
    more: dict[str, Any] = {}
    with scratch(output, resumable, rt) as root:
        job = Job(task, Path(teacher_dir), tokenizer, plan, data, args, settings, rt, resumable, root)

        def train(stage: Path | None) -> Trained:
            t, found = train_student(job, stage)
            more.update(found)
            return t

        def write(stage: Path, t: Trained) -> dict[str, Any]:
            return write_output(stage, task, t, data.dev, data.test, args, write_report, more)

        return staged_run(output, overwrite, rt, resumable, train, write)


def read_labelled(task: Task, path: str | Path, fmt: str | None, opts: ReaderOptions) -> list:
    """A labelled file for the teacher's task: its reader with the task's own reader options,
    every label checked against the teacher's."""
    from bertkit.data.labels import check_labels
    from bertkit.tasks import registry
    from bertkit.tasks.inputs import reader_opts

    examples = registry.load_examples(task.name, path, fmt, reader_opts(task, opts))
    if any(getattr(e, "label", 0) is None or getattr(e, "tags", 0) is None for e in examples):
        raise BertkitError(
            "examples without labels (pass --label-column, or give the file as --unlabeled)", path
        )
    labels = task.labels_to_check
    return check_labels(examples, {x: i for i, x in enumerate(labels)}, path) if labels else examples


def read_unlabeled(task: Task, path: str | Path, fmt: str | None, opts: ReaderOptions) -> list:
    """Texts for the teacher to label: one a line, or JSON lines with "text" (as `bertkit
    predict` reads them); with `fmt`, the task's reader (what labels the file has are unused)."""
    from bertkit.tasks import registry
    from bertkit.tasks.inputs import read_inputs, reader_opts

    if fmt is None:
        return read_inputs(task, str(path))
    return registry.load_examples(task.name, path, fmt, reader_opts(task, opts))
