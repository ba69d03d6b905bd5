"""Ready-to-call pipelines on a fine-tuned directory, as `transformers.pipeline` users expect:

clf = bertkit.pipeline("text-classification", model="out/sst2")
clf(["a gripping film", "dull"])  # [{"label": "1", "score": 0.97, "scores": {...}}, ...]
ner = bertkit.pipeline("ner", model="out/conll")
ner("Angela Merkel visited Paris")  # [{"text": "Angela Merkel", "label": "PER", "start": 0, ...}]
qa = bertkit.pipeline("question-answering", model="out/squad")
qa(question="Who?", context="...")  # {"answer": ..., "start": ..., "end": ..., "score": ...}
emb = bertkit.pipeline("feature-extraction", model="path/to/all-MiniLM-L6-v2")
emb(["a sentence"])  # numpy (1, 384): see bertkit.engine.embeddings

All run on the inference engine (`bertkit.engine.runner`) on the runtime's device (`device="cuda"`,
default: a GPU when there is one) and precision (bf16 weights where the device multiplies bf16
natively); `precision="fp32"`, `int8=True`, `threads=N`, `max_tokens=N`, `streams=N` choose
otherwise (or `BERTKIT_DEVICE` / `BERTKIT_PRECISION` / `BERTKIT_THREADS`).

`evaluate_dir` and `predict_stream` are `bertkit evaluate` and `bertkit predict` on files.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from bertkit.data.examples import ReaderOptions
from bertkit.engine.backend import choose
from bertkit.engine.runner import InferenceOptions, prepare
from bertkit.errors import BertkitError
from bertkit.hub import resolve
from bertkit.models.config import check_tokenizer
from bertkit.runtime import Runtime, local_runtime
from bertkit.tasks import registry
from bertkit.tasks.engine import task_engine
from bertkit.tasks.inputs import read_inputs, reader_opts
from bertkit.tasks.ner import words_of
from bertkit.tokenization.tokenizer import Tokenizer

__all__ = ["FillMaskPipeline", "Pipeline", "evaluate_dir", "pipeline", "predict_stream", "words_of"]

TOP_K = 5  # fill-mask: fillers per [MASK] unless told (the CLI and the server too)


class Pipeline:
    """A fine-tuned directory's task on the inference engine (or ONNX Runtime, or OpenVINO)."""

    def __init__(
        self,
        model_dir: str | Path,
        runtime: Runtime | None = None,
        options: InferenceOptions | None = None,
        decision: dict | None = None,
    ):
        """`decision`: `threshold` / `thresholds` replacing a multi-label model's saved ones."""
        model_dir = resolve(model_dir)  # a folder, or a Hub name
        self.task = registry.from_dir(model_dir).override(decision or {})
        self.tokenizer = Tokenizer.from_pretrained(model_dir)
        self.runtime = rt = runtime or local_runtime()
        given = options or InferenceOptions.from_env()
        self.model, self.options = task_engine(self.task, model_dir, given, rt, self.tokenizer)

    def run(self, examples: list) -> list[dict]:
        if not examples:
            return []
        feats = self.task.features(self.tokenizer, examples, with_labels=False)
        pad = self.tokenizer.pad_token_id
        return self.task.predict(self.model, feats, examples, pad, max_tokens=self.options.max_tokens)

    def __call__(self, inputs=None, text_pair=None, *, question=None, context=None):
        items, single = self.task.call_items(inputs, text_pair, question, context)
        out = [self.task.present(p) for p in self.run(self.task.examples_of(items))]
        return out[0] if single else out


class FillMaskPipeline:
    """Top-k fillers for each [MASK] of a text, from a masked-LM model (a pretrained directory):
    `[{"token": str, "token_id": int, "score": float, "sequence": str}, ...]` for a text with one
    mask, a list of such lists (one per mask, left to right) for a text with several."""

    def __init__(
        self,
        model_dir: str | Path,
        runtime: Runtime | None = None,
        top_k: int = TOP_K,
        options: InferenceOptions | None = None,
    ):
        from bertkit.models.heads import BertForMaskedLM

        self.tokenizer = Tokenizer.from_pretrained(model_dir)
        model = BertForMaskedLM.from_pretrained(model_dir)
        check_tokenizer(model.config, self.tokenizer, model_dir)
        rt = runtime or local_runtime()
        given = options or InferenceOptions.from_env()
        self.model = prepare(model, given.on(choose(given, rt, ("torch",))), rt)
        self.top_k = top_k
        self.mask_id = self.tokenizer.mask_token_id  # [MASK], or the family's (<mask>)

    def __call__(self, inputs: str | list[str], top_k: int | None = None):
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        k = top_k or self.top_k
        out = []
        device = next(self.model.parameters()).device
        for text in texts:
            enc = self.tokenizer(text, truncation=True, return_tensors="pt")
            ids = enc["input_ids"].to(device)
            where = (ids[0] == self.mask_id).nonzero().flatten().tolist()
            if not where:
                raise BertkitError(f"no {self.tokenizer.mask_token} token in the text: {text[:80]!r}")
            with torch.inference_mode():
                logits = self.model(
                    ids, enc["attention_mask"].to(device), enc["token_type_ids"].to(device)
                ).logits
            fills = []
            for pos in where:
                probs = logits[0, pos].float().softmax(-1)
                scores, cand = probs.topk(min(k, probs.numel()))
                row = []
                for score, tid in zip(scores.tolist(), cand.tolist(), strict=True):
                    filled = ids[0].clone()
                    filled[pos] = tid
                    token = self.tokenizer.convert_ids_to_tokens(tid)
                    sequence = self.tokenizer.decode(filled.tolist())
                    row.append({"token": token, "token_id": tid, "score": score, "sequence": sequence})
                fills.append(row)
            out.append(fills[0] if len(fills) == 1 else fills)
        return out[0] if single else out


def pipeline(
    task: str,
    model: str | Path,
    device: str | torch.device | None = None,
    *,
    precision: str | None = None,
    int8: bool | None = None,
    threads: int | None = None,
    max_tokens: int | None = None,
    streams: int | None = None,
    backend: str | None = None,
    onnx_file: str | Path | None = None,
    calibration: str | Path | None = None,
    **kwargs: Any,
):
    """A pipeline for a model directory; `task` must match what the model was trained for
    ("fill-mask" takes a pretrained masked-LM directory, "feature-extraction" any BERT
    directory and takes `pooling`, `normalize`, `max_length`). `device` and `precision` set the
    runtime, the keyword arguments after them the inference engine (see
    `bertkit.engine.runner.InferenceOptions`); `backend="onnx"` runs a task model's file from
    `bertkit export` (`onnx_file`, default MODEL/model.onnx), `backend="openvino"` a task model
    or an encoder (feature-extraction) on OpenVINO, converted at load time (with `int8=True`
    calibrated on the texts of the file `calibration`)."""
    from bertkit.runtime import RuntimeArgs, compute_init

    model = resolve(model)  # a folder, or a Hub name
    dev = None if device is None else str(device)
    rt = compute_init(
        RuntimeArgs.from_env(device=dev, precision=precision, threads=threads), distributed=False
    )
    opts = InferenceOptions.from_env(
        int8=int8,
        max_tokens=max_tokens,
        streams=streams,
        backend=backend,
        onnx_file=None if onnx_file is None else str(onnx_file),
        calibration=None if calibration is None else str(calibration),
    )
    wanted = registry.for_pipeline(task)
    embedding = task in ("feature-extraction", "sentence-embedding")
    forced = opts.backend not in ("torch", "auto")
    if forced and wanted is None and not (embedding and opts.backend == "openvino"):
        runs = "classification, NER and QA models" + (" and embeddings" if opts.backend == "openvino" else "")
        raise BertkitError(f"backend {opts.backend!r} runs {runs}, not {task!r}")
    if embedding:
        from bertkit.engine.embeddings import EmbeddingPipeline

        return EmbeddingPipeline(model, rt, options=opts, **kwargs)
    decision = {k: kwargs.pop(k) for k in ("threshold", "thresholds") if k in kwargs and task != "fill-mask"}
    if kwargs:
        raise BertkitError(f"unexpected arguments for a {task!r} pipeline: {', '.join(kwargs)}")
    if task == "fill-mask":
        return FillMaskPipeline(model, rt, options=opts)
    if wanted is None:
        known = ", ".join([*registry.pipeline_names(), "fill-mask", "feature-extraction"])
        raise BertkitError(f"unknown pipeline task {task!r}; expected one of {known}")
    pipe = Pipeline(model, rt, opts, decision)
    if not isinstance(pipe.task, wanted):
        raise BertkitError(f"the model was fine-tuned for {pipe.task.name!r}, not {wanted.name!r}", model)
    return pipe


def evaluate_dir(
    model_dir: Path,
    data: Path,
    fmt: str | None,
    opts: ReaderOptions | None,
    output: Path,
    unknown_label: str | None = None,
    options: InferenceOptions | None = None,
    runtime: Runtime | None = None,
    decision: dict | None = None,
    output_scheme: str | None = None,
) -> dict:
    """Evaluate a fine-tuned directory on a labelled file; write the report to `output`, its
    tags (NER) in `output_scheme` (see `Task.with_output_scheme`)."""
    from bertkit.data.labels import check_labels
    from bertkit.evaluation.report import write_report
    from bertkit.fileio import staged_output

    pipe = Pipeline(model_dir, runtime, options, decision)
    task = pipe.task.with_output_scheme(output_scheme)
    examples = registry.load_examples(task.name, data, fmt, reader_opts(task, opts))
    labels = task.labels_to_check
    if labels:
        examples = check_labels(examples, {x: i for i, x in enumerate(labels)}, data, unknown_label)
    preds = pipe.run(examples)
    metrics = task.metrics(examples, preds)
    with staged_output(output, overwrite=True) as stage:
        write_report(stage, task, examples, preds, metrics)
    return metrics


def predict_stream(
    model_dir: str,
    source: str,
    dest: str,
    fmt: str | None,
    opts: ReaderOptions | None,
    chunk: int = 2048,
    options: InferenceOptions | None = None,
    runtime: Runtime | None = None,
    decision: dict | None = None,
    output_scheme: str | None = None,
) -> None:
    """JSON lines in (or plain text lines, or a file in the task's format), JSON lines out; NER
    tags in `output_scheme` (see `Task.with_output_scheme`)."""
    from bertkit.fileio import atomic_open

    pipe = Pipeline(model_dir, runtime, options, decision)
    task = pipe.task.with_output_scheme(output_scheme)
    if fmt:
        examples = registry.load_examples(task.name, source, fmt, reader_opts(task, opts))
    else:
        examples = read_inputs(task, source)
    with atomic_open(dest) if dest != "-" else contextlib.nullcontext(sys.stdout) as f:
        for s in range(0, len(examples), chunk):
            part = examples[s : s + chunk]
            for e, p in zip(part, pipe.run(part), strict=True):
                f.write(json.dumps(task.output_row(e, p), ensure_ascii=False) + "\n")
