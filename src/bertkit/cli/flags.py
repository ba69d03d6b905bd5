"""Flag groups shared by the commands, each defined once, and what they build: the runtime, the
inference engine's options, the reader options, the training settings."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from bertkit.cli.options import add_options, build, given
from bertkit.data.examples import ReaderOptions
from bertkit.data.schemes import CHOICES, NAMES
from bertkit.engine.runner import BACKEND_HELP, MAX_TOKENS, InferenceOptions
from bertkit.options import options_of
from bertkit.runtime import Runtime, RuntimeArgs, compute_init
from bertkit.tasks import registry
from bertkit.tasks.options import DecisionOptions, TaskOptions
from bertkit.tasks.registry import FORMATS
from bertkit.training.loop import TrainArgs
from bertkit.training.run import CheckpointOptions


def add_runtime(p: argparse.ArgumentParser) -> None:
    add_options(p.add_argument_group("runtime"), RuntimeArgs(), options_of(RuntimeArgs))


def runtime(args: argparse.Namespace, distributed: bool = False) -> Runtime:
    """The command's runtime; `distributed`: join torchrun's process group (training commands)."""
    return compute_init(RuntimeArgs.from_env(**given(args, RuntimeArgs)), distributed)


BACKENDS = tuple(b for b in BACKEND_HELP if b != "auto")  # the ones --backend can force
ENGINE = ("backend", "onnx_file", "int8", "calibration", "max_tokens", "streams")  # in --help's order


def add_engine(p: argparse.ArgumentParser, backends: tuple[str, ...] = ()) -> None:
    """The inference engine's flags; `backends`: the --backend choices the command offers."""
    offers = {
        "backend": bool(backends),
        "onnx_file": "onnx" in backends,
        "calibration": "openvino" in backends,
    }
    names = [n for n in ENGINE if offers.get(n, True)]
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
    add_options(g, ReaderOptions(), options_of(ReaderOptions))


def data_opts(args: argparse.Namespace) -> ReaderOptions:
    """The reader options the flags give (None: not given), with the task flags that change how
    labels read (regression, multi-label)."""
    task = {k: getattr(args, k, None) for k in ("regression", "multi_label")}
    return build(args, ReaderOptions(), **task)


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


def add_model(p: argparse.ArgumentParser, what: str, flag: str = "--model") -> None:
    """The model a command reads: a folder, or a Hub name resolved through the Hugging Face cache."""
    kw: dict = {"required": True} if flag.startswith("--") else {}
    p.add_argument(flag, **kw, help=f"{what}: a folder, or a Hub name (org/name[@revision])")


def add_run_output(p: argparse.ArgumentParser) -> None:
    """A training run's --output directory, written whole at the end, and --overwrite."""
    p.add_argument(
        "--output", required=True, help="output directory (must be new or empty unless --overwrite)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory at the end")


def add_checkpoints(p: argparse.ArgumentParser) -> None:
    add_options(p.add_argument_group("checkpoints"), CheckpointOptions(), options_of(CheckpointOptions))


def add_decision(p: argparse.ArgumentParser) -> None:
    add_options(p.add_argument_group("multi-label decision"), DecisionOptions(), options_of(DecisionOptions))


def decision_opts(args: argparse.Namespace) -> dict[str, Any]:
    return asdict(build(args, DecisionOptions()))


def add_task(p: argparse.ArgumentParser) -> None:
    """--task, the settings every task shares (`tasks.options.TaskOptions`) and each task's own
    group, as the registry lists them."""
    p.add_argument("--task", choices=registry.names(), required=True, help="what to train")
    add_options(p.add_argument_group("task"), TaskOptions(), options_of(TaskOptions))
    for title, group in registry.flag_groups():
        add_options(p.add_argument_group(title), group(), options_of(group))


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
