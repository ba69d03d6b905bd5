"""Fine-tune a checkpoint on a task and write a complete, loadable output directory.

The run is staged in a hidden sibling directory and renamed into place only when everything
(model, tokenizer, metrics, report) is written, so an interrupted run never leaves an output
directory that looks complete.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.fileio import staged_output, write_json
from bertkit.tasks.batching import length_grouped_order, pad_batch
from bertkit.tokenizer import Tokenizer
from bertkit.train import Checkpointing, TrainArgs, TrainResult, fit, set_seed


def training_batches(task, feats: list[dict], batch_size: int, pad_id: int, seed: int, group: bool = True):
    """`batches(epoch, skip)`: the epoch's batches (its order a function of seed and epoch alone),
    less the first `skip`, which a resumed run has already trained on."""
    lengths = [len(f["input_ids"]) for f in feats]
    keys = [k for k in ("labels", "start_positions", "end_positions") if k in feats[0]]

    def batches(epoch: int, skip: int = 0):
        for idx in length_grouped_order(lengths, batch_size, seed + epoch, group)[skip:]:
            yield pad_batch([feats[i] for i in idx], pad_id, keys)

    return batches, -(-len(feats) // batch_size)


@dataclass
class Resumable:
    """Checkpoints of a fine-tuning run in `root` (OUTPUT-checkpoints): `root/step-N` every
    `every` optimizer steps and on SIGTERM/SIGINT; `resume` continues from the newest."""

    root: Path
    every: int | None = None
    resume: bool = False
    keep: int = 1

    @classmethod
    def beside(cls, output: Path, every: int | None, resume: bool) -> Resumable | None:
        if every is None and not resume:
            return None
        return cls(output.parent / f"{output.name}-checkpoints", every, resume)


# settings a resumed run must share with the run it resumes (patience may change)
SAME_RUN = ("epochs", "max_steps", "batch_size", "grad_accum", "lr", "weight_decay", "warmup",
            "max_grad_norm", "bf16", "eval_every", "seed", "group_by_length")  # fmt: skip


def _resume_from(ck: Resumable, args: TrainArgs, n_train: int) -> tuple[Path | None, dict | None]:
    """The newest complete checkpoint and its trainer state, checked against this run."""
    from bertkit.resume import checkpoints, read_trainer_state, remove_partial

    remove_partial(ck.root)  # what a killed run left of a checkpoint it was writing
    found = checkpoints(ck.root)
    if found and not ck.resume:
        raise BertkitError(
            "checkpoints of an earlier run: pass --resume to continue it, or remove them", ck.root
        )
    if not found:
        if ck.resume:
            print(f"no checkpoint in {ck.root}: starting from the beginning")
        return None, None
    state = read_trainer_state(found[-1])
    run = state.get("run", {})
    for k in SAME_RUN:
        if k in run.get("args", {}) and run["args"][k] != getattr(args, k):
            raise BertkitError(
                f"--resume with {k.replace('_', '-')} {getattr(args, k)!r}, "
                f"but the run used {run['args'][k]!r}",
                found[-1],
            )
    if run.get("train_features") not in (None, n_train):
        raise BertkitError(
            f"--resume with {n_train} training features, but the run had {run['train_features']}: "
            "the training file or the task settings changed",
            found[-1],
        )
    print(f"resuming from {found[-1]} (step {state['step']})")
    return found[-1], state


@dataclass
class Trained:
    model: torch.nn.Module
    tokenizer: Tokenizer
    config: BertConfig
    result: TrainResult
    dev_feats: list[dict]


def train_model(
    task,
    model_dir: Path,
    train_examples: list,
    dev_examples: list,
    args: TrainArgs,
    log_dir: Path | None = None,
    resumable: Resumable | None = None,
) -> Trained:
    """Build `task`'s model from `model_dir` and train it, keeping the best weights on the dev set.
    With `resumable`, checkpoints are written as it trains and a resumed run continues exactly."""
    set_seed(args.seed)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    config = BertConfig.from_pretrained(model_dir)
    task.configure(config)
    train_feats = task.features(tokenizer, train_examples)
    # a QA window without an answer position (unanswerable example) cannot be trained on
    train_feats = [f for f in train_feats if "labels" in f or "start_positions" in f]
    if not train_feats:
        raise BertkitError("no training examples with labels")
    last, state = _resume_from(resumable, args, len(train_feats)) if resumable else (None, None)
    model = task.model_class.from_pretrained(last or model_dir, config=config, ignore_mismatched_sizes=True)
    task.prepare(train_feats, args.batch_size)
    dev_feats = task.features(tokenizer, dev_examples)
    pad = tokenizer.pad_token_id
    epoch_batches, steps = training_batches(
        task, train_feats, args.batch_size, pad, args.seed, args.group_by_length
    )
    first = state

    def batches(epoch: int):
        nonlocal first
        skip = 0
        if first is not None and epoch == first["epoch"]:  # batches the checkpointed run trained on
            skip, first = first["epoch_step"] * args.grad_accum, None
        return epoch_batches(epoch, skip)

    def evaluate(m) -> dict:
        return task.metrics(dev_examples, task.predict(m, dev_feats, dev_examples, pad))

    checkpointing = None
    if resumable is not None:
        from bertkit.resume import write_checkpoint

        run = {"args": {k: getattr(args, k) for k in SAME_RUN}, "train_features": len(train_feats)}
        every = resumable.every or (state or {}).get("every")

        def save(trainer_state: dict) -> None:
            trainer_state = {**trainer_state, "run": run, "every": every}
            write_checkpoint(resumable.root, trainer_state, model.save_pretrained, resumable.keep)

        checkpointing = Checkpointing(save=save, every=every, resume=state)
        if state is not None and log_dir is not None:  # the record so far, in the new run's log
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / "log.jsonl", "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in map(json.dumps, json.loads(state["loop"]["history"])))
    result = fit(
        model, batches, steps, task.loss, evaluate, task.main_metric, args, log_dir=log_dir,
        checkpointing=checkpointing,
    )  # fmt: skip
    if result.stopped_by in ("SIGTERM", "SIGINT"):
        print(f"stopped by {result.stopped_by} at step {result.steps}; continue with --resume")
        raise KeyboardInterrupt
    return Trained(model, tokenizer, config, result, dev_feats)


def finetune(
    task,
    model_dir: Path,
    train_examples: list,
    dev_examples: list,
    test_examples: list | None,
    output: Path,
    args: TrainArgs,
    overwrite: bool = False,
    task_info: dict[str, Any] | None = None,
    write_report=None,
    resumable: Resumable | None = None,
) -> dict[str, Any]:
    """Train `task`'s model from `model_dir`; returns the metrics written to metrics.json.
    The checkpoints of a `resumable` run are removed once the output is in place."""
    with staged_output(output, overwrite) as stage:
        t = train_model(
            task, model_dir, train_examples, dev_examples, args, log_dir=stage, resumable=resumable
        )
        pad = t.tokenizer.pad_token_id
        metrics: dict[str, Any] = {}
        reports = {}
        for split, examples, feats in (("dev", dev_examples, t.dev_feats), ("test", test_examples, None)):
            if not examples:
                continue
            feats = feats if feats is not None else task.features(t.tokenizer, examples)
            with torch.inference_mode():
                preds = task.predict(t.model, feats, examples, pad)
            metrics[split] = task.metrics(examples, preds)
            reports[split] = (examples, preds)
        metrics["train"] = {
            "seconds": round(t.result.seconds, 1),
            "eval_seconds": round(t.result.eval_seconds, 1),
            "steps": t.result.steps,
            "best_step": t.result.best_step,
            "examples": len(train_examples),
        }
        t.config.extra["bertkit"] = {**(task_info or {}), **task.info()}
        t.model.save_pretrained(stage)
        t.tokenizer.save_pretrained(stage)
        write_json(stage / "metrics.json", metrics)
        write_json(stage / "train_args.json", asdict(args))
        if write_report is not None:
            for split, (examples, preds) in reports.items():
                history = t.result.history
                write_report(stage / "report" / split, task, examples, preds, metrics[split], history)
    if resumable is not None and resumable.root.is_dir():
        import shutil

        shutil.rmtree(resumable.root, ignore_errors=True)
    return metrics


def load_task_info(model_dir: Path) -> dict[str, Any]:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    info = config.get("bertkit")
    if not isinstance(info, dict) or "task" not in info:
        raise BertkitError(
            "config.json has no 'bertkit' task section: not a bertkit fine-tuned model", model_dir
        )
    return info


def build_task(name: str, args, opts: dict):
    """The task object and its train/dev/test examples, from CLI-style arguments."""
    from bertkit.data import check_labels, label_vocab, load_examples
    from bertkit.tasks.classify import ClassifyTask
    from bertkit.tasks.ner import NerTask
    from bertkit.tasks.qa import QATask

    read = lambda path: load_examples(name, path, args.format, **opts) if path else None  # noqa: E731
    train, dev, test = read(args.train), read(args.dev), read(args.test)
    if not train:
        raise BertkitError("no training examples", args.train)
    max_len = args.max_length
    if name == "qa":
        task = QATask(max_length=max_len or 384, doc_stride=args.stride or 128)
        return task, train, dev, test
    labels = None if opts.get("regression") else label_vocab(train)
    if name == "ner":
        task = NerTask(
            labels,
            head=args.head,
            max_length=max_len or 128,
            stride=args.stride or 32,
            decode=args.decode,
        )
    else:
        if labels is not None and any(e.label is None for e in train):
            raise BertkitError("the training file has no labels (pass --label-column)", args.train)
        if args.positive_label is not None and labels is not None and args.positive_label not in labels:
            raise BertkitError(
                f"--positive-label {args.positive_label!r} is not a training label ({', '.join(labels)})"
            )
        task = ClassifyTask(
            labels,
            max_length=max_len or 128,
            windows=args.windows,
            stride=args.stride or 64,
            positive_label=args.positive_label,
        )
    if labels is not None:
        label2id = {x: i for i, x in enumerate(labels)}
        if dev:
            dev = check_labels(dev, label2id, args.dev, args.unknown_label)
        if test:
            test = check_labels(test, label2id, args.test, args.unknown_label)
    return task, train, dev, test


def evaluate_dir(
    model_dir: Path,
    data: Path,
    fmt: str | None,
    opts: dict,
    output: Path,
    unknown_label: str | None = None,
    options=None,
) -> dict:
    """Evaluate a fine-tuned directory on a labelled file; write the report to `output`."""
    from bertkit.data import check_labels, load_examples
    from bertkit.pipelines import Pipeline
    from bertkit.report import write_report

    pipe = Pipeline(model_dir, options=options)
    task = pipe.task
    if task.name == "classify":
        opts = {**opts, "regression": task.regression}
    examples = load_examples(task.name, data, fmt, **opts)
    labels = getattr(task, "labels", None)
    if labels:
        examples = check_labels(examples, {x: i for i, x in enumerate(labels)}, data, unknown_label)
    preds = pipe.run(examples)
    metrics = task.metrics(examples, preds)
    with staged_output(output, overwrite=True) as stage:
        write_report(stage, task, examples, preds, metrics)
    return metrics


def predict_stream(
    model_dir: str, source: str, dest: str, fmt: str | None, opts: dict, chunk: int = 2048, options=None
) -> None:
    """JSON lines in (or plain text lines, or a file in the task's format), JSON lines out."""
    import sys

    from bertkit.data import load_examples
    from bertkit.data.readers import QAExample, TextExample
    from bertkit.fileio import atomic_open
    from bertkit.pipelines import Pipeline, words_of

    pipe = Pipeline(model_dir, options=options)
    task = pipe.task
    if fmt is not None:
        examples = load_examples(task.name, source, fmt, **opts)
    else:
        try:
            raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BertkitError(f"cannot read input ({e})", source) from None
        examples = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            obj = None
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BertkitError(f"line {n}: invalid JSON ({e.msg})", source) from None
            if task.name == "qa":
                if (
                    not isinstance(obj, dict)
                    or not isinstance(obj.get("question"), str)
                    or not isinstance(obj.get("context"), str)
                ):
                    raise BertkitError(
                        f"line {n}: expected a JSON object with 'question' and 'context'", source
                    )
                examples.append(QAExample(str(obj.get("id", n)), obj["question"], obj["context"], [], None))
                continue
            text = obj.get("text") if isinstance(obj, dict) else line
            if not isinstance(text, str):
                raise BertkitError(f"line {n}: expected a 'text' string field", source)
            if task.name == "ner":
                examples.append(words_of(text))
            else:
                pair = obj.get("text_pair") if isinstance(obj, dict) else None
                examples.append(TextExample(text, pair, None, n))
    with atomic_open(dest) if dest != "-" else contextlib.nullcontext(sys.stdout) as f:
        for s in range(0, len(examples), chunk):
            part = examples[s : s + chunk]
            for e, p in zip(part, pipe.run(part), strict=True):
                row = {"text": e.text, **p} if task.name != "qa" else {"id": e.id, **p}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
