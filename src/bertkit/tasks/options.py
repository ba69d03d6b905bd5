"""The task settings a user gives when training (`bertkit finetune`, `search`), each also a flag;
None (not given): the task's own default, which each help text names from the task classes. The
task reads these by name (`Task.from_settings`); the decision settings of a trained multi-label
model (`DecisionOptions`) are given to `evaluate`, `predict` and `finetune` alike."""

from __future__ import annotations

from dataclasses import dataclass

from bertkit.options import option
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.multilabel import LABEL_LOSSES, POS_WEIGHT_CLIP, THRESHOLD_MODES
from bertkit.tasks.ner import DECODES, HEADS, NerTask
from bertkit.tasks.qa import QATask

_STRIDES = f"classify {ClassifyTask.stride}, ner {NerTask.stride}, qa doc stride {QATask.doc_stride}"


@dataclass
class TaskOptions:
    regression: bool = option(False, help="classify: a numeric target (MSE loss)")
    multi_label: bool = option(
        False,
        help="classify: each text carries zero or more labels (a list column); sigmoid head, BCE loss, "
        "per-label thresholds",
    )
    threshold_mode: str | None = option(
        None,
        choices=THRESHOLD_MODES[:3],
        help="multi-label: tune on dev each label's F1-best threshold shrunk toward the global one by "
        "its dev support (shrunk, the default), each label's own (per-label), or one for all labels "
        "maximising macro F1 (global)",
    )
    pos_weight: str | None = option(
        None,
        help="multi-label: weight of each label's positives in the loss: auto (default: for bce, "
        f"negatives/positives in training, at most {POS_WEIGHT_CLIP:g}; none for the other losses), sqrt "
        "(its square root), none, or a file (label<TAB>weight)",
    )
    label_loss: str | None = option(
        None,
        choices=tuple(LABEL_LOSSES),
        help="multi-label: the loss per label: asymmetric (the default: gamma 0 on positives, 4 on "
        "negatives, negatives' probabilities less 0.05), binary cross-entropy (bce; transformers' loss) "
        "or focal (gamma 2)",
    )
    positive_label: str | None = option(
        None, help="classify: report F1 of this class and select by it (e.g. 1)"
    )
    windows: bool = option(
        False, help="classify: cover long texts with overlapping windows instead of truncating"
    )
    stride: int | None = option(None, help=f"tokens shared by consecutive windows ({_STRIDES})")
    head: str | None = option(None, choices=HEADS, help=f"ner: tag decoder (default {NerTask.head})")
    decode: str | None = option(
        None,
        choices=DECODES,
        help="ner, softmax head: each sentence's most probable valid IOB2 tags (Viterbi, constrained, the "
        "default) or each word's most probable tag on its own (transformers' argmax); saved with the model",
    )
    max_length: int | None = option(
        None,
        help=f"tokens per window (default {ClassifyTask.max_length}; qa {QATask.max_length})",
    )
    class_weighting: str | None = option(
        None,
        flag="--class-weights",
        metavar="none|auto|FILE",
        help="classify (not --regression) and ner (softmax head): weight each class's loss. none (the "
        "default); auto: n / (classes x count), inverse frequency in the training features (sklearn's "
        "'balanced'); FILE: label<TAB>weight lines or a JSON object {{label: weight}}. Saved with the run",
    )
    unknown_label: str | None = option(
        None, help="map dev/test labels unseen in training to this label instead of failing"
    )


@dataclass
class DecisionOptions:
    threshold: float | None = option(
        None, help="multi-label: one probability threshold for every label, instead of the tuned ones"
    )
    thresholds: str | None = option(
        None, help="multi-label: a threshold per label (a JSON object or label<TAB>threshold lines)"
    )
