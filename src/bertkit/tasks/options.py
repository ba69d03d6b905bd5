"""The task settings every task shares when training (`bertkit finetune`, `search`), each also a
flag, None (not given) meaning the task's own default, which the help names from the task classes;
each task adds its own group (`Task.flag_group`, listed by `registry.flag_groups`). The task reads
all of them by name (`Task.from_settings`). The decision settings of a trained multi-label model
(`DecisionOptions`) are given to `evaluate`, `predict` and `finetune` alike."""

from __future__ import annotations

from dataclasses import dataclass

from bertkit.options import option
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.ner import NerTask
from bertkit.tasks.qa import QATask

_STRIDES = f"classify {ClassifyTask.stride}, ner {NerTask.stride}, qa doc stride {QATask.doc_stride}"


@dataclass
class TaskOptions:
    stride: int | None = option(None, help=f"tokens shared by consecutive windows ({_STRIDES})")
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
