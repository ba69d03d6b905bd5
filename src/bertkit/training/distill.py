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
differ) and/or attention probabilities of mapped layer pairs, as TinyBERT. Every term is a sum
over this process's rows divided by a count over the whole batch (`loss_norm`, `rows_norm`), so
DDP's average is the one-process gradient, as in fine-tuning.

The teacher's logits for every training feature are computed once, before training, by the
inference engine on the runtime's device and precision, into a memory-mapped .npy (beside the
output, or in OUTPUT-checkpoints/ where a resumed run finds and reuses it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.engine.runner import InferenceOptions, forward_batches
from bertkit.errors import BertkitError
from bertkit.fileio import check_new_output, save_safetensors, write_json
from bertkit.models.config import PRESETS, BertConfig
from bertkit.models.encoder import BertModel, Layer, attention_probs, extended_mask, split_heads
from bertkit.runtime import Runtime, local_runtime
from bertkit.tasks.base import Task
from bertkit.tasks.engine import task_engine
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training.finetune import (
    Resumable,
    Trained,
    check_training,
    checkpointing,
    ddp_wrap,
    dev_predictions,
    resume_from,
    resuming,
    run_settings,
    staged_run,
    stop_if_signalled,
    training_batches,
    write_output,
)
from bertkit.training.loop import Evaluation, TrainArgs, fit, set_seed

if TYPE_CHECKING:
    from bertkit.models.checkpoint import PretrainedMixin

LAYER_LOSSES = ("none", "hidden", "attention", "both")
CACHE, CACHE_INFO = "teacher-logits.npy", "teacher-logits.json"
PROJECTION = "projection.safetensors"  # in checkpoints only: the output is the student alone


@dataclass
class DistillArgs:
    student_layers: int | None = None  # a copy of the teacher with this many layers; None: half
    student: str | None = None  # instead: a preset name or a model directory (fresh head)
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the hard-label loss; 1 - alpha of the teacher's soft targets
    layer_loss: str = "none"  # "hidden", "attention", "both": TinyBERT's intermediate losses

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
class Data:
    train: list
    dev: list
    test: list | None = None
    unlabeled: list = field(default_factory=list)  # examples the teacher alone labels


# ---------------------------------------------------------------------------- the loss


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


# ---------------------------------------------------------------------------- layers


def evenly_spaced(n_teacher: int, k: int) -> list[int]:
    """The teacher layers (0-based) a k-layer student copies and is taught by: student layer j
    takes teacher layer (j + 1) * n / k - 1, so the top layer is the teacher's top layer, whose
    output the copied pooler and head were trained on (TinyBERT's map g(m) = m * n / k): 6 -> 3
    takes 1, 3, 5; 12 -> 6 takes 1, 3, 5, 7, 9, 11."""
    return [(j + 1) * n_teacher // k - 1 for j in range(k)]


def encoder_of(model: nn.Module) -> BertModel:
    return [m for m in model.modules() if isinstance(m, BertModel)][0]


def keep_layers(model: nn.Module, picked: list[int]) -> None:
    """Keep only the encoder layers `picked`, in order (config.json then says how many)."""
    enc = encoder_of(model)
    enc.layers = nn.ModuleList(enc.layers[i] for i in picked)
    enc.config.num_hidden_layers = len(picked)


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


@dataclass
class DistillLoss:
    """`loss_fn(model, batch)` for `train.fit`, `model` a (DDP-wrapped) `Distilled`."""

    task: Task
    alpha: float
    temperature: float
    layers: LayerLoss | None = None

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        outputs, hidden, qkv = model(batch)  # through DDP's wrapper, when there is one
        student = cast(Distilled, getattr(model, "module", model)).student
        hard = hard_loss(self.task, student, outputs, batch)
        soft = soft_loss(self.task, outputs, batch["teacher_logits"], batch, self.temperature)
        loss = self.alpha * hard + (1 - self.alpha) * soft
        return loss if self.layers is None else loss + self.layers(hidden, qkv, batch)


# ---------------------------------------------------------------------------- the student


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
        same = ("vocab_size", "pad_token_id", "max_position_embeddings", "type_vocab_size", "layer_norm_eps")
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


# ---------------------------------------------------------------------------- the teacher's logits


@dataclass
class TeacherLogits:
    """The teacher's logits for every training feature: `values` (rows, C) memory-mapped, a row a
    feature (sequence tasks) or a row a token (token tasks); feature i's rows start at `start[i]`."""

    values: np.ndarray
    start: np.ndarray  # (n + 1,)
    per_token: bool

    def batch(self, idx: list[int], T: int) -> torch.Tensor:
        """Features `idx` as a batch: (B, C), or (B, T, C) zero-padded to T tokens."""
        if not self.per_token:
            return torch.from_numpy(np.array(self.values[self.start[idx]], dtype=np.float32))
        out = torch.zeros(len(idx), T, self.values.shape[1])
        for b, i in enumerate(idx):
            rows = np.array(self.values[self.start[i] : self.start[i + 1]], dtype=np.float32)  # a copy
            out[b, : len(rows)] = torch.from_numpy(rows)
        return out


def row_starts(feats: list[dict], per_token: bool) -> np.ndarray:
    lengths = [len(f["input_ids"]) if per_token else 1 for f in feats]
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def fingerprint(teacher_dir: Path, feats: list[dict]) -> str:
    """What a cache was computed from: the teacher's files (name, size, time) and the features."""
    h = hashlib.sha256()
    for p in sorted(Path(teacher_dir).iterdir()):
        if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    for f in feats:
        h.update(np.asarray(f["input_ids"], dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def write_teacher_logits(teacher: nn.Module, task: Task, feats: list[dict], pad: int, root: Path) -> dict:
    """Run the (inference-engine) teacher over `feats` once, writing root/teacher-logits.npy
    (renamed into place when complete); returns what the cache holds."""
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{CACHE}.partial-{os.getpid()}"
    out: np.memmap | None = None
    start, per_token = np.zeros(1, np.int64), False
    with torch.inference_mode():
        for idx, _, logits in forward_batches(teacher, lambda b: task.outputs(teacher, b), feats, pad, 8192):
            values = logits.float().cpu().numpy()
            if out is None:
                per_token = values.ndim == 3
                start = row_starts(feats, per_token)
                out = np.lib.format.open_memmap(partial, "w+", np.float32, (int(start[-1]), values.shape[-1]))
            for b, i in enumerate(idx):
                out[start[i] : start[i + 1]] = (
                    values[b, : start[i + 1] - start[i]] if per_token else values[b]
                )
    assert out is not None  # there are training features
    out.flush()
    del out
    os.replace(partial, root / CACHE)
    return {"features": len(feats), "per_token": per_token}


def teacher_logits(
    root: Path,
    teacher_dir: Path,
    task: Task,
    feats: list[dict],
    pad: int,
    rt: Runtime,
    engine: nn.Module | None,
) -> TeacherLogits:
    """The training features' teacher logits from the cache in `root`, computed first (by rank 0,
    with `engine`) unless a cache of the same teacher and features is there (a resumed run)."""
    key = fingerprint(teacher_dir, feats)
    info_path = root / CACHE_INFO
    if rt.main and _read_json(info_path).get("fingerprint") != key:
        assert engine is not None  # rank 0 holds the teacher's engine
        write_json(info_path, {**write_teacher_logits(engine, task, feats, pad, root), "fingerprint": key})
    rt.barrier()
    info = _read_json(info_path)
    values = np.load(root / CACHE, mmap_mode="r")
    return TeacherLogits(values, row_starts(feats, info["per_token"]), info["per_token"])


def _read_json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def teacher_scores(
    task: Task, engine: nn.Module, tokenizer: Tokenizer, data: Data, dev_feats: list[dict]
) -> dict:
    """The teacher's dev and test scores, on the same data the student is scored on."""
    pad = tokenizer.pad_token_id
    scores = {}
    for split, examples, feats in (("dev", data.dev, dev_feats), ("test", data.test, None)):
        if examples:
            feats = feats if feats is not None else task.features(tokenizer, examples)
            with torch.inference_mode():
                scores[split] = task.metrics(examples, task.predict(engine, feats, examples, pad))
    return scores


# ---------------------------------------------------------------------------- a whole run


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
        teacher_scores(job.task, engine, job.tokenizer, job.data, dev_feats) if engine is not None else {}
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
    labelled = [f for f in task.features(job.tokenizer, data.train) if task.trainable(f)]
    if not labelled:
        raise BertkitError("no training examples with labels")
    task.prepare(labelled, args.batch_size)
    feats = labelled + unlabeled_features(task, job.tokenizer, data.unlabeled)
    run = {**run_settings(args, rt), **job.record()}
    last, state = resume_from(job.resumable, run, len(feats), rt) if job.resumable else (None, None)
    dev_feats = task.features(job.tokenizer, data.dev)
    logits, scores, teacher_size = teach(job, feats, dev_feats)
    student, config = build_student(job.plan, task, job.teacher_dir, last)
    model = wrap_student(student, job.plan, task, job.settings, last).to(rt.device)
    more = {"teacher": scores, "distill": job.summary(teacher_size, student)}
    loss = DistillLoss(task, job.settings.alpha, job.settings.temperature, layer_loss(job, student))
    epoch_batches, steps = training_batches(
        task, feats, args, pad, rt, batch_fields(logits, len(labelled), feats, rt)
    )

    def evaluate(m: nn.Module) -> dict:
        student = cast(Distilled, m).student
        return task.metrics(data.dev, dev_predictions(task, student, dev_feats, data.dev, pad))

    evaluation = Evaluation(evaluate, task.main_metric, task.greater_is_better)
    record = {"args": run, "train_features": len(feats)}
    ck = checkpointing(job.resumable, state, record, model, rt, log_dir) if job.resumable else None
    batches = resuming(epoch_batches, state, args)
    result = fit(ddp_wrap(model, rt), batches, steps, loss, args, rt, evaluation, log_dir, ck)
    stop_if_signalled(result, rt)
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


def read_labelled(task: Task, path: str | Path, fmt: str | None, opts: dict) -> list:
    """A labelled file for the teacher's task: its reader with the task's own reader options,
    every label checked against the teacher's."""
    from bertkit.data.readers import check_labels
    from bertkit.tasks import registry
    from bertkit.tasks.inputs import reader_opts

    examples = registry.load_examples(task.name, path, fmt, **reader_opts(task, opts))
    if any(getattr(e, "label", 0) is None or getattr(e, "tags", 0) is None for e in examples):
        raise BertkitError(
            "examples without labels (pass --label-column, or give the file as --unlabeled)", path
        )
    labels = task.labels_to_check
    return check_labels(examples, {x: i for i, x in enumerate(labels)}, path) if labels else examples


def read_unlabeled(task: Task, path: str | Path, fmt: str | None, opts: dict) -> list:
    """Texts for the teacher to label: one a line, or JSON lines with "text" (as `bertkit
    predict` reads them); with `fmt`, the task's reader (what labels the file has are unused)."""
    from bertkit.tasks import registry
    from bertkit.tasks.inputs import read_inputs, reader_opts

    if fmt is None:
        return read_inputs(task, str(path))
    return registry.load_examples(task.name, path, fmt, **reader_opts(task, opts))
