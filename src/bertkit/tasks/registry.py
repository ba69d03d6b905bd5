"""The table of tasks: every other module asks it instead of comparing task names.

task_class("ner")                  -> NerTask
load_examples("ner", "train.txt")  -> the reader the task and the extension call for
build("classify", settings, opts)  -> (task, train, dev, test) from a command's settings
from_dir("out/conll")              -> the task a fine-tuned directory was trained for
for_pipeline("sentiment-analysis") -> ClassifyTask
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from bertkit.data.examples import ReaderOptions
from bertkit.errors import BertkitError
from bertkit.hub import resolve
from bertkit.models.config import BertConfig
from bertkit.tasks.base import Task
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.multilabel import MultiLabelTask
from bertkit.tasks.ner import NerTask
from bertkit.tasks.qa import QATask

log = logging.getLogger("bertkit.tasks")

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (ClassifyTask, NerTask, QATask)}
# A variant answers to its task's name and is chosen by one setting (a flag, or the saved info).
VARIANTS: tuple[type[MultiLabelTask], ...] = (MultiLabelTask,)
FORMATS = ("tsv", "csv", "jsonl", "conll", "spans", "squad", "folders")


def names() -> list[str]:
    return list(TASKS)


def train_defaults(setting: str) -> list[tuple[str, Any]]:
    """The tasks and variants whose training default of `setting` is their own: (what the flags
    call them, the value), e.g. [("multi-label", 10.0)] for head_lr_mult."""
    found = []
    for cls in (*TASKS.values(), *VARIANTS):
        if setting in cls.train_overrides:
            label = getattr(cls, "variant_flag", None) or cls.name
            found.append((label.replace("_", "-"), cls.train_overrides[setting]))
    return found


def flag_groups() -> list[tuple[str, type]]:
    """The tasks' and variants' own flag groups: (title, the dataclass of its flags)."""
    found = []
    for cls in (*TASKS.values(), *VARIANTS):
        if cls.flag_group is not None:
            label = getattr(cls, "variant_flag", None) or cls.name
            found.append((label.replace("_", "-"), cls.flag_group))
    return found


def distillable() -> list[str]:
    """The tasks `bertkit distill` takes: those that give their outputs apart from their loss."""
    return [name for name, cls in TASKS.items() if cls.outputs is not Task.outputs]


def task_class(name: str, settings: dict | None = None) -> type[Task]:
    """The task `name` names, or its variant when `settings` (options or saved info) set its flag."""
    if name not in TASKS:
        raise BertkitError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    chosen = [v for v in VARIANTS if v.name == name and (settings or {}).get(v.variant_flag)]
    return chosen[0] if chosen else TASKS[name]


def load_examples(
    name: str, path: str | Path, fmt: str | None = None, opts: ReaderOptions | None = None, **given: Any
) -> list:
    """Read `path` for task `name`. Without `fmt` the format follows the task and the extension
    (NER: CoNLL columns, .json/.jsonl character-offset spans; QA: SQuAD JSON; classification:
    TSV/CSV/JSONL or a folder per label). `opts` are the reader's options, `given` more of them
    by name (`text_column="sentence"`); an unknown name is a TypeError."""
    opts = dataclasses.replace(opts or ReaderOptions(), **given)
    cls = task_class(name, {"multi_label": opts.multi_label})
    if fmt is not None and fmt not in FORMATS:
        raise BertkitError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt is not None and fmt not in cls.formats:
        raise BertkitError(
            f"format {fmt!r} does not hold {name} examples; use {' or '.join(cls.formats)}", path
        )
    return cls.read(path, fmt, opts)


def build(
    name: str, settings: dict[str, Any], opts: ReaderOptions
) -> tuple[Task, list, list | None, list | None]:
    """The task and its train/dev/test examples from a command's settings by name (`train`, `dev`,
    `test`, `format`, the task settings of `tasks.options.TaskOptions`); dev/test labels are
    checked against the training labels (`unknown_label` maps unseen ones). `opts`: the reader's."""
    from bertkit.data.labels import check_labels

    def read(path: str | None) -> list | None:
        return load_examples(name, path, settings.get("format"), opts) if path else None

    train, dev, test = read(settings["train"]), read(settings.get("dev")), read(settings.get("test"))
    if not train:
        raise BertkitError("no training examples", settings["train"])
    task = task_class(name, settings).from_settings(settings, train, settings["train"])
    labels = task.labels_to_check
    if labels is not None:
        label2id = {x: i for i, x in enumerate(labels)}
        unknown = settings.get("unknown_label")
        dev = check_labels(dev, label2id, settings["dev"], unknown) if dev else dev
        test = check_labels(test, label2id, settings["test"], unknown) if test else test
    return task, train, dev, test


def _bertkit_section(model_dir: str | Path) -> dict | None:
    """config.json's `bertkit` section (what bertkit fine-tuned a directory for), if any."""
    path = resolve(model_dir) / "config.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8")).get("bertkit")
    except (OSError, ValueError, AttributeError):
        return None
    return info if isinstance(info, dict) and "task" in info else None


def transformers_info(model_dir: str | Path) -> tuple[dict, str] | None:
    """(info, one line) for a directory saved by transformers' `…ForSequenceClassification`,
    `…ForTokenClassification` or `…ForQuestionAnswering` of a supported family; None otherwise."""
    try:
        config = BertConfig.from_pretrained(model_dir)
    except BertkitError:
        return None
    name = (config.architectures or [""])[0]
    head = name.removeprefix(config.family.class_prefix)
    for cls in TASKS.values():
        if cls.transformers_head is not None and head == cls.transformers_head:
            info, note = cls.from_transformers(config)
            return info, f"{model_dir}: fine-tuned by transformers ({name}): {cls.name}, {note}"
    return None


def task_info(model_dir: str | Path) -> dict | None:
    """What a fine-tuned directory was trained for: its `bertkit` section, or what a directory
    transformers fine-tuned says (`transformers_info`); None for neither."""
    info = _bertkit_section(model_dir)
    if info is None and (found := transformers_info(model_dir)) is not None:
        info = found[0]
    return info


def is_task_dir(model_dir: str | Path) -> bool:
    info = task_info(model_dir)
    return info is not None and info["task"] in TASKS


def from_dir(model_dir: str | Path) -> Task:
    """The task a fine-tuned directory was trained for, rebuilt from its config.json: bertkit's
    own section, or a transformers head with its labels (said in one line, logger bertkit.tasks)."""
    model_dir = resolve(model_dir)
    info = _bertkit_section(model_dir)
    if info is None and (found := transformers_info(model_dir)) is not None:
        info, note = found
        log.info("%s", note)
    if info is None:
        raise BertkitError(
            "config.json has no 'bertkit' task section and names no sequence-classification, "
            "token-classification or question-answering head: not a fine-tuned model",
            model_dir,
        )
    if info["task"] not in TASKS:
        raise BertkitError(f"config.json names an unknown task {info['task']!r}", model_dir)
    return task_class(info["task"], info).from_info(info, BertConfig.from_pretrained(model_dir))


def pipeline_names() -> list[str]:
    return [alias for cls in TASKS.values() for alias in cls.pipeline_names]


def for_pipeline(alias: str) -> type[Task] | None:
    """The task a `bertkit.pipeline` name stands for (None: not a fine-tuned task's name)."""
    return next((cls for cls in TASKS.values() if alias in cls.pipeline_names), None)
