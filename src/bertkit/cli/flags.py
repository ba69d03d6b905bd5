"""Flag groups shared by the commands, each defined once, and what they build: the runtime, the
inference engine's options, the reader options, the training settings."""

from __future__ import annotations

import argparse
from typing import Any

from bertkit.cli.options import add_options, build, given
from bertkit.data.schemes import ALIASES, CHOICES, NAMES
from bertkit.engine.runner import BACKEND_HELP, MAX_TOKENS, InferenceOptions
from bertkit.runtime import Runtime, RuntimeArgs, compute_init
from bertkit.tasks import registry
from bertkit.tasks.multilabel import LABEL_LOSSES, POS_WEIGHT_CLIP, THRESHOLD_MODES
from bertkit.tasks.registry import FORMATS
from bertkit.training.loop import TrainArgs


def add_runtime(p: argparse.ArgumentParser) -> None:
    add_options(p.add_argument_group("runtime"), RuntimeArgs(), ("device", "precision", "threads"))


def runtime(args: argparse.Namespace, distributed: bool = False) -> Runtime:
    """The command's runtime; `distributed`: join torchrun's process group (training commands)."""
    return compute_init(RuntimeArgs.from_env(**given(args, RuntimeArgs)), distributed)


BACKENDS = tuple(b for b in BACKEND_HELP if b != "auto")  # the ones --backend can force


def add_engine(p: argparse.ArgumentParser, backends: tuple[str, ...] = ()) -> None:
    """The inference engine's flags; `backends`: the --backend choices the command offers."""
    names = ["backend", "onnx_file", "int8", "calibration", "max_tokens", "streams"]
    names = [n for n in names if backends or n != "backend"]
    names = [n for n in names if "onnx" in backends or n != "onnx_file"]
    names = [n for n in names if "openvino" in backends or n != "calibration"]
    offered = ("auto", *backends)
    budgets = ", ".join(f"{v} on {k}" for k, v in MAX_TOKENS.items() if k in (backends or ("torch",)))
    notes = {"backend": {"backends": "; ".join(BACKEND_HELP[b] for b in offered)}}
    notes["max_tokens"] = {"budgets": budgets}  # per backend, not the Python API's 0 ("the backend's")
    group = p.add_argument_group("inference engine")
    add_options(group, InferenceOptions(), names, notes, {"backend": offered})


def engine(args: argparse.Namespace) -> InferenceOptions:
    return InferenceOptions.from_env(**given(args, InferenceOptions))


def add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data format")
    g.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="file format (default: from the task and the file extension)",
    )
    g.add_argument("--text-column", help="text column: header name or 0-based index")
    g.add_argument("--pair-column", help="second text column for sentence pairs")
    g.add_argument("--label-column", help="label column: header name or 0-based index")
    g.add_argument("--token-column", type=int, default=None, help="CoNLL: token column index (default 0)")
    g.add_argument(
        "--tag-column", type=int, default=None, help="CoNLL: tag column index (default -1, the last)"
    )
    aliases = ", ".join(f"{a}={s}" for a, s in ALIASES.items())
    g.add_argument(
        "--tag-scheme",
        "--scheme",
        dest="scheme",
        choices=CHOICES,
        default=None,
        metavar="SCHEME",
        help=f"CoNLL tag scheme of the file: auto (default: detected from the tags), or one of "
        f"{', '.join(NAMES)} ({aliases}), checked strictly; tags are read as IOB2",
    )
    g.add_argument(
        "--labels",
        dest="labels_file",
        default=None,
        help="multi-label: a label file, one name a line, in id order (label ids in the data index it, "
        "as GoEmotions' emotions.txt)",
    )
    g.add_argument(
        "--label-separator",
        default=None,
        help="multi-label TSV/CSV: what joins the labels of one text (default ','; a JSON list also reads)",
    )
    g.add_argument(
        "--strip-digit-suffix",
        action="store_true",
        help="CoNLL: strip a trailing digit from each token (Weibo NER's word-position marks)",
    )


def data_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "text_column": args.text_column,
        "pair_column": args.pair_column,
        "label_column": args.label_column,
        "token_column": args.token_column,
        "tag_column": args.tag_column,
        "scheme": args.scheme,
        "strip_digit_suffix": args.strip_digit_suffix or None,
        "regression": getattr(args, "regression", None),
        "multi_label": getattr(args, "multi_label", None),
        "labels_file": args.labels_file,
        "label_separator": args.label_separator,
    }


def add_output(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "--output-scheme",
        choices=CHOICES,
        default=None,
        metavar="SCHEME",
        help=f"ner: the tag scheme of the tags written ({', '.join(NAMES)}; default iob2), or auto: "
        "the scheme of the model's training file, saved with the model",
    )


def add_checkpoints(p: argparse.ArgumentParser) -> None:
    ck = p.add_argument_group("checkpoints")
    ck.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="write a checkpoint every N optimizer steps (and on SIGTERM/Ctrl-C) to OUTPUT-checkpoints/, "
        "removed once the run completes",
    )
    ck.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in OUTPUT-checkpoints/ (same settings; checked)",
    )


def add_decision(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-label decision")
    g.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="multi-label: one probability threshold for every label, instead of the tuned ones",
    )
    g.add_argument(
        "--thresholds",
        default=None,
        help="multi-label: a threshold per label (a JSON object or label<TAB>threshold lines)",
    )


def decision_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"threshold": args.threshold, "thresholds": args.thresholds}


def add_task(p: argparse.ArgumentParser) -> None:
    from bertkit.tasks.classify import ClassifyTask
    from bertkit.tasks.ner import DECODES, HEADS, NerTask
    from bertkit.tasks.qa import QATask
    from bertkit.tasks.registry import names

    p.add_argument("--task", choices=names(), required=True, help="what to train")
    t = p.add_argument_group("task")
    t.add_argument("--regression", action="store_true", help="classify: a numeric target (MSE loss)")
    t.add_argument(
        "--multi-label",
        action="store_true",
        help="classify: each text carries zero or more labels (a list column); sigmoid head, BCE loss, "
        "per-label thresholds",
    )
    t.add_argument(
        "--threshold-mode",
        choices=THRESHOLD_MODES[:3],
        default=None,
        help="multi-label: tune on dev each label's F1-best threshold shrunk toward the global one by "
        "its dev support (shrunk, the default), each label's own (per-label), or one for all labels "
        "maximising macro F1 (global)",
    )
    t.add_argument(
        "--pos-weight",
        default=None,
        help="multi-label: weight of each label's positives in the loss: auto (default: for bce, "
        f"negatives/positives in training, at most {POS_WEIGHT_CLIP:g}; none for the other losses), sqrt "
        "(its square root), none, or a file (label<TAB>weight)",
    )
    t.add_argument(
        "--label-loss",
        choices=list(LABEL_LOSSES),
        default=None,
        help="multi-label: the loss per label: asymmetric (the default: gamma 0 on positives, 4 on "
        "negatives, negatives' probabilities less 0.05), binary cross-entropy (bce; transformers' loss) "
        "or focal (gamma 2)",
    )
    t.add_argument("--positive-label", help="classify: report F1 of this class and select by it (e.g. 1)")
    t.add_argument(
        "--windows",
        action="store_true",
        help="classify: cover long texts with overlapping windows instead of truncating",
    )
    t.add_argument(
        "--stride",
        type=int,
        default=None,
        help=f"tokens shared by consecutive windows (classify {ClassifyTask.stride}, ner {NerTask.stride}, "
        f"qa doc stride {QATask.doc_stride})",
    )
    t.add_argument("--head", choices=HEADS, default=None, help=f"ner: tag decoder (default {NerTask.head})")
    t.add_argument(
        "--decode",
        choices=DECODES,
        default=None,
        help="ner, softmax head: each sentence's most probable valid IOB2 tags (Viterbi, constrained, the "
        "default) or each word's most probable tag on its own (transformers' argmax); saved with the model",
    )
    t.add_argument(
        "--max-length",
        type=int,
        default=None,
        help=f"tokens per window (default {ClassifyTask.max_length}; qa {QATask.max_length})",
    )
    t.add_argument(
        "--class-weights",
        dest="class_weighting",
        metavar="none|auto|FILE",
        default=None,
        help="classify (not --regression) and ner (softmax head): weight each class's loss. none (the "
        "default); auto: n / (classes x count), inverse frequency in the training features (sklearn's "
        "'balanced'); FILE: label<TAB>weight lines or a JSON object {label: weight}. Saved with the run",
    )
    t.add_argument(
        "--unknown-label",
        default=None,
        help="map dev/test labels unseen in training to this label instead of failing",
    )


TRAINING = ("epochs", "max_steps", "batch_size", "grad_accum", "lr", "weight_decay", "warmup", "eval_every",
            "log_every", "seed", "nonfinite", "progress")  # fmt: skip
FINE_TUNING = ("patience", "head_lr_mult", "min_steps", "group_by_length")


def add_training(p: argparse.ArgumentParser, d: TrainArgs, fine_tuning: bool = True) -> None:
    """The training flags, their defaults from `d` (fine-tuning's or pretraining's TrainArgs)."""
    notes = {}
    for name in ("head_lr_mult", "min_steps"):  # the tasks' own defaults, named in the help
        notes[name] = {"overrides": "".join(f"; {task} {v:g}" for task, v in registry.train_defaults(name))}
    names = TRAINING + FINE_TUNING if fine_tuning else TRAINING
    add_options(p.add_argument_group("training"), d, names, notes)


def train_args(args: argparse.Namespace, d: TrainArgs, **overrides: Any) -> TrainArgs:
    """The TrainArgs the training flags give, on top of the defaults `d`."""
    return build(args, d, **overrides)
